//! Golden records: reference values written by PyTorch
//! (`tests/golden/gen_golden.py`), read by the tests and by `host check`.
//!
//! The format is documented in `tests/golden/README.md`:
//!
//! ```text
//! b"LNGOLDEN"  u32 version  u32 record_count
//! record_count x { u16 name_len, name, u16 source_len, source,
//!                  u8 ndim, ndim x u32 dims, prod(dims) x f32 }
//! ```
//!
//! All integers and floats are little-endian. Each record carries the
//! PyTorch call that produced it (`source`), which failure messages quote.

use std::fmt;
use std::path::{Path, PathBuf};

/// File magic: the first eight bytes of every golden file.
pub const GOLDEN_MAGIC: &[u8; 8] = b"LNGOLDEN";
/// Format version this reader understands; `gen_golden.py` writes `VERSION`.
pub const GOLDEN_VERSION: u32 = 1;
/// Command that rewrites the golden files (from the repository root).
pub const REGENERATE: &str = "/usr/bin/python3 tests/golden/gen_golden.py";
/// The files `host check` reads, each well under this size (the largest is
/// about 5 MB); a larger file is refused before it is read.
pub const MAX_GOLDEN_BYTES: u64 = 64 << 20;

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
                "golden file version {found}, this build reads version {expected}: \
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
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GoldenError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, GoldenError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, GoldenError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, GoldenError> {
        self.array().map(u32::from_le_bytes)
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
        // Every record takes at least 5 bytes, so the count is bounded by
        // the file before anything is reserved for it.
        let mut records: Vec<Record> = Vec::with_capacity(count.min(bytes.len() / 5));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..count {
            let name = c.string()?;
            let source = c.string()?;
            let ndim = usize::from(c.u8()?);
            let dims = (0..ndim)
                .map(|_| c.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes_len = dims
                .iter()
                .try_fold(4usize, |a, &d| a.checked_mul(d))
                .ok_or(GoldenError::Truncated { at: c.pos })?;
            let raw = c.take(bytes_len)?;
            let data = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
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

    /// Reads and parses `path`, refusing anything but a regular file of at
    /// most [`MAX_GOLDEN_BYTES`].
    ///
    /// # Errors
    /// A one-line message naming the file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let name = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{name}: not a regular file"));
        }
        if meta.len() > MAX_GOLDEN_BYTES {
            return Err(format!(
                "{name}: {} bytes, more than any golden file ({MAX_GOLDEN_BYTES})",
                meta.len()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
        let file = path
            .file_name()
            .map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned());
        Self::parse(&file, &bytes).map_err(|e| format!("{name}: {e}"))
    }

    /// Record `name`.
    ///
    /// # Errors
    /// If there is none: the message names the file and the record.
    pub fn record(&self, name: &str) -> Result<&Record, String> {
        self.records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("golden file {} has no record {name}", self.file))
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

/// The folder holding the golden files: `$LENET_GOLDEN`, else `golden/`
/// beside the executable (a packed bundle), else `tests/golden` under the
/// current directory (a checkout).
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LENET_GOLDEN") {
        return Some(PathBuf::from(d));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.join("golden")));
    [beside, Some(PathBuf::from("tests/golden"))]
        .into_iter()
        .flatten()
        .find(|d| d.join("lenet.bin").is_file())
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

/// Checks `|got[i] - want[i]| <= atol + rtol * |want[i]|` for every `i`
/// and returns the largest absolute and relative errors. NaN never passes.
///
/// # Errors
/// On a length mismatch or when any element is out of tolerance; the
/// message names the worst element (by excess over its tolerance), its
/// index, both values and the number of failing elements.
pub fn compare(
    name: &str,
    got: &[f32],
    want: &[f32],
    atol: f32,
    rtol: f32,
) -> Result<Worst, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{name}: got {} values, want {}",
            got.len(),
            want.len()
        ));
    }
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
    match worst_bad {
        Some((_, i)) => Err(format!(
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
        )),
        None => Ok(worst),
    }
}

/// [`compare`] against a golden record; the label quotes the PyTorch call
/// the record came from.
///
/// # Errors
/// As [`compare`].
pub fn compare_record(got: &[f32], want: &Record, atol: f32, rtol: f32) -> Result<Worst, String> {
    compare(
        &format!("{} [{}]", want.name, want.source),
        got,
        &want.data,
        atol,
        rtol,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(&str, &[u32], &[f32])]) -> Vec<u8> {
        let mut b = GOLDEN_MAGIC.to_vec();
        b.extend(GOLDEN_VERSION.to_le_bytes());
        b.extend((records.len() as u32).to_le_bytes());
        for (name, dims, data) in records {
            for s in [*name, "src"] {
                b.extend((s.len() as u16).to_le_bytes());
                b.extend(s.as_bytes());
            }
            b.push(dims.len() as u8);
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            for v in *data {
                b.extend(v.to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn a_huge_claim_is_an_error_not_an_allocation() {
        let mut b = file(&[]);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Golden::parse("t", &b).unwrap_err(),
            GoldenError::Truncated { at: 16 }
        );
        let mut b = file(&[("a", &[1], &[1.0])]);
        // dims [u32::MAX, u32::MAX]: the byte count overflows on 32 bits
        // and exceeds the file on 64.
        let at = b.len() - 9;
        b.truncate(at);
        b.push(2);
        b.extend(u32::MAX.to_le_bytes());
        b.extend(u32::MAX.to_le_bytes());
        assert!(matches!(
            Golden::parse("t", &b),
            Err(GoldenError::Truncated { .. })
        ));
    }

    #[test]
    fn records_and_comparisons() {
        let b = file(&[("g/a", &[2], &[1.0, 2.0]), ("g/b", &[], &[3.0])]);
        let g = Golden::parse("t", &b).unwrap();
        assert_eq!(g.children("g"), ["a", "b"]);
        assert_eq!(g.record("g/b").unwrap().data, [3.0]);
        assert!(g.record("g/c").unwrap_err().contains("no record g/c"));
        let a = g.record("g/a").unwrap();
        let w = compare_record(&[1.0, 2.0 + 1e-6], a, 1e-5, 0.0).unwrap();
        assert!(w.abs > 0.0 && w.abs < 2e-6);
        let e = compare_record(&[1.0, f32::NAN], a, 1.0, 1.0).unwrap_err();
        assert!(
            e.contains("g/a [src]: 1 of 2 values") && e.contains("index 1"),
            "{e}"
        );
        assert!(compare("x", &[1.0], &[1.0, 2.0], 0.0, 0.0).is_err());
    }

    #[test]
    fn read_refuses_what_is_not_a_golden_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            Golden::read(d.path())
                .unwrap_err()
                .contains("not a regular file")
        );
        let p = d.path().join("big.bin");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(MAX_GOLDEN_BYTES + 1)
            .unwrap();
        assert!(
            Golden::read(&p)
                .unwrap_err()
                .contains("more than any golden file")
        );
        std::fs::write(&p, b"LNGOLDEX").unwrap();
        let e = Golden::read(&p).unwrap_err();
        assert!(
            e.starts_with(&p.display().to_string()) && e.contains("magic"),
            "{e}"
        );
    }
}
