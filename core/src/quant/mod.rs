//! int8 inference in the TFLite quantization scheme: the one integer
//! reference shared by the workstation and the Cortex-M4 firmware.
//!
//! This is the readable reference implementation. Faster kernels (CMSIS-style
//! SIMD on the M4) live elsewhere and must equal it bit for bit; the building
//! blocks they need ([`requantize`], [`conv_acc`], [`avg_pool_round`],
//! [`lut_index`]) are public for that reason.
//!
//! # Quantization scheme
//!
//! A real value `r` is stored as an int8 `q` with `r = scale * (q - zero_point)`.
//!
//! | tensor | scheme |
//! |---|---|
//! | weights | int8, symmetric **per output channel**: zero point 0, `s_w[c] = max(abs(w[c])) / 127`, values in `[-127, 127]` |
//! | bias | int32, scale `s_in * s_w[c]`, zero point 0 |
//! | activations | int8 **per tensor**, asymmetric: `scale = (max - min) / 255`, `zp = round(-128 - min / scale)`, from min/max calibration with the range widened to include 0 |
//! | input | raw pixel `p` in `0..=255` becomes `q = p - 128`; the float model sees `x = (p / 255 - mean) / std`, so `scale = 1 / (255 std)`, `zp = round(255 mean - 128)` |
//! | (input, cont.) | when `255 mean` is not an integer the rounded zero point shifts every input by under half a step (Fashion-MNIST's `mean = 0.2860`: 0.07 step, 0.0008 in normalized units) |
//! | sigmoid out | scale 1/256, zero point -128 (fixed, as TFLite `LOGISTIC`) |
//! | tanh out | scale 1/128, zero point 0 (fixed, as TFLite `TANH`) |
//! | ReLU out | the pre-activation quantization, calibrated on the ReLU output (range `[0, max]`, so zp = -128); the activation is the clamp at the zero point |
//! | pooling | keeps scale and zero point |
//! | logits | int8 with their own calibrated scale/zp; the argmax is the prediction |
//!
//! A convolution or linear layer computes, per output channel `c`,
//! `acc = bias[c] + sum w[c][k] * (x[k] - zp_in)` in int32 (wrapping, like
//! the int32 registers of the MCU; real models are far from overflowing),
//! then `requantize(acc, multiplier[c], shift[c], zp_pre)` with the Q31
//! multiplier of `s_in * s_w[c] / s_pre`, then the activation's 256-entry
//! lookup table ([`activation_lut`], computed at quantization time, so the
//! run time is integer-only; for ReLU the table is `max(q, zp)`). Padding
//! of a convolution pads with the input zero point (TFLite semantics), so a
//! padded tap adds exactly 0 and is skipped. Average pooling sums the int8
//! values and divides rounding half away from zero ([`avg_pool_round`], as
//! TFLM's integer `AveragePool`); max pooling takes the max.
//!
//! # Rounding variant of the requantization
//!
//! [`multiply_by_quantized_multiplier`] implements the **double rounding**
//! form: `rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x <<
//! left, multiplier), right)` with `left = max(shift, 0)`, `right =
//! max(-shift, 0)`; the high multiply rounds ties towards `+inf` (as ARM's
//! `SQRDMULH`), the shift rounds ties away from zero. It is the
//! default of both TFLM's reference `MultiplyByQuantizedMultiplier` (unless
//! built with `TFLITE_SINGLE_ROUNDING`) and CMSIS-NN's `arm_nn_requantize`
//! (unless built with `CMSIS_NN_USE_SINGLE_ROUNDING`), so a model quantized
//! here runs bit-exactly on either stock build. The two defaults differ only
//! for `multiplier == i32::MIN`, where CMSIS-NN's non-saturating doubling
//! multiply overflows; multipliers are never negative here (`0` or `[2^30,
//! 2^31)`), so they agree on every value this crate produces. The left
//! shift saturates instead of overflowing (undefined behaviour in C); the
//! int8 output saturates in either case.
//!
//! # Memory
//!
//! [`QuantLeNet`] is plain `const`-sized arrays (about 66 KB for
//! [`QuantLeNet5`], 49 KB for [`QuantLeNet5Max`], 91 KB for
//! [`QuantLeNet5Wide`], close to their `.q8` sizes), so it can be a
//! `static` in flash.
//! Inference needs only [`Scratch`] (**2816 bytes**: the pooled conv1 map,
//! up to 16x12x12, and the pooled conv2 map, up to 32x4x4, reused for the
//! linear layers),
//! the 784-byte image and a few words of stack: convolution, activation and
//! 2x2 pooling are fused per pooled pixel, so the 4.7 KB conv1 output map
//! never exists.
//!
//! # The `.q8` file format (version 1)
//!
//! All integers little-endian; floats are IEEE-754 `f32` bit patterns.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"LQ8M"` |
//! | 4 | 2 | format version, `u16` = 1 |
//! | 6 | 1 | architecture: 0 = LeNet-5 (pad 2, avg pool, fc1 400), 1 = LeNet-5 d2l variant (no pad, max pool, fc1 256), 2 = the d2l variant with 16 and 32 channels (fc1 512) |
//! | 7 | 1 | activation: 0 = sigmoid, 1 = ReLU, 2 = tanh |
//! | 8 | 4 | total file length in bytes, `u32` (including the CRC) |
//! | 12 | 24 | shapes, 12 x `u16`: input C, H, W; conv1 out channels, kernel, padding; conv2 out channels, kernel; fc1 in, fc1 out; fc2 out; classes |
//! | 36 | 8 | input normalization `mean`, `std` (`f32`) |
//! | 44 | 80 | 10 x (`scale: f32`, `zero_point: i32`): input, act1 pre/out, act2 pre/out, act3 pre/out, act4 pre/out, logits |
//! | 124 | ... | layers conv1, conv2, fc1, fc2, fc3, each: weights `i8` in PyTorch layout (`[out][in][kh][kw]` / `[out][in]`), then per output channel `weight_scale: f32`, `bias: i32`, `multiplier: i32`, `shift: i32` (four arrays, one after the other) |
//! | ... | 1024 | lookup tables of act1..act4, 256 x `i8` each, entry `i` for input `i - 128` |
//! | end - 4 | 4 | CRC-32 (IEEE, as zlib and `crc32fast`) of every byte before it |
//!
//! Total: [`encoded_len`] (66 398 bytes for LeNet-5, 49 118 for the d2l
//! variant, 90 904 for the wide one). [`QuantModel::from_bytes`] / [`QuantLeNet::from_bytes`] check,
//! in this order: length of a header, magic, version, declared length,
//! checksum, architecture, activation, shapes, parameter ranges, and name the
//! first failure in a [`QuantError`].
//!
//! # Examples
//!
//! ```
//! use lenet_core::quant::{QuantLeNet5, Scratch};
//! // A model of zeros (all-zero weights and biases) still runs end to end.
//! static MODEL: QuantLeNet5 = QuantLeNet5::zeroed();
//! let mut scratch = Scratch::new();
//! let logits = MODEL.infer(&mut scratch, &[0u8; 784]);
//! assert_eq!(logits, [0i8; 10]);
//! ```

mod convert;
mod crc32;
mod format;
mod lut;
mod net;
mod requant;
#[cfg(test)]
mod tests;

pub use convert::{Ranges, num_float_params};
pub use crc32::{crc32, crc32_update};
pub use format::{FORMAT_VERSION, HEADER_LEN, MAGIC, encoded_len};
pub use lut::{SIGMOID_OUTPUT, TANH_OUTPUT, activation_lut, activation_output, lut_index};
pub use net::{
    PoolKind, QAct, QConv2d, QInput, QLinear, QuantLeNet, QuantLeNet5, QuantLeNet5Max,
    QuantLeNet5Wide, Scratch, argmax, avg_pool_round, conv_acc, conv_act_pool, linear_act,
};
pub use requant::{
    multiply_by_quantized_multiplier, quantize_multiplier, requantize, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};

use core::fmt;

/// Quantization of one tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    /// Real value of one int8 step.
    pub scale: f32,
    /// int8 value that stands for real 0 (`-128..=127`).
    pub zero_point: i32,
}

impl QParams {
    /// Scale 1, zero point 0.
    pub const fn unit() -> Self {
        Self {
            scale: 1.0,
            zero_point: 0,
        }
    }

    /// Asymmetric int8 parameters covering `[min, max]` widened to include 0
    /// (TFLite's `ChooseQuantizationParams`). A range of only 0 gets scale 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use lenet_core::quant::QParams;
    /// let q = QParams::from_min_max(0.0, 2.55);
    /// assert_eq!(q.zero_point, -128);
    /// assert!((q.scale - 0.01).abs() < 1e-7);
    /// // -128 + 127.5 = -0.5 rounds half away from zero.
    /// assert_eq!(QParams::from_min_max(-1.0, 1.0).zero_point, -1);
    /// ```
    pub fn from_min_max(min: f32, max: f32) -> Self {
        let min = f64::from(min.min(0.0));
        let max = f64::from(max.max(0.0));
        if max - min <= 0.0 || !(max - min).is_finite() {
            return Self::unit();
        }
        let scale = ((max - min) / 255.0) as f32;
        let zp = libm::round(-128.0 - min / f64::from(scale));
        Self {
            scale,
            zero_point: zp.clamp(-128.0, 127.0) as i32,
        }
    }

    /// Parameters of the raw-pixel input `q = p - 128` for a float model
    /// trained on `x = (p / 255 - mean) / std`.
    pub fn input(mean: f32, std: f32) -> Self {
        let zp = libm::round(255.0 * f64::from(mean) - 128.0);
        Self {
            scale: (1.0 / (255.0 * f64::from(std))) as f32,
            zero_point: zp.clamp(-128.0, 127.0) as i32,
        }
    }

    /// `scale * (q - zero_point)`.
    pub fn dequantize(self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }
}

/// Which LeNet-5 the model is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantArch {
    /// Classic LeNet-5: Conv(1,6,5,pad 2) act AvgPool2, Conv(6,16,5) act
    /// AvgPool2, 400 -> 120 act -> 84 act -> 10.
    LeNet5,
    /// The d2l variant: no padding, MaxPool2, 256 -> 120 act -> 84 act -> 10.
    LeNet5Max,
    /// The d2l variant with 16 and 32 channels: Conv(1,16,5) act MaxPool2,
    /// Conv(16,32,5) act MaxPool2, 512 -> 120 act -> 84 act -> 10.
    LeNet5Wide,
}

impl QuantArch {
    /// Every int8 architecture.
    pub const ALL: [QuantArch; 3] = [Self::LeNet5, Self::LeNet5Max, Self::LeNet5Wide];

    /// The float model kind it quantizes.
    pub const fn kind(self) -> crate::model::ModelKind {
        use crate::model::ModelKind;
        match self {
            Self::LeNet5 => ModelKind::LeNet5,
            Self::LeNet5Max => ModelKind::LeNet5Max,
            Self::LeNet5Wide => ModelKind::LeNet5Wide,
        }
    }

    /// Format byte: the [`q8_code`](crate::model::Family::q8_code) of the
    /// network's family.
    pub const fn code(self) -> u8 {
        match crate::model::Arch::LeNet(self.kind()).family().q8_code {
            Some(c) => c,
            // Every LeNet family has one (checked at compile time below).
            None => u8::MAX,
        }
    }

    /// From the format byte.
    pub const fn from_code(code: u8) -> Option<Self> {
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i].code() == code {
                return Some(Self::ALL[i]);
            }
            i += 1;
        }
        None
    }

    /// Length of the flattened conv features (fc1 input).
    pub const fn flat(self) -> usize {
        match self {
            Self::LeNet5 => 400,
            Self::LeNet5Max => 256,
            Self::LeNet5Wide => 512,
        }
    }

    /// Output channels of conv1 and conv2.
    pub const fn channels(self) -> (usize, usize) {
        match self {
            Self::LeNet5 | Self::LeNet5Max => (6, 16),
            Self::LeNet5Wide => (16, 32),
        }
    }

    /// conv1 padding.
    pub const fn conv1_padding(self) -> usize {
        match self {
            Self::LeNet5 => 2,
            Self::LeNet5Max | Self::LeNet5Wide => 0,
        }
    }
}

/// The hidden activation of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantAct {
    /// Logistic sigmoid (lookup table, output 1/256, zp -128).
    Sigmoid,
    /// ReLU (clamp at the zero point).
    Relu,
    /// Hyperbolic tangent (lookup table, output 1/128, zp 0).
    Tanh,
}

impl QuantAct {
    /// Format byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::Sigmoid => 0,
            Self::Relu => 1,
            Self::Tanh => 2,
        }
    }

    /// From the format byte.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Sigmoid),
            1 => Some(Self::Relu),
            2 => Some(Self::Tanh),
            _ => None,
        }
    }
}

// Every int8 architecture has a `.q8` code in the family table.
const _: () = {
    let mut i = 0;
    while i < QuantArch::ALL.len() {
        assert!(
            crate::model::Arch::LeNet(QuantArch::ALL[i].kind())
                .family()
                .q8_code
                .is_some()
        );
        i += 1;
    }
};

impl TryFrom<crate::model::ModelKind> for QuantArch {
    type Error = QuantError;

    /// The int8 architecture of a float model (every model has one).
    fn try_from(k: crate::model::ModelKind) -> Result<Self, QuantError> {
        match k {
            crate::model::ModelKind::LeNet5 => Ok(Self::LeNet5),
            crate::model::ModelKind::LeNet5Max => Ok(Self::LeNet5Max),
            crate::model::ModelKind::LeNet5Wide => Ok(Self::LeNet5Wide),
        }
    }
}

impl From<QuantArch> for crate::model::ModelKind {
    fn from(a: QuantArch) -> Self {
        match a {
            QuantArch::LeNet5 => Self::LeNet5,
            QuantArch::LeNet5Max => Self::LeNet5Max,
            QuantArch::LeNet5Wide => Self::LeNet5Wide,
        }
    }
}

impl From<crate::activation::Activation> for QuantAct {
    fn from(a: crate::activation::Activation) -> Self {
        match a {
            crate::activation::Activation::Sigmoid => Self::Sigmoid,
            crate::activation::Activation::Relu => Self::Relu,
            crate::activation::Activation::Tanh => Self::Tanh,
        }
    }
}

impl From<QuantAct> for crate::activation::Activation {
    fn from(a: QuantAct) -> Self {
        match a {
            QuantAct::Sigmoid => Self::Sigmoid,
            QuantAct::Relu => Self::Relu,
            QuantAct::Tanh => Self::Tanh,
        }
    }
}

/// Why a `.q8` file was rejected (or could not be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantError {
    /// Shorter than a header plus checksum.
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The first four bytes are not [`MAGIC`].
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A format version this build cannot read.
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
    },
    /// Length differs from the one declared in the header or required by
    /// the architecture (truncated or padded file).
    SizeMismatch {
        /// Length required.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// The CRC-32 does not match the content.
    ChecksumMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the content.
        computed: u32,
    },
    /// Unknown architecture byte.
    UnknownArch {
        /// Byte found.
        found: u8,
    },
    /// A valid file of the other architecture.
    WrongArch {
        /// Architecture of the target type.
        expected: QuantArch,
        /// Architecture in the file.
        found: QuantArch,
    },
    /// Unknown activation byte.
    UnknownActivation {
        /// Byte found.
        found: u8,
    },
    /// A shape field does not match the architecture.
    ShapeMismatch {
        /// Which field.
        field: &'static str,
        /// Value the architecture requires.
        expected: u16,
        /// Value in the file.
        found: u16,
    },
    /// A quantization parameter is out of range (non-positive or non-finite
    /// scale, zero point outside int8, negative multiplier, shift outside
    /// `-31..=30`).
    InvalidParameter {
        /// Which parameter.
        what: &'static str,
    },
    /// The float model has no int8 architecture (no current model: every
    /// [`ModelKind`](crate::model::ModelKind) has one).
    NoInt8Model {
        /// The float model.
        kind: crate::model::ModelKind,
    },
    /// The output buffer given to a writer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(f, "not a .q8 model: {len} bytes is shorter than the header")
            }
            Self::BadMagic { found } => write!(
                f,
                "not a .q8 model: magic {found:02x?}, expected {MAGIC:02x?} (\"LQ8M\")"
            ),
            Self::UnsupportedVersion { found } => write!(
                f,
                ".q8 format version {found} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            Self::SizeMismatch { expected, found } => write!(
                f,
                ".q8 model has {found} bytes, expected {expected} (truncated or corrupted file)"
            ),
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                ".q8 checksum mismatch: stored CRC-32 {stored:#010x}, content has {computed:#010x} (corrupted file)"
            ),
            Self::UnknownArch { found } => write!(f, ".q8 model has unknown architecture {found}"),
            Self::WrongArch { expected, found } => {
                write!(f, ".q8 model is {found:?}, expected {expected:?}")
            }
            Self::UnknownActivation { found } => {
                write!(f, ".q8 model has unknown activation {found}")
            }
            Self::ShapeMismatch {
                field,
                expected,
                found,
            } => write!(f, ".q8 shape {field} is {found}, expected {expected}"),
            Self::InvalidParameter { what } => {
                write!(f, ".q8 model has an invalid quantization parameter: {what}")
            }
            Self::NoInt8Model { kind } => write!(f, "{kind} has no int8 model"),
            Self::BufferTooSmall { needed, len } => {
                write!(
                    f,
                    "buffer of {len} bytes cannot hold a {needed}-byte .q8 model"
                )
            }
        }
    }
}

impl core::error::Error for QuantError {}

/// An int8 LeNet-5 of either architecture, for code that learns which one
/// from the file.
#[derive(Clone, Debug, PartialEq)]
// Both variants are large by design (no heap in this crate); a host caller
// that wants it small boxes the whole enum.
#[allow(clippy::large_enum_variant)]
pub enum QuantModel {
    /// Classic LeNet-5.
    LeNet5(QuantLeNet5),
    /// The d2l variant.
    LeNet5Max(QuantLeNet5Max),
    /// The d2l variant with 16 and 32 channels.
    LeNet5Wide(QuantLeNet5Wide),
}

impl QuantModel {
    /// Architecture.
    pub const fn arch(&self) -> QuantArch {
        match self {
            Self::LeNet5(_) => QuantArch::LeNet5,
            Self::LeNet5Max(_) => QuantArch::LeNet5Max,
            Self::LeNet5Wide(_) => QuantArch::LeNet5Wide,
        }
    }

    /// Hidden activation.
    pub const fn act(&self) -> QuantAct {
        match self {
            Self::LeNet5(m) => m.act,
            Self::LeNet5Max(m) => m.act,
            Self::LeNet5Wide(m) => m.act,
        }
    }

    /// Input quantization (derived from the normalization).
    pub const fn input(&self) -> QParams {
        match self {
            Self::LeNet5(m) => m.input,
            Self::LeNet5Max(m) => m.input,
            Self::LeNet5Wide(m) => m.input,
        }
    }

    /// Logit quantization.
    pub const fn logits(&self) -> QParams {
        match self {
            Self::LeNet5(m) => m.logits,
            Self::LeNet5Max(m) => m.logits,
            Self::LeNet5Wide(m) => m.logits,
        }
    }

    /// int8 logits of a raw 28x28 image; see [`QuantLeNet::infer`].
    pub fn infer(&self, scratch: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
        match self {
            Self::LeNet5(m) => m.infer(scratch, image),
            Self::LeNet5Max(m) => m.infer(scratch, image),
            Self::LeNet5Wide(m) => m.infer(scratch, image),
        }
    }

    /// Predicted class (argmax of the int8 logits, first on ties).
    pub fn predict(&self, scratch: &mut Scratch, image: &[u8; 784]) -> usize {
        argmax(&self.infer(scratch, image))
    }

    /// Quantize a float model of `arch`; see [`QuantLeNet::quantize_into`].
    ///
    /// # Errors
    ///
    /// As [`QuantLeNet::quantize_into`].
    pub fn quantize(
        arch: QuantArch,
        act: QuantAct,
        params: &[f32],
        ranges: &Ranges,
        mean: f32,
        std: f32,
    ) -> Result<Self, QuantError> {
        Ok(match arch {
            QuantArch::LeNet5 => {
                let mut m = QuantLeNet5::zeroed();
                m.quantize_into(act, params, ranges, mean, std)?;
                Self::LeNet5(m)
            }
            QuantArch::LeNet5Max => {
                let mut m = QuantLeNet5Max::zeroed();
                m.quantize_into(act, params, ranges, mean, std)?;
                Self::LeNet5Max(m)
            }
            QuantArch::LeNet5Wide => {
                let mut m = QuantLeNet5Wide::zeroed();
                m.quantize_into(act, params, ranges, mean, std)?;
                Self::LeNet5Wide(m)
            }
        })
    }

    /// Size of the `.q8` encoding.
    pub const fn encoded_len(&self) -> usize {
        encoded_len(self.arch())
    }

    /// Parse a `.q8` file of either architecture.
    ///
    /// # Errors
    ///
    /// The first problem found, see [`QuantError`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuantError> {
        match format::peek_arch(bytes)? {
            QuantArch::LeNet5 => QuantLeNet5::from_bytes(bytes).map(Self::LeNet5),
            QuantArch::LeNet5Max => QuantLeNet5Max::from_bytes(bytes).map(Self::LeNet5Max),
            QuantArch::LeNet5Wide => QuantLeNet5Wide::from_bytes(bytes).map(Self::LeNet5Wide),
        }
    }

    /// Write the `.q8` encoding into `out`, returning the bytes written.
    ///
    /// # Errors
    ///
    /// [`QuantError::BufferTooSmall`] if `out` is shorter than
    /// [`Self::encoded_len`].
    pub fn write_bytes(&self, out: &mut [u8]) -> Result<usize, QuantError> {
        match self {
            Self::LeNet5(m) => m.write_bytes(out),
            Self::LeNet5Max(m) => m.write_bytes(out),
            Self::LeNet5Wide(m) => m.write_bytes(out),
        }
    }
}
