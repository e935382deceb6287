//! Golden-file reader and float comparer shared by the integration tests.
//!
//! The files are written by `tests/golden/gen_golden.py` (PyTorch); the
//! format is documented in `tests/golden/README.md`:
//!
//! ```text
//! b"LNGOLDEN"  u32 version  u32 record_count
//! record_count x { u16 name_len, name, u16 source_len, source,
//!                  u8 ndim, ndim x u32 dims, prod(dims) x f32 }
//! ```
//!
//! All integers and floats are little-endian. Each record carries the
//! PyTorch call that produced it (`source`), which failure messages quote.
#![allow(dead_code)] // each test crate uses a different subset

use std::fmt;
use std::path::PathBuf;

/// File magic: the first eight bytes of every golden file.
pub const GOLDEN_MAGIC: &[u8; 8] = b"LNGOLDEN";
/// Format version this reader understands; `gen_golden.py` writes `VERSION`.
pub const GOLDEN_VERSION: u32 = 1;
/// Command that rewrites the golden files.
pub const REGENERATE: &str = "/usr/bin/python3 tests/golden/gen_golden.py";

/// One named tensor from a golden file.
#[derive(Clone, Debug)]
pub struct Record {
    /// Slash-separated name, e.g. `conv2d/k1/dw`.
    pub name: String,
    /// The PyTorch call that produced the values.
    pub source: String,
    /// PyTorch shape, row-major.
    pub dims: Vec<usize>,
    /// `prod(dims)` values.
    pub data: Vec<f32>,
}

impl Record {
    /// Values, after checking that the shape is `dims`.
    ///
    /// # Panics
    /// On a shape mismatch.
    pub fn shaped(&self, dims: &[usize]) -> &[f32] {
        assert_eq!(
            self.dims, dims,
            "golden record {} has shape {:?}, the test expects {:?}",
            self.name, self.dims, dims
        );
        &self.data
    }

    /// The `i`-th slice along the first axis (a batch element).
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.dims[0];
        assert!(i < n, "{}: index {i} out of {n}", self.name);
        let stride = self.data.len() / n;
        &self.data[i * stride..(i + 1) * stride]
    }

    /// The single value of a one-element record.
    pub fn scalar(&self) -> f32 {
        assert_eq!(self.data.len(), 1, "{} is not a scalar", self.name);
        self.data[0]
    }
}

/// Why a golden file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum GoldenError {
    /// The file does not start with `LNGOLDEN`.
    BadMagic,
    /// The file was written by another version of `gen_golden.py`.
    Version {
        /// Version in the file.
        found: u32,
        /// Version this reader understands.
        expected: u32,
    },
    /// The file ends inside a header or record.
    Truncated {
        /// Byte offset where more data was needed.
        at: usize,
    },
    /// Bytes follow the last record.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A name or source string is not UTF-8.
    BadUtf8 {
        /// Byte offset of the string.
        at: usize,
    },
    /// Two records share a name.
    Duplicate(String),
}

impl fmt::Display for GoldenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => write!(f, "not a golden file (magic is not LNGOLDEN)"),
            Self::Version { found, expected } => write!(
                f,
                "golden file version {found}, the tests expect version {expected}: \
                 rerun `{REGENERATE}` from the repository root"
            ),
            Self::Truncated { at } => write!(f, "golden file truncated at byte {at}"),
            Self::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the last record")
            }
            Self::BadUtf8 { at } => write!(f, "string at byte {at} is not UTF-8"),
            Self::Duplicate(name) => write!(f, "record {name} appears twice"),
        }
    }
}

impl std::error::Error for GoldenError {}

/// Little-endian cursor over the file bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GoldenError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(GoldenError::Truncated { at: self.pos })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, GoldenError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, GoldenError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, GoldenError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, GoldenError> {
        let len = usize::from(self.u16()?);
        let at = self.pos;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| GoldenError::BadUtf8 { at })
    }
}

/// All records of one golden file, in file order.
#[derive(Debug)]
pub struct Golden {
    /// File name, for messages.
    pub file: String,
    /// Records in file order.
    pub records: Vec<Record>,
}

impl Golden {
    /// Parses a whole golden file.
    ///
    /// # Errors
    /// Bad magic, a version other than [`GOLDEN_VERSION`], truncation,
    /// trailing bytes, non-UTF-8 strings or duplicate names.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, GoldenError> {
        let mut c = Cursor { bytes, pos: 0 };
        if c.take(8).map_err(|_| GoldenError::BadMagic)? != GOLDEN_MAGIC {
            return Err(GoldenError::BadMagic);
        }
        let version = c.u32()?;
        if version != GOLDEN_VERSION {
            return Err(GoldenError::Version {
                found: version,
                expected: GOLDEN_VERSION,
            });
        }
        let count = c.u32()? as usize;
        let mut records: Vec<Record> = Vec::with_capacity(count.min(1 << 16));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..count {
            let name = c.string()?;
            let source = c.string()?;
            let ndim = usize::from(c.u8()?);
            let dims = (0..ndim)
                .map(|_| c.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let len: usize = dims.iter().product();
            let raw = c.take(
                len.checked_mul(4)
                    .ok_or(GoldenError::Truncated { at: c.pos })?,
            )?;
            let data = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            if !seen.insert(name.clone()) {
                return Err(GoldenError::Duplicate(name));
            }
            records.push(Record {
                name,
                source,
                dims,
                data,
            });
        }
        if c.pos != bytes.len() {
            return Err(GoldenError::TrailingBytes {
                count: bytes.len() - c.pos,
            });
        }
        Ok(Self {
            file: file.to_owned(),
            records,
        })
    }

    /// Loads `tests/golden/<file>`.
    ///
    /// # Panics
    /// If the file is missing or invalid; the message says how to
    /// regenerate it.
    pub fn load(file: &str) -> Self {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", file]
            .iter()
            .collect();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read golden file {}: {e}; rerun `{REGENERATE}`",
                path.display()
            )
        });
        Self::parse(file, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Record `name`.
    ///
    /// # Panics
    /// If there is none.
    pub fn get(&self, name: &str) -> &Record {
        self.records
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "golden file {} has no record {name}; rerun `{REGENERATE}`",
                    self.file
                )
            })
    }

    /// Whether record `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.records.iter().any(|r| r.name == name)
    }

    /// The distinct path segments that follow `prefix/`, in file order
    /// (e.g. the config names under `conv2d`); the top-level groups for an
    /// empty prefix.
    pub fn children(&self, prefix: &str) -> Vec<String> {
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if let Some(rest) = r.name.strip_prefix(&p) {
                let child = rest.split('/').next().unwrap_or(rest).to_owned();
                if !out.contains(&child) {
                    out.push(child);
                }
            }
        }
        out
    }
}

/// Worst element of a comparison, for the tolerance report.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Worst {
    /// Largest `|got - want|`.
    pub abs: f32,
    /// Largest `|got - want| / |want|` over elements with `want != 0`.
    pub rel: f32,
}

impl Worst {
    /// Element-wise maximum of two reports.
    pub fn max(self, o: Self) -> Self {
        Self {
            abs: self.abs.max(o.abs),
            rel: self.rel.max(o.rel),
        }
    }
}

/// Checks `|got[i] - want[i]| <= atol + rtol * |want[i]|` for every `i`.
///
/// Prints (visible with `--nocapture`) and returns the largest absolute and
/// relative errors. NaN never passes.
///
/// # Panics
/// On a length mismatch or when any element is out of tolerance; the
/// message names the worst element (by excess over its tolerance), its
/// index, both values and the number of failing elements.
pub fn assert_close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Worst {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: got {} values, want {}",
        got.len(),
        want.len()
    );
    let mut worst = Worst::default();
    let mut bad = 0usize;
    // (excess over tolerance, index); NaN counts as infinitely bad.
    let mut worst_bad: Option<(f32, usize)> = None;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let diff = (a - b).abs();
        let tol = atol + rtol * b.abs();
        let ok = diff <= tol || (a == b); // a == b covers equal infinities
        let d = if a == b { 0.0 } else { diff };
        if d.is_nan() {
            worst.abs = f32::NAN;
        } else {
            worst.abs = worst.abs.max(d);
            if b != 0.0 {
                worst.rel = worst.rel.max(d / b.abs());
            }
        }
        if !ok {
            bad += 1;
            let excess = if d.is_nan() { f32::INFINITY } else { d - tol };
            if worst_bad.is_none_or(|(e, _)| excess > e) {
                worst_bad = Some((excess, i));
            }
        }
    }
    if let Some((_, i)) = worst_bad {
        panic!(
            "{name}: {bad} of {} values out of tolerance (atol {atol:e}, rtol {rtol:e}); \
             worst at index {i}: got {:e}, want {:e}, |diff| {:e} > {:e}; \
             max abs error {:e}, max rel error {:e}",
            got.len(),
            got[i],
            want[i],
            (got[i] - want[i]).abs(),
            atol + rtol * want[i].abs(),
            worst.abs,
            worst.rel,
        );
    }
    println!(
        "ok {name}: {} values, max abs {:.3e}, max rel {:.3e} (atol {atol:e}, rtol {rtol:e})",
        got.len(),
        worst.abs,
        worst.rel
    );
    worst
}

/// Compares against a golden record, checking its shape first; failure
/// messages quote the PyTorch call the record came from.
pub fn assert_record(got: &[f32], want: &Record, atol: f32, rtol: f32) -> Worst {
    let label = format!("{} [{}]", want.name, want.source);
    assert_close(&label, got, &want.data, atol, rtol)
}

/// Copies a flat slice into any `Copy` array of `f32` (nested arrays via
/// `as_flattened_mut`), checking the length.
pub fn fill(dst: &mut [f32], src: &[f32], what: &str) {
    assert_eq!(
        dst.len(),
        src.len(),
        "{what}: buffer has {} values, golden has {}",
        dst.len(),
        src.len()
    );
    dst.copy_from_slice(src);
}

/// Runs `f` on a thread with a large stack: the LeNet parameter, gradient
/// and optimizer-state structs are plain arrays of a few hundred KiB each.
pub fn with_big_stack<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(f)
        .expect("spawn test thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
