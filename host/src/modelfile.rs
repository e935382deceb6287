//! The `.lenet` model file: weights, and for checkpoints the optimizer state,
//! epoch and RNG state that `--resume` needs to continue bit for bit.
//!
//! Layout, all little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | magic `b"LENETMDL"` |
//! | 8  | 4 | format version (`u32`: 1 for the LeNets, 2 for the others) |
//! | 12 | 1 | model (0 `lenet5`, 1 `lenet5-max`, 2 `lenet5-wide`, 3 `cnn`, 4 `vgg`, 5 `alexnet`) |
//! | 13 | 1 | activation (0 sigmoid, 1 relu, 2 tanh) |
//! | 14 | 1 | flags (bit 0: checkpoint section present) |
//! | 15 | 1 | reserved, 0 |
//! | 16 | 4 | input normalization mean (`f32`) |
//! | 20 | 4 | input normalization std (`f32`) |
//! | 24 | 8 | parameter count `P` (`u64`) |
//! | 32 | 8 | payload length in bytes (`u64`) |
//! | 40 | 4 | CRC-32 (IEEE) of the payload |
//! | 44 | 4 | CRC-32 of bytes 0..44 (the header above) |
//! | 48 | 4P | parameters, `f32`, PyTorch `state_dict` order |
//!
//! Version 2 (the networks with options) has a 64-byte header: bytes 0..44
//! as above, then
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 44 | 1 | VGG blocks (0 for the others) |
//! | 45 | 1 | reserved, 0 |
//! | 46 | 2 | width divisor (`u16`) |
//! | 48 | 2 | input side (`u16`) |
//! | 50 | 2 | reserved, 0 |
//! | 52 | 4 | hidden units of the dense layers (`u32`) |
//! | 56 | 4 | reserved, 0 |
//! | 60 | 4 | CRC-32 of bytes 0..60 |
//! | 64 | 4P | parameters |
//!
//! Checkpoint section (after the parameters, inside the payload): epoch
//! (`u32`), optimizer step (`u64`), `len(m)` (`u64`) + `m` (`f32`s), `len(v)`
//! (`u64`) + `v`, shuffling RNG state (`u64`), then `len` (`u64`) + UTF-8
//! JSON with the training configuration and metric history.
//!
//! Files are written to a temporary sibling and renamed into place. A
//! file's header is read and checked first (reserved bytes 0, options the
//! network does not have at the values `to_bytes` writes, at most
//! [`MAX_PARAMS`] parameters); the file must then have exactly the size the
//! header gives, at most the parameters, two optimizer moments and
//! [`MAX_JSON_LEN`] of JSON, checked against its size on disk before the
//! payload is read.

use std::path::{Path, PathBuf};

use lenet_core::activation::Activation;
use lenet_core::model::{AlexNetConfig, Arch, Family, ModelKind, NetOption, VggConfig};
use serde::{Deserialize, Serialize};

use crate::backend::OptimizerState;
use crate::data::Normalization;
use crate::fsutil::write_atomic;

/// File magic.
pub const MAGIC: [u8; 8] = *b"LENETMDL";
/// Format version of LeNet files.
pub const VERSION: u32 = 1;
/// Format version of the networks with options.
pub const VERSION_2: u32 = 2;
/// Header size in bytes (version 1).
pub const HEADER_LEN: usize = 48;
/// Header size in bytes (version 2).
pub const HEADER_LEN_2: usize = 64;
const FLAG_CHECKPOINT: u8 = 1;
/// Largest checkpoint JSON (training configuration and metric history)
/// read; the history of a 60-epoch run is about 20 kB.
pub const MAX_JSON_LEN: u64 = 16 << 20;
/// Largest network accepted, in parameters: 1 GiB of `f32`, what the
/// largest safetensors file imported holds (the notes' full VGG-11 has
/// 128.8 M). A header claiming more is refused before anything is read.
pub const MAX_PARAMS: usize = 1 << 28;

/// Parameter count of each model (`state_dict` of the PyTorch model).
pub fn expected_params(arch: impl Into<Arch>) -> usize {
    arch.into().num_params()
}

/// Model code in the file (the family's [`Family::file_code`]).
pub const fn arch_code(arch: Arch) -> u8 {
    arch.family().file_code
}

/// The options of the networks that have them, as the command line, the
/// checkpoint's JSON and the safetensors metadata spell them. Defaults are
/// the course notes' full-size networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetOptions {
    /// VGG blocks (1 to 5).
    pub blocks: u8,
    /// Channel divisor.
    pub width_div: u16,
    /// Input side the 28x28 images are resized to.
    pub input_size: u16,
    /// Units of the hidden dense layers.
    pub hidden: u32,
}

impl Default for NetOptions {
    fn default() -> NetOptions {
        NetOptions {
            blocks: VggConfig::NOTES.blocks,
            width_div: 1,
            input_size: 224,
            hidden: 4096,
        }
    }
}

/// Largest input side, channel divisor and hidden width accepted.
const MAX_SIDE: u16 = 512;
const MAX_HIDDEN: u32 = 16_384;

impl NetOptions {
    /// The value of option `o`.
    pub fn get(&self, o: NetOption) -> u32 {
        match o {
            NetOption::Blocks => self.blocks.into(),
            NetOption::WidthDiv => self.width_div.into(),
            NetOption::InputSize => self.input_size.into(),
            NetOption::Hidden => self.hidden,
        }
    }

    /// The options of `arch` (defaults for the networks without them).
    pub fn of(arch: Arch) -> NetOptions {
        let d = NetOptions::default();
        match arch {
            Arch::Vgg(c) => NetOptions {
                blocks: c.blocks,
                width_div: c.width_div,
                input_size: c.size,
                hidden: c.hidden,
            },
            Arch::AlexNet(c) => NetOptions {
                width_div: c.width_div,
                input_size: c.size,
                hidden: c.hidden,
                ..d
            },
            Arch::LeNet(_) | Arch::Cnn => d,
        }
    }
}

/// The network named `name` (`lenet5`, ..., `cnn`, `vgg`, `alexnet`) with
/// options `o` (used by `vgg` and `alexnet` only), checked to be a network
/// that takes the 28x28 images to 10 logits.
///
/// # Errors
/// An unknown name, an option out of range, or options that give no valid
/// network (too small an input for the layers), as one line.
pub fn arch_from(name: &str, o: NetOptions) -> Result<Arch, String> {
    let family = Family::by_name(name).ok_or_else(|| {
        format!(
            "unknown model `{name}` (one of {})",
            Arch::ALL_NAMES.join(", ")
        )
    })?;
    let arch = family.with(
        VggConfig {
            blocks: o.blocks,
            width_div: o.width_div,
            size: o.input_size,
            hidden: o.hidden,
        },
        AlexNetConfig {
            width_div: o.width_div,
            size: o.input_size,
            hidden: o.hidden,
        },
    );
    if arch.lenet().is_some() {
        return Ok(arch);
    }
    if family.takes(NetOption::Blocks) && !(1..=5).contains(&o.blocks) {
        return Err(format!("vgg blocks {} (1 to 5)", o.blocks));
    }
    if !(1..=64).contains(&o.width_div) {
        return Err(format!("width divisor {} (1 to 64)", o.width_div));
    }
    if !(8..=MAX_SIDE).contains(&o.input_size) {
        return Err(format!("input size {} (8 to {MAX_SIDE})", o.input_size));
    }
    if !(1..=MAX_HIDDEN).contains(&o.hidden) {
        return Err(format!("hidden units {} (1 to {MAX_HIDDEN})", o.hidden));
    }
    arch.check()
        .map_err(|e| format!("{arch} is not a valid network: {e}"))?;
    let n = arch.num_params();
    if n > MAX_PARAMS {
        return Err(format!(
            "{arch} has {n} parameters, more than the {MAX_PARAMS} this program handles"
        ));
    }
    Ok(arch)
}

/// The network the header `b` (at least `HEADER_LEN_2` bytes for codes 3
/// to 5) names, or what is wrong with its options.
fn arch_from_header(b: &[u8]) -> Result<Arch, String> {
    let family =
        Family::by_file_code(b[12]).ok_or_else(|| format!("unknown model code {}", b[12]))?;
    if family.base.lenet().is_some() {
        return Ok(family.base);
    }
    if b.len() < HEADER_LEN_2 {
        return Err(format!("model code {} needs a 64-byte header", b[12]));
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let o = NetOptions {
        blocks: b[44],
        width_div: u16_at(46),
        input_size: u16_at(48),
        hidden: u32::from_le_bytes(b[52..56].try_into().expect("4 bytes")),
    };
    let name = family.name;
    // Options the network does not have must hold what `to_bytes` writes
    // there: 0 blocks, and the defaults for the others.
    let d = NetOptions::default();
    for opt in NetOption::ALL {
        if family.takes(opt) {
            continue;
        }
        let (field, at, want) = match opt {
            NetOption::Blocks => {
                if o.blocks != 0 {
                    return Err(format!(
                        "VGG blocks (byte 44) is {}, but {name} has no blocks (0 expected)",
                        o.blocks
                    ));
                }
                continue;
            }
            NetOption::WidthDiv => ("width divisor", 46, d.get(opt)),
            NetOption::InputSize => ("input side", 48, d.get(opt)),
            NetOption::Hidden => ("hidden units", 52, d.get(opt)),
        };
        let v = o.get(opt);
        if v != want {
            return Err(format!(
                "{field} (byte {at}) is {v}, but {name} has no such option ({want} expected)"
            ));
        }
    }
    arch_from(name, o).map_err(|e| format!("{name} options: {e}"))
}

/// What the header of a model file says, checked.
struct Header {
    len: usize,
    arch: Arch,
    act: Activation,
    flags: u8,
    norm: Normalization,
    payload_len: u64,
    payload_crc: u32,
}

impl Header {
    /// The largest payload a file with this header can legitimately have:
    /// the parameters, and for a checkpoint two optimizer moments, the
    /// fixed fields and at most [`MAX_JSON_LEN`] of JSON.
    fn max_payload(&self) -> u64 {
        let p = 4 * self.arch.num_params() as u64;
        if self.flags & FLAG_CHECKPOINT != 0 {
            3 * p + 4 + 8 + 8 + 8 + 8 + 8 + MAX_JSON_LEN
        } else {
            p
        }
    }

    /// Checks the header at the start of `b` (which may hold more) and
    /// bounds what it claims, before anything is allocated from it.
    fn parse(path: &Path, b: &[u8]) -> Result<Header, ModelFileError> {
        let p = || path.to_owned();
        let size = |msg: String| ModelFileError::Size { path: p(), msg };
        let invalid = |msg: String| ModelFileError::Invalid { path: p(), msg };
        if b.len() < MAGIC.len() || b[..8] != MAGIC {
            return Err(ModelFileError::BadMagic {
                path: p(),
                found: b[..b.len().min(8)].to_vec(),
            });
        }
        if b.len() < HEADER_LEN {
            return Err(size(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let version = u32_at(8);
        let header_len = match version {
            VERSION => HEADER_LEN,
            VERSION_2 => HEADER_LEN_2,
            _ => {
                return Err(ModelFileError::Version {
                    path: p(),
                    found: version,
                });
            }
        };
        if b.len() < header_len {
            return Err(size(format!(
                "{} bytes, shorter than the {header_len}-byte header",
                b.len()
            )));
        }
        let crc_at = header_len - 4;
        let (stored, computed) = (u32_at(crc_at), crc32fast::hash(&b[..crc_at]));
        if stored != computed {
            return Err(ModelFileError::Checksum {
                path: p(),
                what: "header",
                stored,
                computed,
            });
        }
        let Some(family) = Family::by_file_code(b[12]) else {
            return Err(ModelFileError::Code {
                path: p(),
                what: "model",
                code: b[12],
            });
        };
        // Version 1 holds the LeNets, version 2 the networks with options.
        if family.base.lenet().is_none() != (version == VERSION_2) {
            return Err(invalid(format!(
                "model code {} in a version {version} file",
                b[12]
            )));
        }
        let mut reserved = vec![15];
        if version == VERSION_2 {
            reserved.extend([45, 50, 51, 56, 57, 58, 59]);
        }
        if let Some(&at) = reserved.iter().find(|&&at| b[at] != 0) {
            return Err(invalid(format!(
                "reserved header byte {at} is {}, must be 0",
                b[at]
            )));
        }
        let arch =
            arch_from_header(&b[..header_len]).map_err(|e| invalid(format!("header: {e}")))?;
        let act = act_from_code(b[13]).ok_or(ModelFileError::Code {
            path: p(),
            what: "activation",
            code: b[13],
        })?;
        let flags = b[14];
        if flags & !FLAG_CHECKPOINT != 0 {
            return Err(invalid(format!(
                "flags byte 14 is {flags:#04x}; only bit 0 (checkpoint) is defined"
            )));
        }
        let n_params = u64_at(24);
        let want = arch.num_params() as u64;
        if n_params != want {
            return Err(size(format!(
                "{n_params} parameters, a {arch} model has {want}"
            )));
        }
        let h = Header {
            len: header_len,
            arch,
            act,
            flags,
            norm: Normalization {
                mean: f32_at(16),
                std: f32_at(20),
            },
            payload_len: u64_at(32),
            payload_crc: u32_at(40),
        };
        let max = h.max_payload();
        let ok = if flags & FLAG_CHECKPOINT != 0 {
            h.payload_len <= max
        } else {
            h.payload_len == max
        };
        if !ok {
            return Err(size(format!(
                "header says the payload is {} bytes; a {arch} {} has {}{max}",
                h.payload_len,
                if flags & FLAG_CHECKPOINT != 0 {
                    "checkpoint"
                } else {
                    "model"
                },
                if flags & FLAG_CHECKPOINT != 0 {
                    "at most "
                } else {
                    ""
                },
            )));
        }
        Ok(h)
    }
}

/// Activation code in the file.
pub const fn act_code(act: Activation) -> u8 {
    match act {
        Activation::Sigmoid => 0,
        Activation::Relu => 1,
        Activation::Tanh => 2,
    }
}

fn act_from_code(c: u8) -> Option<Activation> {
    match c {
        0 => Some(Activation::Sigmoid),
        1 => Some(Activation::Relu),
        2 => Some(Activation::Tanh),
        _ => None,
    }
}

/// CLI / metadata name of a model kind.
pub const fn kind_name(kind: ModelKind) -> &'static str {
    kind.name()
}

/// Parses [`kind_name`] output.
pub fn parse_kind(s: &str) -> Option<ModelKind> {
    ModelKind::ALL.into_iter().find(|k| kind_name(*k) == s)
}

/// CLI / metadata name of an activation.
pub const fn act_name(act: Activation) -> &'static str {
    match act {
        Activation::Sigmoid => "sigmoid",
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
    }
}

/// Parses [`act_name`] output.
pub fn parse_act(s: &str) -> Option<Activation> {
    [Activation::Sigmoid, Activation::Relu, Activation::Tanh]
        .into_iter()
        .find(|a| act_name(*a) == s)
}

/// What the weights are for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelMeta {
    /// Network.
    pub arch: Arch,
    /// Hidden activation.
    pub act: Activation,
    /// Input normalization the weights were trained with.
    pub norm: Normalization,
}

/// The state `--resume` restores.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointState {
    /// Epochs completed.
    pub epoch: u32,
    /// Optimizer state.
    pub optimizer: OptimizerState,
    /// Shuffling RNG state after `epoch` epochs.
    pub rng_state: u64,
    /// Training configuration and metric history (JSON).
    pub json: String,
}

/// A model file in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// Kind, activation, normalization.
    pub meta: ModelMeta,
    /// Flat parameters, `state_dict` order.
    pub params: Vec<f32>,
    /// Present in checkpoints.
    pub checkpoint: Option<CheckpointState>,
}

/// Why a model file was rejected. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// Read or write failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a model file.
    #[error("{path}: not a lenet model file (bad magic {found:?})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// First bytes found.
        found: Vec<u8>,
    },
    /// Written by another format version.
    #[error("{path}: format version {found}, this program reads version {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// Header or payload damaged.
    #[error(
        "{path}: {what} checksum mismatch (stored {stored:08x}, computed {computed:08x}); the file is damaged"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// `"header"` or `"payload"`.
        what: &'static str,
        /// CRC in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// Sizes disagree (truncated file, wrong parameter count, ...).
    #[error("{path}: {msg}")]
    Size {
        /// The file.
        path: PathBuf,
        /// Details.
        msg: String,
    },
    /// A value in the file is out of range.
    #[error("{path}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Unknown code in the header.
    #[error("{path}: unknown {what} code {code}")]
    Code {
        /// The file.
        path: PathBuf,
        /// `"model kind"` or `"activation"`.
        what: &'static str,
        /// The code.
        code: u8,
    },
    /// A weight is NaN or infinite.
    #[error("{path}: parameter {index} is {value} (training diverged?)")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Index in the flat parameters.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The file holds another model than the one asked for.
    #[error("{path}: holds a {found} model, expected {expected}")]
    KindMismatch {
        /// The file.
        path: PathBuf,
        /// Model in the file.
        found: Arch,
        /// Model asked for.
        expected: Arch,
    },
    /// A checkpoint was required but the file holds weights only.
    #[error(
        "{path}: holds weights only, not a checkpoint (train writes checkpoint.lenet for --resume)"
    )]
    NotACheckpoint {
        /// The file.
        path: PathBuf,
    },
}

fn put_f32s(b: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
}

impl ModelFile {
    /// Serializes the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.params.len() * 4 + 64);
        put_f32s(&mut payload, &self.params);
        if let Some(c) = &self.checkpoint {
            payload.extend_from_slice(&c.epoch.to_le_bytes());
            payload.extend_from_slice(&c.optimizer.step.to_le_bytes());
            for buf in [&c.optimizer.m, &c.optimizer.v] {
                payload.extend_from_slice(&(buf.len() as u64).to_le_bytes());
                put_f32s(&mut payload, buf);
            }
            payload.extend_from_slice(&c.rng_state.to_le_bytes());
            payload.extend_from_slice(&(c.json.len() as u64).to_le_bytes());
            payload.extend_from_slice(c.json.as_bytes());
        }
        let v2 = self.meta.arch.lenet().is_none();
        let mut b = Vec::with_capacity(HEADER_LEN_2 + payload.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&(if v2 { VERSION_2 } else { VERSION }).to_le_bytes());
        b.push(arch_code(self.meta.arch));
        b.push(act_code(self.meta.act));
        b.push(if self.checkpoint.is_some() {
            FLAG_CHECKPOINT
        } else {
            0
        });
        b.push(0);
        b.extend_from_slice(&self.meta.norm.mean.to_le_bytes());
        b.extend_from_slice(&self.meta.norm.std.to_le_bytes());
        b.extend_from_slice(&(self.params.len() as u64).to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        if v2 {
            let o = NetOptions::of(self.meta.arch);
            b.push(if self.meta.arch.family().takes(NetOption::Blocks) {
                o.blocks
            } else {
                0
            });
            b.push(0);
            b.extend_from_slice(&o.width_div.to_le_bytes());
            b.extend_from_slice(&o.input_size.to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&o.hidden.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
        }
        let hcrc = crc32fast::hash(&b);
        b.extend_from_slice(&hcrc.to_le_bytes());
        debug_assert_eq!(b.len(), if v2 { HEADER_LEN_2 } else { HEADER_LEN });
        b.extend_from_slice(&payload);
        b
    }

    /// Writes the file atomically (temporary sibling + rename).
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, path: &Path) -> Result<(), ModelFileError> {
        write_atomic(path, &self.to_bytes()).map_err(|source| ModelFileError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and fully validates a file.
    ///
    /// # Errors
    /// See [`ModelFileError`].
    pub fn load(path: &Path) -> Result<Self, ModelFileError> {
        use std::io::Read;
        let io = |source| ModelFileError::Io {
            path: path.to_owned(),
            source,
        };
        // One open, without blocking on a FIFO; the header is read first
        // and checked, and the file is then read only up to the exact size
        // the header allows, checked against the file's size first.
        let (mut f, meta) = crate::fsutil::open_input(path).map_err(io)?;
        let mut head = Vec::with_capacity(HEADER_LEN_2);
        (&mut f)
            .take(HEADER_LEN_2 as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        let h = Header::parse(path, &head)?;
        let total = h.len as u64 + h.payload_len;
        if meta.is_file() && meta.len() != total {
            return Err(ModelFileError::Size {
                path: path.to_owned(),
                msg: format!(
                    "payload is {} bytes, header says {}{}",
                    meta.len().saturating_sub(h.len as u64),
                    h.payload_len,
                    if meta.len() < total {
                        " (truncated)"
                    } else {
                        ""
                    }
                ),
            });
        }
        let b = crate::fsutil::read_rest(f, head, total, total).map_err(io)?;
        Self::from_bytes(path, &b)
    }

    /// Reads a file and checks it holds a `kind` model.
    ///
    /// # Errors
    /// As [`ModelFile::load`], plus [`ModelFileError::KindMismatch`].
    pub fn load_expecting(path: &Path, arch: impl Into<Arch>) -> Result<Self, ModelFileError> {
        let arch = arch.into();
        let f = Self::load(path)?;
        if f.meta.arch != arch {
            return Err(ModelFileError::KindMismatch {
                path: path.to_owned(),
                found: f.meta.arch,
                expected: arch,
            });
        }
        Ok(f)
    }

    /// Parses and validates bytes; `path` is only used in errors.
    ///
    /// # Errors
    /// See [`ModelFileError`].
    pub fn from_bytes(path: &Path, b: &[u8]) -> Result<Self, ModelFileError> {
        let p = || path.to_owned();
        let size = |msg: String| ModelFileError::Size { path: p(), msg };
        let h = Header::parse(path, b)?;
        let (arch, act, flags, norm) = (h.arch, h.act, h.flags, h.norm);
        let payload_len = h.payload_len;
        let n_params = arch.num_params() as u64;
        let payload = &b[h.len..];
        if payload.len() as u64 != payload_len {
            return Err(size(format!(
                "payload is {} bytes, header says {payload_len}{}",
                payload.len(),
                if (payload.len() as u64) < payload_len {
                    " (truncated)"
                } else {
                    ""
                }
            )));
        }
        let (stored, computed) = (h.payload_crc, crc32fast::hash(payload));
        if stored != computed {
            return Err(ModelFileError::Checksum {
                path: p(),
                what: "payload",
                stored,
                computed,
            });
        }
        let mut r = Cursor { b: payload, at: 0 };
        let bad = |msg: &str| size(format!("checkpoint section: {msg}"));
        let params = r
            .f32s(n_params)
            .ok_or_else(|| bad("parameters cut short"))?;
        if let Some((index, &value)) = params.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ModelFileError::NonFinite {
                path: p(),
                index,
                value,
            });
        }
        if !norm.is_valid() {
            return Err(ModelFileError::Invalid {
                path: p(),
                msg: format!(
                    "invalid normalization mean {} / std {} (mean finite, std in [1e-4, 1e4])",
                    norm.mean, norm.std
                ),
            });
        }
        let checkpoint = if flags & FLAG_CHECKPOINT != 0 {
            let epoch = r.u32().ok_or_else(|| bad("epoch missing"))?;
            let step = r.u64().ok_or_else(|| bad("step missing"))?;
            let mlen = r.u64().ok_or_else(|| bad("m length missing"))?;
            let m = r.f32s(mlen).ok_or_else(|| bad("m cut short"))?;
            let vlen = r.u64().ok_or_else(|| bad("v length missing"))?;
            let v = r.f32s(vlen).ok_or_else(|| bad("v cut short"))?;
            for buf in [&m, &v] {
                if !buf.is_empty() && buf.len() as u64 != n_params {
                    return Err(bad(
                        "optimizer buffer length differs from the parameter count",
                    ));
                }
            }
            let rng_state = r.u64().ok_or_else(|| bad("RNG state missing"))?;
            let jlen = r.u64().ok_or_else(|| bad("JSON length missing"))?;
            let json = r
                .bytes(jlen)
                .and_then(|j| String::from_utf8(j.to_vec()).ok())
                .ok_or_else(|| bad("JSON cut short or not UTF-8"))?;
            Some(CheckpointState {
                epoch,
                optimizer: OptimizerState { step, m, v },
                rng_state,
                json,
            })
        } else {
            None
        };
        if r.at != payload.len() {
            return Err(size(format!(
                "{} unexpected bytes after the payload",
                payload.len() - r.at
            )));
        }
        Ok(Self {
            meta: ModelMeta { arch, act, norm },
            params,
            checkpoint,
        })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, n: u64) -> Option<&[u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn f32s(&mut self, n: u64) -> Option<Vec<f32>> {
        let b = self.bytes(n.checked_mul(4)?)?;
        Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: ModelKind, checkpoint: bool) -> ModelFile {
        let n = expected_params(kind);
        let params: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        ModelFile {
            meta: ModelMeta {
                arch: kind.into(),
                act: Activation::Relu,
                norm: Normalization::STANDARD,
            },
            checkpoint: checkpoint.then(|| CheckpointState {
                epoch: 3,
                optimizer: OptimizerState {
                    step: 1234,
                    m: params.iter().map(|x| x * 0.1).collect(),
                    v: params.iter().map(|x| x * x).collect(),
                },
                rng_state: 0xDEAD_BEEF_1234_5678,
                json: r#"{"lr":0.001}"#.to_string(),
            }),
            params,
        }
    }

    #[test]
    fn networks_with_options_round_trip_in_version_2() {
        use lenet_core::model::AlexNetConfig;
        let d = tempfile::tempdir().unwrap();
        let archs = [
            Arch::Cnn,
            Arch::Vgg(VggConfig {
                blocks: 3,
                width_div: 16,
                size: 28,
                hidden: 64,
            }),
            Arch::AlexNet(AlexNetConfig {
                width_div: 16,
                size: 96,
                hidden: 32,
            }),
        ];
        for arch in archs {
            let n = arch.num_params();
            let f = ModelFile {
                meta: ModelMeta {
                    arch,
                    act: Activation::Relu,
                    norm: Normalization::STANDARD,
                },
                params: (0..n).map(|i| (i as f32).cos()).collect(),
                checkpoint: None,
            };
            let b = f.to_bytes();
            assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), VERSION_2);
            assert_eq!(b.len(), HEADER_LEN_2 + 4 * n);
            let p = d.path().join("m.lenet");
            f.save(&p).unwrap();
            assert_eq!(ModelFile::load(&p).unwrap(), f);
            assert!(matches!(
                ModelFile::load_expecting(&p, ModelKind::LeNet5),
                Err(ModelFileError::KindMismatch { .. })
            ));
            if arch == Arch::Cnn {
                continue;
            }
            // Options that give no network are refused, naming the file.
            let mut bad = b.clone();
            bad[48..50].copy_from_slice(&4u16.to_le_bytes()); // input side 4
            let crc = crc32fast::hash(&bad[..60]);
            bad[60..64].copy_from_slice(&crc.to_le_bytes());
            let e = ModelFile::from_bytes(Path::new("dir/bad.lenet"), &bad).unwrap_err();
            let e = e.to_string();
            assert!(
                e.starts_with("dir/bad.lenet: header: ") && e.contains("input size 4"),
                "{e}"
            );
        }
    }

    /// A version 2 header edited by `f`, its CRC rewritten.
    fn edit_v2(arch: Arch, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let n = arch.num_params();
        let mut b = ModelFile {
            meta: ModelMeta {
                arch,
                act: Activation::Relu,
                norm: Normalization::STANDARD,
            },
            params: vec![0.5; n],
            checkpoint: None,
        }
        .to_bytes();
        f(&mut b);
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn header_nonsense_is_refused_naming_the_field() {
        // Reserved bytes, version 1 and 2.
        let mut b = sample(ModelKind::LeNet5, false).to_bytes();
        b[15] = 1;
        fix_header_crc(&mut b);
        let e = err(&b).to_string();
        assert!(
            e.contains("dir/bad.lenet") && e.contains("reserved header byte 15"),
            "{e}"
        );
        for at in [45, 50, 51, 56, 59] {
            let b = edit_v2(Arch::Cnn, |b| b[at] = 7);
            let e = err(&b).to_string();
            assert!(
                e.contains(&format!("reserved header byte {at} is 7")),
                "{e}"
            );
        }
        // Undefined flag bits.
        let mut b = sample(ModelKind::LeNet5, false).to_bytes();
        b[14] = 0x81;
        fix_header_crc(&mut b);
        assert!(err(&b).to_string().contains("flags byte 14"));
        // Options the network does not have: `cnn` with 9 VGG blocks, or
        // another input side; `alexnet` with blocks.
        let e = err(&edit_v2(Arch::Cnn, |b| b[44] = 9)).to_string();
        assert!(
            e.contains("VGG blocks (byte 44) is 9, but cnn has no blocks"),
            "{e}"
        );
        let e = err(&edit_v2(Arch::Cnn, |b| {
            b[48..50].copy_from_slice(&96u16.to_le_bytes())
        }))
        .to_string();
        assert!(e.contains("input side (byte 48) is 96, but cnn"), "{e}");
        let alex = Arch::AlexNet(lenet_core::model::AlexNetConfig {
            width_div: 16,
            size: 96,
            hidden: 32,
        });
        let e = err(&edit_v2(alex, |b| b[44] = 2)).to_string();
        assert!(e.contains("but alexnet has no blocks"), "{e}");
        // An option out of range is named, not "unknown model code 4".
        let vgg = Arch::Vgg(VggConfig {
            blocks: 2,
            width_div: 16,
            size: 32,
            hidden: 32,
        });
        let e = err(&edit_v2(vgg, |b| b[44] = 7)).to_string();
        assert!(e.contains("vgg options: vgg blocks 7 (1 to 5)"), "{e}");
    }

    /// A header claiming a network of billions of parameters, or a file
    /// longer than its header allows, is refused from the header and the
    /// file's size, before the payload is read (the files are sparse: a
    /// read of them would take minutes and gigabytes).
    #[test]
    fn huge_claims_are_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let vgg = Arch::Vgg(VggConfig {
            blocks: 2,
            width_div: 16,
            size: 32,
            hidden: 32,
        });
        // vgg at 512x512 with 16384 hidden units: 2.2e9 parameters.
        let b = edit_v2(vgg, |b| {
            b[44] = 5;
            b[46..48].copy_from_slice(&1u16.to_le_bytes());
            b[48..50].copy_from_slice(&512u16.to_le_bytes());
            b[52..56].copy_from_slice(&16384u32.to_le_bytes());
            let p = 2_200_000_000u64;
            b[24..32].copy_from_slice(&p.to_le_bytes());
            b[32..40].copy_from_slice(&(4 * p).to_le_bytes());
        });
        let huge = d.path().join("huge.lenet");
        std::fs::write(&huge, &b[..HEADER_LEN_2]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
        f.set_len(HEADER_LEN_2 as u64 + 4 * 2_200_000_000).unwrap();
        drop(f);
        let t = std::time::Instant::now();
        let e = ModelFile::load(&huge).unwrap_err().to_string();
        assert!(
            e.contains("huge.lenet") && e.contains("parameters, more than the"),
            "{e}"
        );
        // A valid header, then gigabytes more than it gives.
        let good = edit_v2(vgg, |_| {});
        let long = d.path().join("long.lenet");
        std::fs::write(&long, &good).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&long).unwrap();
        f.set_len(6 << 30).unwrap();
        drop(f);
        let e = ModelFile::load(&long).unwrap_err().to_string();
        assert!(e.contains("long.lenet") && e.contains("header says"), "{e}");
        // A checkpoint header claiming a payload beyond what its network
        // can have.
        let b = edit_v2(vgg, |b| {
            b[14] = 1;
            b[32..40].copy_from_slice(&(5u64 << 30).to_le_bytes());
        });
        let claim = d.path().join("claim.lenet");
        std::fs::write(&claim, &b[..HEADER_LEN_2]).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&claim)
            .unwrap();
        f.set_len(HEADER_LEN_2 as u64 + (5 << 30)).unwrap();
        drop(f);
        let e = ModelFile::load(&claim).unwrap_err().to_string();
        assert!(e.contains("claim.lenet") && e.contains("at most"), "{e}");
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    }

    #[test]
    fn round_trips_weights_and_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        for kind in ModelKind::ALL {
            for ck in [false, true] {
                let f = sample(kind, ck);
                let p = d.path().join("m.lenet");
                f.save(&p).unwrap();
                let g = ModelFile::load_expecting(&p, kind).unwrap();
                assert_eq!(g, f);
                // Bit-exact parameters.
                assert!(
                    f.params
                        .iter()
                        .zip(&g.params)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                );
            }
        }
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    fn err(b: &[u8]) -> ModelFileError {
        ModelFile::from_bytes(Path::new("dir/bad.lenet"), b).unwrap_err()
    }

    /// Rewrites the header CRC after a deliberate header edit.
    fn fix_header_crc(b: &mut [u8]) {
        let c = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn every_corruption_is_a_clear_error_naming_the_file() {
        let good = sample(ModelKind::LeNet5, true).to_bytes();

        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(err(&b), ModelFileError::BadMagic { .. }));
        assert!(matches!(err(b"short"), ModelFileError::BadMagic { .. }));
        assert!(matches!(err(&good[..20]), ModelFileError::Size { .. }));

        let mut b = good.clone();
        b[8] = 3;
        fix_header_crc(&mut b);
        let e = err(&b);
        assert!(matches!(e, ModelFileError::Version { found: 3, .. }), "{e}");

        let mut b = good.clone();
        b[13] ^= 1; // header edit without fixing the CRC
        assert!(matches!(
            err(&b),
            ModelFileError::Checksum { what: "header", .. }
        ));

        let mut b = good.clone();
        b[12] = 9;
        fix_header_crc(&mut b);
        assert!(matches!(err(&b), ModelFileError::Code { code: 9, .. }));

        let mut b = good.clone();
        b[HEADER_LEN + 100] ^= 0x40; // one flipped bit in a weight
        let e = err(&b);
        assert!(
            matches!(
                e,
                ModelFileError::Checksum {
                    what: "payload",
                    ..
                }
            ),
            "{e}"
        );

        let e = err(&good[..good.len() - 1]);
        assert!(e.to_string().contains("truncated"), "{e}");

        // Kind in the header that does not fit the parameter count.
        let mut b = good.clone();
        b[12] = arch_code(ModelKind::LeNet5Max.into());
        fix_header_crc(&mut b);
        assert!(matches!(err(&b), ModelFileError::Size { .. }));

        // NaN weight with consistent checksums (written by a diverged run).
        let mut f = sample(ModelKind::LeNet5, false);
        f.params[7] = f32::NAN;
        let e = err(&f.to_bytes());
        assert!(
            matches!(e, ModelFileError::NonFinite { index: 7, .. }),
            "{e}"
        );
        f.params[7] = f32::INFINITY;
        assert!(matches!(
            err(&f.to_bytes()),
            ModelFileError::NonFinite { .. }
        ));

        // Kind mismatch on load.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("max.lenet");
        sample(ModelKind::LeNet5Max, false).save(&p).unwrap();
        let e = ModelFile::load_expecting(&p, ModelKind::LeNet5).unwrap_err();
        assert!(matches!(e, ModelFileError::KindMismatch { .. }));
        assert!(e.to_string().contains("max.lenet"));

        // Missing file.
        let e = ModelFile::load(&d.path().join("none.lenet")).unwrap_err();
        assert!(matches!(e, ModelFileError::Io { .. }) && e.to_string().contains("none.lenet"));

        // Every error names the file.
        for b in [&good[..3], &good[..good.len() - 4]] {
            assert!(err(b).to_string().contains("dir/bad.lenet"));
        }
    }
}
