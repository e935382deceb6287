//! Fashion-MNIST loading: the official IDX files (gzip or raw) and the Kaggle
//! CSV, plus finding the data without flags.
//!
//! Images are kept as bytes, `N x 28 x 28` row-major, exactly as stored;
//! [`Normalization`] turns them into the `f32` tensors the trainers take.
//!
//! Where the data is looked for, first match wins:
//! 1. the `--data` path (a directory, or one Kaggle CSV file),
//! 2. `$FASHION_MNIST_DIR`,
//! 3. `./data/fashion-mnist`,
//! 4. `/usr/share/datasets/fashion-mnist` (Debian package `dataset-fashion-mnist`).
//!
//! A directory holds either the four IDX files (`train-images-idx3-ubyte[.gz]`,
//! `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
//! `t10k-labels-idx1-ubyte[.gz]`) or the Kaggle pair `fashion-mnist_train.csv`
//! and `fashion-mnist_test.csv`. A single CSV file is split into train and
//! test at random (seeded).

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::rng::SplitMix64;

/// Class names, index = label.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Image side in pixels.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes.
pub const CLASSES: usize = 10;

/// IDX magic of an unsigned-byte rank-3 tensor (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of an unsigned-byte rank-1 tensor (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The official file names, in the order train images, train labels, test
/// images, test labels (without the `.gz` suffix).
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Kaggle CSV file names (train, test).
pub const KAGGLE_FILES: [&str; 2] = ["fashion-mnist_train.csv", "fashion-mnist_test.csv"];

/// Environment variable naming the data directory.
pub const ENV_DIR: &str = "FASHION_MNIST_DIR";
/// Project-local default directory.
pub const LOCAL_DIR: &str = "data/fashion-mnist";
/// Where the Debian package `dataset-fashion-mnist` installs the files.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Everything that can go wrong while finding or reading the data. Every
/// variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{path}: corrupt gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The IDX magic number is not the expected one.
    #[error("{path}: bad IDX magic 0x{found:08x}, expected 0x{expected:08x} ({what})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Magic found.
        found: u32,
        /// Magic expected.
        expected: u32,
        /// `"images"` or `"labels"`.
        what: &'static str,
    },
    /// Image dimensions are not 28 x 28.
    #[error("{path}: images are {rows}x{cols}, expected 28x28")]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Rows in the header.
        rows: u32,
        /// Columns in the header.
        cols: u32,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("{path}: header promises {expected} bytes, file has {found}{}", if found < expected { " (truncated)" } else { " (trailing garbage)" })]
    Length {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies (including the header).
        expected: u64,
        /// Bytes present (decompressed).
        found: u64,
    },
    /// Decompressed data goes on after what the header promises.
    #[error(
        "{path}: decompresses to more than the {expected} bytes its header promises (trailing data)"
    )]
    Trailing {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies (including the header).
        expected: u64,
    },
    /// The header claims more samples than any dataset of this kind holds.
    #[error("{path}: header claims {n} samples, more than the limit of {MAX_SAMPLES}")]
    TooMany {
        /// The file.
        path: PathBuf,
        /// Samples claimed.
        n: u64,
    },
    /// A location named explicitly does not exist.
    #[error("{path}: does not exist")]
    Missing {
        /// The location.
        path: PathBuf,
    },
    /// A label outside `0..10`.
    #[error("{path}: label {label} at index {index} is not in 0..9")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Sample index.
        index: usize,
        /// The value found.
        label: u32,
    },
    /// Images and labels files disagree on the number of samples.
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Its count.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Its count.
        n_labels: usize,
    },
    /// A malformed CSV line.
    #[error("{path}:{line}: {msg}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// A file holds no sample at all.
    #[error("{path}: no samples")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// An explicitly named location holds no recognizable dataset.
    #[error(
        "{path}: no Fashion-MNIST here (expected the four IDX files {idx:?} with or without .gz, \
         the Kaggle pair {kaggle:?}, or a single Kaggle CSV file)",
        idx = IDX_FILES,
        kaggle = KAGGLE_FILES
    )]
    NotADataset {
        /// The location.
        path: PathBuf,
    },
    /// No dataset anywhere.
    #[error("{}", not_found_message(searched))]
    NotFound {
        /// Every place looked at, in order.
        searched: Vec<PathBuf>,
    },
}

fn not_found_message(searched: &[PathBuf]) -> String {
    let mut s = String::from("Fashion-MNIST not found. Looked in:\n");
    for p in searched {
        s.push_str(&format!("  {}\n", p.display()));
    }
    s.push_str(
        "Get it with one of:\n  sudo apt-get install dataset-fashion-mnist   (installs to /usr/share/datasets/fashion-mnist)\n  host fetch                                  (downloads to ./data/fashion-mnist)\nor point to it with --data DIR or $FASHION_MNIST_DIR.",
    );
    s
}

/// A set of labelled images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    /// `N x 28 x 28` pixels, row-major, 0 = background.
    pub images: Vec<u8>,
    /// `N` labels in `0..10`.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of sample `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut out = Dataset {
            images: Vec::with_capacity(indices.len() * PIXELS),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.images.extend_from_slice(self.image(i));
            out.labels.push(self.labels[i]);
        }
        out
    }

    /// The first `n` samples (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// Seeded random split: returns `(rest, held_out)` where `held_out` has
    /// `round(len * fraction)` samples. Both keep the original relative order.
    pub fn split(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let n = self.len();
        let k = ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
        let mut idx: Vec<usize> = (0..n).collect();
        SplitMix64::new(seed).shuffle(&mut idx);
        let mut held: Vec<usize> = idx[..k].to_vec();
        let mut rest: Vec<usize> = idx[k..].to_vec();
        held.sort_unstable();
        rest.sort_unstable();
        (self.select(&rest), self.select(&held))
    }

    /// Samples per class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut c = [0; CLASSES];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// Train and test sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Splits {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}

/// How pixel bytes become network inputs: `x = (p / 255 - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Subtracted after scaling to `[0, 1]`.
    pub mean: f32,
    /// Divides after subtracting the mean.
    pub std: f32,
}

impl Normalization {
    /// `[0, 1]` scaling only (torchvision `ToTensor`).
    pub const UNIT: Self = Self {
        mean: 0.0,
        std: 1.0,
    };
    /// Standardized with the Fashion-MNIST training-set statistics
    /// (mean 0.2860, std 0.3530 of `p / 255` over all 60 000 images).
    pub const STANDARD: Self = Self {
        mean: 0.2860,
        std: 0.3530,
    };

    /// Whether the normalization can be used: a finite mean of magnitude at
    /// most 1e4 and a std in [1e-4, 1e4] (so every normalized pixel is a
    /// finite, moderate number).
    pub fn is_valid(self) -> bool {
        self.mean.is_finite()
            && self.mean.abs() <= 1e4
            && self.std.is_finite()
            && (1e-4..=1e4).contains(&self.std)
    }

    /// Normalizes one pixel byte.
    pub fn apply(self, p: u8) -> f32 {
        (f32::from(p) / 255.0 - self.mean) / self.std
    }

    /// Appends the normalized pixels of `pixels` to `out`.
    pub fn extend(self, out: &mut Vec<f32>, pixels: &[u8]) {
        out.extend(pixels.iter().map(|&p| self.apply(p)));
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(p/255 - {}) / {}", self.mean, self.std)
    }
}

/// Largest sample count accepted in one IDX or CSV file (Fashion-MNIST has
/// 60 000 + 10 000); a header claiming more is rejected before anything is
/// allocated.
pub const MAX_SAMPLES: u64 = 1_000_000;
/// Largest CSV text accepted, after decompression (the Kaggle training CSV
/// is 133 MB).
pub const MAX_CSV_LEN: u64 = 512 << 20;
/// Deflate cannot expand data by more than about 1032:1, so a gzip file of
/// `c` bytes cannot hold more than `c * GZIP_MAX_RATIO` bytes.
const GZIP_MAX_RATIO: u64 = 1032;

fn gzip_err(path: &Path, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::UnexpectedEof {
        DataError::Gzip {
            path: path.to_owned(),
            source: std::io::Error::new(source.kind(), "the stream is truncated"),
        }
    } else {
        DataError::Gzip {
            path: path.to_owned(),
            source,
        }
    }
}

/// An opened input: the reader (decompressing when the bytes start with the
/// gzip magic `1f 8b`) and, for gzip, the compressed length.
struct Input<'a> {
    reader: Box<dyn Read + 'a>,
    /// Some(compressed bytes) for gzip input; None for raw.
    gz_len: Option<u64>,
    /// Length of raw input, when known.
    raw_len: Option<u64>,
}

impl<'a> Input<'a> {
    fn from_bytes(b: &'a [u8]) -> Self {
        let len = b.len() as u64;
        if b.starts_with(&[0x1f, 0x8b]) {
            Input {
                reader: Box::new(flate2::read::MultiGzDecoder::new(b)),
                gz_len: Some(len),
                raw_len: None,
            }
        } else {
            Input {
                reader: Box::new(b),
                gz_len: None,
                raw_len: Some(len),
            }
        }
    }

    fn open(path: &Path) -> Result<Input<'static>, DataError> {
        use std::io::BufRead;
        let io = |source| DataError::Io {
            path: path.to_owned(),
            source,
        };
        // Never waits in open(), even if the file became a FIFO after
        // `detect` saw a regular file.
        let (f, meta) = crate::fsutil::open_input(path).map_err(io)?;
        let len = meta.len();
        let mut r = std::io::BufReader::new(f);
        let gz = r.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        Ok(if gz {
            Input {
                reader: Box::new(flate2::read::MultiGzDecoder::new(r)),
                gz_len: Some(len),
                raw_len: None,
            }
        } else {
            Input {
                reader: Box::new(r),
                gz_len: None,
                raw_len: Some(len),
            }
        })
    }

    /// Reads up to `n` bytes (fewer only at the end of the data).
    fn read_up_to(&mut self, path: &Path, n: u64, out: &mut Vec<u8>) -> Result<(), DataError> {
        let r = (&mut self.reader).take(n).read_to_end(out);
        r.map(drop).map_err(|e| self.err(path, e))
    }

    fn err(&self, path: &Path, source: std::io::Error) -> DataError {
        if self.gz_len.is_some() {
            gzip_err(path, source)
        } else {
            DataError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// The two IDX tensors of the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxKind {
    /// `magic 0x803, n, 28, 28`, then `n * 784` pixels.
    Images,
    /// `magic 0x801, n`, then `n` labels in `0..10`.
    Labels,
}

fn decode_idx(path: &Path, mut input: Input<'_>, kind: IdxKind) -> Result<Vec<u8>, DataError> {
    let (header, magic, what, per) = match kind {
        IdxKind::Images => (16usize, IDX_IMAGES_MAGIC, "images", PIXELS as u64),
        IdxKind::Labels => (8, IDX_LABELS_MAGIC, "labels", 1),
    };
    let mut head = Vec::with_capacity(header);
    input.read_up_to(path, header as u64, &mut head)?;
    check_header(path, &head, header, magic, what)?;
    let n = be_u32(&head, 4);
    if kind == IdxKind::Images {
        let (rows, cols) = (be_u32(&head, 8), be_u32(&head, 12));
        if rows as usize != SIDE || cols as usize != SIDE {
            return Err(DataError::BadSize {
                path: path.to_owned(),
                rows,
                cols,
            });
        }
    }
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_owned(),
        });
    }
    if u64::from(n) > MAX_SAMPLES {
        return Err(DataError::TooMany {
            path: path.to_owned(),
            n: u64::from(n),
        });
    }
    let body = u64::from(n) * per;
    let expected = header as u64 + body;
    // Check the claim against the file before allocating or decompressing.
    if let Some(found) = input.raw_len
        && found != expected
    {
        return Err(DataError::Length {
            path: path.to_owned(),
            expected,
            found,
        });
    }
    if let Some(c) = input.gz_len
        && expected > c.saturating_mul(GZIP_MAX_RATIO)
    {
        return Err(DataError::Gzip {
            path: path.to_owned(),
            source: std::io::Error::other(format!(
                "a {c}-byte gzip stream cannot hold the {expected} bytes its IDX header promises (truncated)"
            )),
        });
    }
    let mut out = Vec::with_capacity(body.min(64 << 20) as usize);
    input.read_up_to(path, body, &mut out)?;
    if (out.len() as u64) < body {
        return Err(DataError::Length {
            path: path.to_owned(),
            expected,
            found: header as u64 + out.len() as u64,
        });
    }
    // Nothing may follow: one more byte, or a damaged trailer, is an error;
    // decompression stops here either way.
    let mut extra = [0u8; 1];
    match input.reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) if input.gz_len.is_some() => {
            return Err(DataError::Trailing {
                path: path.to_owned(),
                expected,
            });
        }
        Ok(_) => {
            return Err(DataError::Length {
                path: path.to_owned(),
                expected,
                found: expected + 1,
            });
        }
        Err(e) if input.gz_len.is_some() => {
            return Err(DataError::Gzip {
                path: path.to_owned(),
                source: std::io::Error::new(
                    e.kind(),
                    format!("after the {expected} bytes the IDX header promises: {e}"),
                ),
            });
        }
        Err(e) => return Err(input.err(path, e)),
    }
    if kind == IdxKind::Labels
        && let Some((index, &l)) = out
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= CLASSES)
    {
        return Err(DataError::BadLabel {
            path: path.to_owned(),
            index,
            label: u32::from(l),
        });
    }
    Ok(out)
}

/// Parses an IDX file's bytes, gzip-compressed or raw: the pixels
/// (`N x 784`) or the labels. Lengths are checked against the header before
/// anything is allocated, and decompression stops at the size the header
/// implies (or [`MAX_SAMPLES`]).
///
/// # Errors
/// See [`DataError`]; every error names `path`.
pub fn parse_idx(path: &Path, bytes: &[u8], kind: IdxKind) -> Result<Vec<u8>, DataError> {
    decode_idx(path, Input::from_bytes(bytes), kind)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn check_header(
    path: &Path,
    b: &[u8],
    header: usize,
    magic: u32,
    what: &'static str,
) -> Result<(), DataError> {
    if b.len() < 4 {
        return Err(DataError::Length {
            path: path.to_owned(),
            expected: header as u64,
            found: b.len() as u64,
        });
    }
    let found = be_u32(b, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_owned(),
            found,
            expected: magic,
            what,
        });
    }
    if b.len() < header {
        return Err(DataError::Length {
            path: path.to_owned(),
            expected: header as u64,
            found: b.len() as u64,
        });
    }
    Ok(())
}

/// Parses IDX image bytes (`magic 0x803, n, 28, 28, pixels`), gzip or raw.
pub fn parse_idx_images(path: &Path, b: &[u8]) -> Result<Vec<u8>, DataError> {
    parse_idx(path, b, IdxKind::Images)
}

/// Parses IDX label bytes (`magic 0x801, n, labels`), gzip or raw, checking
/// every label.
pub fn parse_idx_labels(path: &Path, b: &[u8]) -> Result<Vec<u8>, DataError> {
    parse_idx(path, b, IdxKind::Labels)
}

/// Reads an IDX images file (gzip or raw), streaming: memory is bounded by
/// what the header promises and the file can hold.
pub fn read_idx_images(path: &Path) -> Result<Vec<u8>, DataError> {
    decode_idx(path, Input::open(path)?, IdxKind::Images)
}

/// Reads an IDX labels file (gzip or raw).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    decode_idx(path, Input::open(path)?, IdxKind::Labels)
}

/// Reads one images/labels pair and checks the counts agree.
pub fn read_idx_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let img = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if img.len() / PIXELS != lab.len() {
        return Err(DataError::CountMismatch {
            images: images.to_owned(),
            n_images: img.len() / PIXELS,
            labels: labels.to_owned(),
            n_labels: lab.len(),
        });
    }
    Ok(Dataset {
        images: img,
        labels: lab,
    })
}

/// Finds `dir/name.gz` or `dir/name`.
fn idx_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Some(gz);
    }
    let raw = dir.join(name);
    raw.is_file().then_some(raw)
}

/// Reads the four official IDX files from `dir`.
pub fn read_idx_dir(dir: &Path) -> Result<Splits, DataError> {
    let f: Vec<PathBuf> = IDX_FILES
        .iter()
        .map(|n| {
            idx_file(dir, n).ok_or_else(|| DataError::NotADataset {
                path: dir.to_owned(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Splits {
        train: read_idx_pair(&f[0], &f[1])?,
        test: read_idx_pair(&f[2], &f[3])?,
    })
}

/// Parses Kaggle CSV text: a `label,pixel1,...,pixel784` header, then one
/// sample per line.
pub fn parse_csv(path: &Path, text: &str) -> Result<Dataset, DataError> {
    let err = |line: usize, msg: String| DataError::Csv {
        path: path.to_owned(),
        line,
        msg,
    };
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| DataError::Empty {
        path: path.to_owned(),
    })?;
    let cols: Vec<&str> = header.trim().split(',').map(str::trim).collect();
    let header_ok = cols.len() == PIXELS + 1
        && cols[0] == "label"
        && cols[1..]
            .iter()
            .enumerate()
            .all(|(i, c)| *c == format!("pixel{}", i + 1));
    if !header_ok {
        return Err(err(
            1,
            "expected the header `label,pixel1,...,pixel784`".to_string(),
        ));
    }
    let mut ds = Dataset::default();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let lineno = i + 1;
        if ds.len() as u64 >= MAX_SAMPLES {
            return Err(err(lineno, format!("more than {MAX_SAMPLES} samples")));
        }
        let mut n = 0usize;
        for (j, field) in line.split(',').enumerate() {
            let v: u32 = field.trim().parse().map_err(|_| {
                err(
                    lineno,
                    format!("field {} `{}` is not a number", j + 1, field.trim()),
                )
            })?;
            if j == 0 {
                if v as usize >= CLASSES {
                    return Err(err(lineno, format!("label {v} is not in 0..9")));
                }
                ds.labels.push(v as u8);
            } else {
                if v > 255 {
                    return Err(err(lineno, format!("pixel{j} = {v} is not in 0..255")));
                }
                if j > PIXELS {
                    return Err(err(lineno, format!("more than {} fields", PIXELS + 1)));
                }
                ds.images.push(v as u8);
            }
            n = j + 1;
        }
        if n != PIXELS + 1 {
            return Err(err(lineno, format!("{n} fields, expected {}", PIXELS + 1)));
        }
    }
    if ds.is_empty() {
        return Err(DataError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(ds)
}

/// Reads a Kaggle CSV file (gzip or raw).
pub fn read_csv(path: &Path) -> Result<Dataset, DataError> {
    read_csv_from(path, Input::open(path)?)
}

/// Parses a Kaggle CSV file's bytes (gzip or raw), at most [`MAX_CSV_LEN`]
/// bytes of text and [`MAX_SAMPLES`] samples.
///
/// # Errors
/// See [`DataError`]; every error names `path`.
pub fn parse_csv_bytes(path: &Path, bytes: &[u8]) -> Result<Dataset, DataError> {
    read_csv_from(path, Input::from_bytes(bytes))
}

fn read_csv_from(path: &Path, mut input: Input<'_>) -> Result<Dataset, DataError> {
    let mut bytes = Vec::new();
    input.read_up_to(path, MAX_CSV_LEN + 1, &mut bytes)?;
    if bytes.len() as u64 > MAX_CSV_LEN {
        return Err(DataError::Csv {
            path: path.to_owned(),
            line: 0,
            msg: format!("more than {MAX_CSV_LEN} bytes of text, the limit for a CSV file"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| DataError::Csv {
        path: path.to_owned(),
        line: 0,
        msg: format!("not UTF-8 text: {e}"),
    })?;
    parse_csv(path, &text)
}

/// Where a dataset was found and in which form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Directory with the four IDX files.
    Idx(PathBuf),
    /// The Kaggle train/test CSV pair.
    CsvPair {
        /// `fashion-mnist_train.csv`.
        train: PathBuf,
        /// `fashion-mnist_test.csv`.
        test: PathBuf,
    },
    /// One CSV file, split at random into train and test.
    CsvSingle(PathBuf),
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idx(d) => write!(f, "IDX files in {}", d.display()),
            Self::CsvPair { train, test } => {
                write!(f, "CSV {} + {}", train.display(), test.display())
            }
            Self::CsvSingle(p) => write!(f, "CSV {} (random split)", p.display()),
        }
    }
}

/// Recognizes a dataset at `path` (directory or CSV file), without reading it.
pub fn detect(path: &Path) -> Option<DataSource> {
    if path.is_file() {
        return Some(DataSource::CsvSingle(path.to_owned()));
    }
    if !path.is_dir() {
        return None;
    }
    if IDX_FILES.iter().all(|n| idx_file(path, n).is_some()) {
        return Some(DataSource::Idx(path.to_owned()));
    }
    let (train, test) = (path.join(KAGGLE_FILES[0]), path.join(KAGGLE_FILES[1]));
    if train.is_file() && test.is_file() {
        return Some(DataSource::CsvPair { train, test });
    }
    None
}

/// Finds the dataset: `explicit` (the `--data` flag) if given, else
/// `$FASHION_MNIST_DIR`, `./data/fashion-mnist`, then
/// `/usr/share/datasets/fashion-mnist`. A location named explicitly (flag or
/// environment) that holds no dataset is an error rather than skipped, so a
/// typo is not silently replaced by another copy.
pub fn locate(explicit: Option<&Path>) -> Result<DataSource, DataError> {
    // An empty variable counts as unset.
    let env = std::env::var_os(ENV_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    locate_in(explicit, env, &default_dirs())
}

/// The fall-back directories, in search order.
pub fn default_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(LOCAL_DIR), PathBuf::from(SYSTEM_DIR)]
}

/// [`locate`] with the environment and defaults passed in (for tests).
pub fn locate_in(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    defaults: &[PathBuf],
) -> Result<DataSource, DataError> {
    if let Some(named) = explicit.map(Path::to_owned).or(env) {
        if !named.exists() {
            return Err(DataError::Missing { path: named });
        }
        return detect(&named).ok_or(DataError::NotADataset { path: named });
    }
    for d in defaults {
        if let Some(src) = detect(d) {
            return Ok(src);
        }
    }
    Err(DataError::NotFound {
        searched: defaults.to_vec(),
    })
}

/// Fraction of a single CSV file held out as the test set.
pub const CSV_TEST_FRACTION: f64 = 0.3;

/// Loads a located dataset. `split_seed` drives the 70/30 split of a single
/// CSV file (ignored otherwise).
pub fn load(src: &DataSource, split_seed: u64) -> Result<Splits, DataError> {
    match src {
        DataSource::Idx(dir) => read_idx_dir(dir),
        DataSource::CsvPair { train, test } => Ok(Splits {
            train: read_csv(train)?,
            test: read_csv(test)?,
        }),
        DataSource::CsvSingle(p) => {
            let all = read_csv(p)?;
            let (train, test) = all.split(CSV_TEST_FRACTION, split_seed);
            Ok(Splits { train, test })
        }
    }
}

/// Test helpers that write small synthetic datasets.
#[doc(hidden)]
pub mod synth {
    use super::*;

    /// IDX images bytes for `images` (`N x 784`).
    pub fn idx_images(images: &[u8]) -> Vec<u8> {
        let n = (images.len() / PIXELS) as u32;
        let mut b = Vec::new();
        for v in [IDX_IMAGES_MAGIC, n, SIDE as u32, SIDE as u32] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(images);
        b
    }

    /// IDX labels bytes.
    pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IDX_LABELS_MAGIC, labels.len() as u32] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(labels);
        b
    }

    /// Gzip-compresses bytes.
    pub fn gzip(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).expect("in-memory write");
        e.finish().expect("in-memory write")
    }

    /// Kaggle CSV text for a dataset.
    pub fn csv(ds: &Dataset) -> String {
        let mut s = String::from("label");
        for i in 1..=PIXELS {
            s.push_str(&format!(",pixel{i}"));
        }
        s.push('\n');
        for i in 0..ds.len() {
            s.push_str(&ds.labels[i].to_string());
            for p in ds.image(i) {
                s.push_str(&format!(",{p}"));
            }
            s.push('\n');
        }
        s
    }

    /// A learnable toy dataset: class `c` is a bright horizontal bar at a
    /// class-specific height plus seeded noise, on a dark background.
    pub fn toy(n: usize, seed: u64) -> Dataset {
        let mut rng = SplitMix64::new(seed);
        let mut ds = Dataset::default();
        for i in 0..n {
            let c = (i % CLASSES) as u8;
            let row0 = 2 + 2 * c as usize;
            for r in 0..SIDE {
                for col in 0..SIDE {
                    let noise = (rng.next_u64() % 40) as u8;
                    let on = (row0..row0 + 3).contains(&r) && (4..24).contains(&col);
                    ds.images.push(if on { 215 + noise } else { noise });
                }
            }
            ds.labels.push(c);
        }
        ds
    }

    /// Writes the four IDX files of `splits` into `dir` (gzip if `gz`).
    pub fn write_idx_dir(dir: &Path, splits: &Splits, gz: bool) {
        let parts = [
            idx_images(&splits.train.images),
            idx_labels(&splits.train.labels),
            idx_images(&splits.test.images),
            idx_labels(&splits.test.labels),
        ];
        for (name, bytes) in IDX_FILES.iter().zip(parts) {
            let (name, bytes) = if gz {
                (format!("{name}.gz"), gzip(&bytes))
            } else {
                (name.to_string(), bytes)
            };
            fs::write(dir.join(name), bytes).expect("write synthetic IDX file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    fn splits() -> Splits {
        Splits {
            train: toy(20, 1),
            test: toy(10, 2),
        }
    }

    #[test]
    fn class_names_match_the_dataset_documentation() {
        assert_eq!(CLASS_NAMES.len(), CLASSES);
        assert_eq!(CLASS_NAMES[0], "T-shirt/top");
        assert_eq!(CLASS_NAMES[9], "Ankle boot");
    }

    #[test]
    fn reads_raw_and_gzip_idx_identically() {
        let s = splits();
        for gz in [false, true] {
            let d = tmp();
            write_idx_dir(d.path(), &s, gz);
            assert_eq!(detect(d.path()), Some(DataSource::Idx(d.path().to_owned())));
            let got = load(&DataSource::Idx(d.path().to_owned()), 0).unwrap();
            assert_eq!(got, s, "gz={gz}");
        }
    }

    fn write(d: &Path, name: &str, b: &[u8]) -> PathBuf {
        let p = d.join(name);
        fs::write(&p, b).unwrap();
        p
    }

    #[test]
    fn every_idx_corruption_is_a_named_error() {
        let d = tmp();
        let ds = toy(3, 3);
        let good_img = idx_images(&ds.images);
        let good_lab = idx_labels(&ds.labels);

        // Wrong magic (labels magic in an images file).
        let mut b = good_img.clone();
        b[3] = 0x01;
        let p = write(d.path(), "img-magic", &b);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { found: 0x801, .. }), "{e}");
        assert!(e.to_string().contains("img-magic"), "{e}");

        let mut b = good_lab.clone();
        b[3] = 0x03;
        let p = write(d.path(), "lab-magic", &b);
        assert!(matches!(
            read_idx_labels(&p).unwrap_err(),
            DataError::BadMagic { .. }
        ));

        // Wrong image size.
        let mut b = good_img.clone();
        b[11] = 32;
        let p = write(d.path(), "img-size", &b);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::BadSize {
                    rows: 32,
                    cols: 28,
                    ..
                }
            ),
            "{e}"
        );

        // Truncated pixels, truncated header, trailing garbage.
        let p = write(d.path(), "img-trunc", &good_img[..good_img.len() - 1]);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(e, DataError::Length { .. }) && e.to_string().contains("truncated"),
            "{e}"
        );
        let p = write(d.path(), "img-head", &good_img[..10]);
        assert!(matches!(
            read_idx_images(&p).unwrap_err(),
            DataError::Length { .. }
        ));
        let p = write(d.path(), "tiny", &good_img[..2]);
        assert!(matches!(
            read_idx_images(&p).unwrap_err(),
            DataError::Length { .. }
        ));
        let mut b = good_lab.clone();
        b.push(0);
        let p = write(d.path(), "lab-long", &b);
        let e = read_idx_labels(&p).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");

        // Label out of range.
        let mut b = good_lab.clone();
        b[9] = 10;
        let p = write(d.path(), "lab-range", &b);
        let e = read_idx_labels(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::BadLabel {
                    index: 1,
                    label: 10,
                    ..
                }
            ),
            "{e}"
        );

        // Empty file, and zero samples.
        let p = write(d.path(), "empty", &[]);
        assert!(read_idx_images(&p).is_err());
        let p = write(d.path(), "zero", &idx_labels(&[]));
        assert!(matches!(
            read_idx_labels(&p).unwrap_err(),
            DataError::Empty { .. }
        ));

        // Corrupt gzip: truncated stream.
        let gz = gzip(&good_img);
        let p = write(d.path(), "img.gz", &gz[..gz.len() / 2]);
        let e = read_idx_images(&p).unwrap_err();
        assert!(
            matches!(e, DataError::Gzip { .. }) && e.to_string().contains("img.gz"),
            "{e}"
        );

        // Count mismatch between images and labels.
        let pi = write(d.path(), "i", &good_img);
        let pl = write(d.path(), "l", &idx_labels(&ds.labels[..2]));
        let e = read_idx_pair(&pi, &pl).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    n_images: 3,
                    n_labels: 2,
                    ..
                }
            ),
            "{e}"
        );

        // Missing file.
        let e = read_idx_images(&d.path().join("nope")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope"));
    }

    #[test]
    fn csv_round_trip_and_split() {
        let d = tmp();
        let ds = toy(30, 4);
        let p = write(d.path(), "fm.csv", csv(&ds).as_bytes());
        assert_eq!(read_csv(&p).unwrap(), ds);
        let src = detect(&p).unwrap();
        let a = load(&src, 9).unwrap();
        let b = load(&src, 9).unwrap();
        let c = load(&src, 10).unwrap();
        assert_eq!(a, b, "same seed, same split");
        assert_ne!(a.test.labels.len() + a.train.labels.len(), 0);
        assert_eq!(a.test.len(), 9);
        assert_eq!(a.train.len(), 21);
        assert_ne!(a, c, "another seed, another split");
        // The union of the split is the whole set.
        let mut all: Vec<&[u8]> = (0..a.train.len()).map(|i| a.train.image(i)).collect();
        all.extend((0..a.test.len()).map(|i| a.test.image(i)));
        all.sort();
        let mut orig: Vec<&[u8]> = (0..ds.len()).map(|i| ds.image(i)).collect();
        orig.sort();
        assert_eq!(all, orig);

        // Kaggle pair in a directory.
        let d2 = tmp();
        write(d2.path(), KAGGLE_FILES[0], csv(&ds).as_bytes());
        write(d2.path(), KAGGLE_FILES[1], csv(&ds.take(5)).as_bytes());
        let s = load(&detect(d2.path()).unwrap(), 0).unwrap();
        assert_eq!(s.train, ds);
        assert_eq!(s.test, ds.take(5));
    }

    #[test]
    fn every_csv_corruption_is_a_named_error() {
        let ds = toy(2, 5);
        let good = csv(&ds);
        let p = Path::new("x.csv");
        let (header, body) = good.split_once('\n').unwrap();
        let cases: Vec<(String, &str)> = vec![
            (good.replacen("label", "lbl", 1), ":1:"),
            (
                format!("{header}\n{}", body.replacen(",0,", ",x,", 1)),
                "not a number",
            ),
            (
                format!("{header}\n{}", body.replacen(",0,", ",256,", 1)),
                "not in 0..255",
            ),
            (format!("{header}\n11{}", &body[1..]), "not in 0..9"),
            (
                format!("{header}\n{},0\n", body.lines().next().unwrap()),
                "more than",
            ),
            (format!("{header}\n1,2,3\n"), "3 fields"),
            (format!("{header}\n"), "no samples"),
            (String::new(), "no samples"),
        ];
        for (text, want) in cases {
            let e = parse_csv(p, &text).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("x.csv"),
                "want {want:?}, got {e}"
            );
        }
    }

    #[test]
    fn locate_order_and_messages() {
        let a = tmp();
        let b = tmp();
        write_idx_dir(b.path(), &splits(), true);
        let empty = tmp();
        // Explicit wins, and an explicit non-dataset is an error, not skipped.
        let e = locate_in(Some(a.path()), None, &[b.path().to_owned()]).unwrap_err();
        assert!(matches!(e, DataError::NotADataset { .. }), "{e}");
        assert_eq!(
            locate_in(Some(b.path()), Some(a.path().to_owned()), &[]).unwrap(),
            DataSource::Idx(b.path().to_owned())
        );
        // Environment next.
        assert!(locate_in(None, Some(a.path().to_owned()), &[b.path().to_owned()]).is_err());
        // Then the defaults in order, skipping empty ones.
        assert_eq!(
            locate_in(None, None, &[empty.path().to_owned(), b.path().to_owned()]).unwrap(),
            DataSource::Idx(b.path().to_owned())
        );
        let e = locate_in(None, None, &[empty.path().to_owned()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("apt-get install dataset-fashion-mnist") && e.contains("host fetch"),
            "{e}"
        );
        assert!(e.contains(&empty.path().display().to_string()));
    }

    #[test]
    fn normalization() {
        assert_eq!(Normalization::UNIT.apply(255), 1.0);
        assert_eq!(Normalization::UNIT.apply(0), 0.0);
        let s = Normalization::STANDARD;
        assert!((s.apply(0) + 0.2860 / 0.3530).abs() < 1e-6);
    }
}
