//! Learning on the device: a frozen int8 trunk feeds an `f32` head that
//! keeps training, one labelled image at a time, in fixed buffers.
//!
//! The trunk is a [`QuantLeNet`] (integer only, its weights in flash); the
//! head is its last layer ([`Fc3Head`]) or its last two layers
//! ([`Fc23Head`]) in `f32`, initialised from the int8 layers' real values
//! and trained with this crate's [`linear`](crate::linear) and
//! [`activation`](crate::activation) backward, the [`cross_entropy`] loss
//! and an [`Optimizer`] ([`Sgd`](crate::optim::Sgd) or
//! [`Adam`](crate::optim::Adam)), batch size 1.
//!
//! Every step is plain IEEE single precision (additions and products in
//! the order the code writes them, no fused multiply-add, `libm` for
//! `exp`, `ln` and `pow`), so a Cortex-M4F and a workstation that see the
//! same images in the same order end with the same head, bit for bit.
//!
//! # RAM
//!
//! Bytes, from `size_of` (the example below pins them):
//!
//! | buffer | [`Fc3Head`] (850 parameters) | [`Fc23Head`] (11 014 parameters) |
//! |---|---:|---:|
//! | head | 3 400 | 44 060 |
//! | gradients (a second head) | 3 400 | 44 060 |
//! | [`SgdState`](crate::optim::SgdState) | 3 404 | 44 064 |
//! | [`AdamState`](crate::optim::AdamState) | 6 804 | 88 124 |
//! | input features, activations | 336 | 816 |
//! | **learning with SGD** | **10 540** | **133 000** |
//!
//! ```
//! use core::mem::size_of;
//! use lenet_core::head::{Fc3Head, Fc23Head, Head};
//! use lenet_core::optim::{AdamState, SgdState};
//! fn sgd<H: Head>() -> usize {
//!     2 * size_of::<H>() + size_of::<SgdState<H>>() + size_of::<H::Input>() + size_of::<H::Acts>()
//! }
//! assert_eq!((size_of::<Fc3Head>(), size_of::<Fc23Head>()), (3_400, 44_060));
//! assert_eq!(size_of::<AdamState<Fc3Head>>(), 6_804);
//! assert_eq!(size_of::<AdamState<Fc23Head>>(), 88_124);
//! assert_eq!((sgd::<Fc3Head>(), sgd::<Fc23Head>()), (10_540, 133_000));
//! ```
//!
//! # The head file (version 1)
//!
//! What a device learned, in a form the workstation reads back. All
//! integers little-endian, values IEEE-754 `f32` bit patterns.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"LQ8H"` |
//! | 4 | 2 | format version, `u16` = 1 |
//! | 6 | 1 | head: 0 = fc3 ([`Fc3Head`]), 1 = fc2 and fc3 ([`Fc23Head`]) |
//! | 7 | 1 | hidden activation of [`Fc23Head`] (0 = sigmoid, 1 = ReLU, 2 = tanh; 0 for [`Fc3Head`]) |
//! | 8 | 4 | CRC-32 of the trunk's `.q8` file (its last four bytes), so a head is never paired with another trunk |
//! | 12 | 4 | number of values `P`, `u32` |
//! | 16 | 4 P | the values, tensor after tensor in `state_dict` order (weight `[out][in]`, then bias) |
//! | 16 + 4 P | 4 | CRC-32 of every byte before it |
//!
//! # Examples
//!
//! ```
//! use lenet_core::head::{Fc3Head, Head, train_step};
//! use lenet_core::optim::{Sgd, SgdState};
//! use lenet_core::quant::QuantLeNet5;
//!
//! static TRUNK: QuantLeNet5 = QuantLeNet5::zeroed();
//! let mut head = Fc3Head::from_model(&TRUNK);
//! let mut grads = Fc3Head::ZERO;
//! let mut state = SgdState::new(Fc3Head::ZERO);
//! let x = [0.5f32; 84]; // the trunk's fc2 activations, dequantized
//! let first = train_step(&mut head, &mut grads, &mut (), &Sgd::new(0.1), &mut state, &x, 3);
//! let again = train_step(&mut head, &mut grads, &mut (), &Sgd::new(0.1), &mut state, &x, 3);
//! assert!(again < first);
//! assert_eq!(lenet_core::head::predict(&head, &mut (), &x), 3);
//! ```

use crate::activation::Activation;
use crate::linear::{linear, linear_backward};
use crate::loss::{cross_entropy, cross_entropy_backward};
use crate::optim::{Optimizer, Parameters};
use crate::quant::{QLinear, QParams, QuantAct, QuantLeNet, crc32_update};
use core::fmt;

/// Classes (outputs of every head).
pub const CLASSES: usize = 10;
/// First four bytes of a head file.
pub const HEAD_MAGIC: [u8; 4] = *b"LQ8H";
/// Head file version written and read by this build.
pub const HEAD_VERSION: u16 = 1;
/// Bytes of a head file before the values.
pub const HEAD_HEADER_LEN: usize = 16;
/// Largest magnitude of a value read from a head file. The int8 trunk's
/// layers are a few units at most in real values and a device's SGD moves
/// them little; a value past this (or NaN, or infinite) comes from a
/// diverged or damaged head, and products of 120 such inputs would
/// overflow `f32` on the way to the logits.
pub const MAX_HEAD_VALUE: f32 = 1.0e6;

/// A fully connected layer in `f32`: `y = x w^T + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<const I: usize, const O: usize> {
    /// Weight. // (O, I)
    pub w: [[f32; I]; O],
    /// Bias. // (O,)
    pub b: [f32; O],
}

impl<const I: usize, const O: usize> Dense<I, O> {
    /// All zeros (can be a `static`).
    pub const ZERO: Self = Self {
        w: [[0.0; I]; O],
        b: [0.0; O],
    };

    /// Sets the layer to the real values of an int8 layer whose input has
    /// scale `s_in`: `w = weight_scale[o] * q`,
    /// `b = bias_q[o] * (s_in * weight_scale[o])`. In place, so a layer in
    /// a `static` needs no copy of itself on the stack.
    pub fn set_from_quant(&mut self, fc: &QLinear<O, I>, s_in: f32) {
        for o in 0..O {
            let s = fc.weight_scale[o];
            for (w, &q) in self.w[o].iter_mut().zip(&fc.weight[o]) {
                *w = s * f32::from(q);
            }
            self.b[o] = fc.bias[o] as f32 * (s_in * s);
        }
    }
}

impl<const I: usize, const O: usize> Parameters for Dense<I, O> {
    fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        [self.w.as_flattened(), &self.b[..]].into_iter()
    }
    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        [self.w.as_flattened_mut(), &mut self.b[..]].into_iter()
    }
}

/// Which trunk output a head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tap {
    /// The fc1 activations (120 values): the head replaces fc2 and fc3.
    Fc1,
    /// The fc2 activations (84 values): the head replaces fc3.
    Fc2,
}

/// A trainable head over a frozen [`QuantLeNet`] trunk.
pub trait Head: Parameters + Sized {
    /// Head kind in the head file.
    const CODE: u8;
    /// Names of the tensors, in the order of [`Parameters::tensors`].
    const TENSORS: &'static [&'static str];
    /// All-zero parameters (for gradients and optimizer state; a `static`).
    const ZERO: Self;
    /// The trunk output the head reads.
    const TAP: Tap;
    /// Input features: `[f32; 84]` or `[f32; 120]`.
    type Input: AsRef<[f32]> + AsMut<[f32]>;
    /// What forward keeps for backward (hidden activations), or `()`.
    type Acts;
    /// All-zero input features.
    const ZERO_INPUT: Self::Input;
    /// All-zero activations.
    const ZERO_ACTS: Self::Acts;

    /// Sets the head, in place, to the layers of the int8 trunk `m`, in
    /// real values (for a head in a `static`: no copy on the stack).
    fn set_from_model<const FLAT: usize, const C1: usize, const C2: usize>(
        &mut self,
        m: &QuantLeNet<FLAT, C1, C2>,
    );
    /// The head as the int8 trunk `m` computes it, in real values.
    fn from_model<const FLAT: usize, const C1: usize, const C2: usize>(
        m: &QuantLeNet<FLAT, C1, C2>,
    ) -> Self {
        let mut h = Self::ZERO;
        h.set_from_model(m);
        h
    }
    /// The quantization of the trunk output the head reads.
    fn input_quant<const FLAT: usize, const C1: usize, const C2: usize>(
        m: &QuantLeNet<FLAT, C1, C2>,
    ) -> QParams;
    /// Hidden activation code in the head file (0 when there is none).
    fn act_code(&self) -> u8;
    /// Sets the hidden activation from its head-file code (ignored when
    /// there is none); `false` for an unknown code.
    fn set_act_code(&mut self, code: u8) -> bool;
    /// Logits of `x`, keeping in `acts` what [`Head::backward`] needs.
    fn forward(&self, acts: &mut Self::Acts, x: &Self::Input) -> [f32; CLASSES];
    /// Accumulates (`+=`) into `grads` the gradient of the loss whose
    /// gradient with respect to the logits is `dlogits`, after
    /// [`Head::forward`] of the same `x` filled `acts`.
    fn backward(
        &self,
        grads: &mut Self,
        acts: &Self::Acts,
        x: &Self::Input,
        dlogits: &[f32; CLASSES],
    );
}

/// The last layer, fc3 (84 -> 10), over the trunk's fc2 activations.
#[derive(Clone, Debug, PartialEq)]
pub struct Fc3Head {
    /// Linear(84, 10).
    pub fc3: Dense<84, CLASSES>,
}

impl Parameters for Fc3Head {
    fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        self.fc3.tensors()
    }
    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.fc3.tensors_mut()
    }
}

impl Head for Fc3Head {
    const CODE: u8 = 0;
    const TENSORS: &'static [&'static str] = &["fc3.weight", "fc3.bias"];
    const ZERO: Self = Self { fc3: Dense::ZERO };
    const TAP: Tap = Tap::Fc2;
    type Input = [f32; 84];
    type Acts = ();
    const ZERO_INPUT: [f32; 84] = [0.0; 84];
    const ZERO_ACTS: () = ();

    fn set_from_model<const FLAT: usize, const C1: usize, const C2: usize>(
        &mut self,
        m: &QuantLeNet<FLAT, C1, C2>,
    ) {
        self.fc3.set_from_quant(&m.fc3, m.act4.out.scale);
    }

    fn input_quant<const FLAT: usize, const C1: usize, const C2: usize>(
        m: &QuantLeNet<FLAT, C1, C2>,
    ) -> QParams {
        m.act4.out
    }

    fn act_code(&self) -> u8 {
        0
    }

    fn set_act_code(&mut self, code: u8) -> bool {
        code == 0
    }

    fn forward(&self, _: &mut (), x: &[f32; 84]) -> [f32; CLASSES] {
        let mut z = [0.0; CLASSES];
        linear(&mut z, x, &self.fc3.w, Some(&self.fc3.b));
        z
    }

    fn backward(&self, grads: &mut Self, _: &(), x: &[f32; 84], dlogits: &[f32; CLASSES]) {
        // dL/dw = dz x^T, dL/db = dz
        let g = &mut grads.fc3;
        linear_backward(None, &mut g.w, Some(&mut g.b), dlogits, x, &self.fc3.w);
    }
}

/// The last two layers, fc2 (120 -> 84), its activation and fc3 (84 -> 10),
/// over the trunk's fc1 activations.
#[derive(Clone, Debug, PartialEq)]
pub struct Fc23Head {
    /// Activation after fc2 (the trunk's).
    pub act: Activation,
    /// Linear(120, 84).
    pub fc2: Dense<120, 84>,
    /// Linear(84, 10).
    pub fc3: Dense<84, CLASSES>,
}

impl Parameters for Fc23Head {
    fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        self.fc2.tensors().chain(self.fc3.tensors())
    }
    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        self.fc2.tensors_mut().chain(self.fc3.tensors_mut())
    }
}

impl Head for Fc23Head {
    const CODE: u8 = 1;
    const TENSORS: &'static [&'static str] = &["fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"];
    const ZERO: Self = Self {
        act: Activation::Sigmoid,
        fc2: Dense::ZERO,
        fc3: Dense::ZERO,
    };
    const TAP: Tap = Tap::Fc1;
    type Input = [f32; 120];
    /// The fc2 activations. // (84,)
    type Acts = [f32; 84];
    const ZERO_INPUT: [f32; 120] = [0.0; 120];
    const ZERO_ACTS: [f32; 84] = [0.0; 84];

    fn set_from_model<const FLAT: usize, const C1: usize, const C2: usize>(
        &mut self,
        m: &QuantLeNet<FLAT, C1, C2>,
    ) {
        self.act = m.act.into();
        self.fc2.set_from_quant(&m.fc2, m.act3.out.scale);
        self.fc3.set_from_quant(&m.fc3, m.act4.out.scale);
    }

    fn input_quant<const FLAT: usize, const C1: usize, const C2: usize>(
        m: &QuantLeNet<FLAT, C1, C2>,
    ) -> QParams {
        m.act3.out
    }

    fn act_code(&self) -> u8 {
        QuantAct::from(self.act).code()
    }

    fn set_act_code(&mut self, code: u8) -> bool {
        match QuantAct::from_code(code) {
            Some(a) => {
                self.act = a.into();
                true
            }
            None => false,
        }
    }

    fn forward(&self, h: &mut [f32; 84], x: &[f32; 120]) -> [f32; CLASSES] {
        linear(h, x, &self.fc2.w, Some(&self.fc2.b));
        self.act.forward_in_place(h);
        let mut z = [0.0; CLASSES];
        linear(&mut z, h, &self.fc3.w, Some(&self.fc3.b));
        z
    }

    fn backward(&self, grads: &mut Self, h: &[f32; 84], x: &[f32; 120], dlogits: &[f32; CLASSES]) {
        // fc3: dL/dw3 = dz h^T, dL/db3 = dz, dL/dh = w3^T dz
        let mut dh = [0.0f32; 84];
        let g3 = &mut grads.fc3;
        linear_backward(
            Some(&mut dh),
            &mut g3.w,
            Some(&mut g3.b),
            dlogits,
            h,
            &self.fc3.w,
        );
        // act: dL/da = dL/dh * act'(a), from the output h
        let mut da = [0.0f32; 84];
        self.act.backward(&mut da, &dh, h);
        // fc2: dL/dw2 = da x^T, dL/db2 = da
        let g2 = &mut grads.fc2;
        linear_backward(None, &mut g2.w, Some(&mut g2.b), &da, x, &self.fc2.w);
    }
}

/// Dequantizes trunk outputs given minus their zero point (`q - zp`, as
/// the Cortex-M4 kernels keep them) into `x`: `x[i] = scale * centred[i]`,
/// exactly [`QParams::dequantize`].
///
/// # Panics
///
/// If `centred` yields fewer values than `x` holds.
pub fn dequantize(x: &mut [f32], scale: f32, centred: impl IntoIterator<Item = i32>) {
    let mut it = centred.into_iter();
    for xi in x {
        let c = it.next().expect("dequantize: too few trunk outputs");
        *xi = scale * c as f32;
    }
}

/// The head's input features of `image`: runs the int8 trunk (lenet-core's
/// integer reference) and dequantizes the output [`Head::TAP`] names.
pub fn features<H: Head, const FLAT: usize>(
    x: &mut H::Input,
    m: &QuantLeNet<FLAT>,
    scratch: &mut crate::quant::Scratch,
    image: &[u8; 784],
) {
    m.infer(scratch, image);
    let q = H::input_quant(m);
    // `infer` leaves the fc1 activations in `scratch.a`, fc2's in `scratch.b`.
    let out: &[i8] = match H::TAP {
        Tap::Fc1 => &scratch.a[..],
        Tap::Fc2 => &scratch.b[..],
    };
    dequantize(
        x.as_mut(),
        q.scale,
        out.iter().map(|&v| i32::from(v) - q.zero_point),
    );
}

/// One training step on one labelled sample: clears `grads`, runs
/// [`Head::forward`], the [`cross_entropy`] backward, [`Head::backward`]
/// and `opt`'s update. Returns the sample's loss before the update.
///
/// # Panics
///
/// If `label >= 10`.
pub fn train_step<H: Head, O: Optimizer>(
    head: &mut H,
    grads: &mut H,
    acts: &mut H::Acts,
    opt: &O,
    state: &mut O::State<H>,
    x: &H::Input,
    label: usize,
) -> f32 {
    grads.fill(0.0);
    let z = head.forward(acts, x);
    let loss = cross_entropy(&z, label);
    let mut dz = [0.0f32; CLASSES];
    cross_entropy_backward(&mut dz, &z, label, 1.0);
    head.backward(grads, acts, x, &dz);
    opt.step(head, grads, state);
    loss
}

/// Learning rate of step `step` (from 0) of `total` on a half-cosine from
/// `lr` down to 0: `lr * (1 + cos(pi * step / total)) / 2`, with `libm`'s
/// `cosf`, so every target computes the same value.
///
/// A stream that is seen once learns its last images fastest unless the
/// rate decays; the decay keeps the head from forgetting the old classes.
///
/// # Examples
///
/// ```
/// use lenet_core::head::cosine_lr;
/// assert_eq!(cosine_lr(0.1, 0, 100), 0.1);
/// assert!((cosine_lr(0.1, 50, 100) - 0.05).abs() < 1e-7);
/// ```
pub fn cosine_lr(lr: f32, step: usize, total: usize) -> f32 {
    let t = step as f32 / total.max(1) as f32;
    lr * (0.5 * (1.0 + libm::cosf(core::f32::consts::PI * t)))
}

/// Predicted class of `x`: the largest logit, the first on ties.
pub fn predict<H: Head>(head: &H, acts: &mut H::Acts, x: &H::Input) -> usize {
    let z = head.forward(acts, x);
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// Why a head file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// Not the length this head's file has.
    Length {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The first four bytes are not `b"LQ8H"`.
    Magic,
    /// A format version this build does not read.
    Version(u16),
    /// A head kind other than the one asked for.
    Kind {
        /// Kind expected.
        expected: u8,
        /// Kind in the file.
        actual: u8,
    },
    /// An unknown hidden activation code.
    Activation(u8),
    /// The parameter count (bytes 12..16) is not this head's.
    Count {
        /// Parameters of the head.
        expected: u32,
        /// Count in the file.
        actual: u32,
    },
    /// A value is NaN, infinite or larger than [`MAX_HEAD_VALUE`].
    Value {
        /// Name of its tensor ([`Head::TENSORS`]).
        tensor: &'static str,
        /// Index in the flat tensor.
        index: usize,
        /// The value's bits.
        bits: u32,
    },
    /// The checksum does not match the contents.
    Checksum,
    /// The head was learned on another trunk.
    Trunk {
        /// CRC-32 of the trunk given.
        expected: u32,
        /// CRC-32 recorded in the head file.
        actual: u32,
    },
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Length { expected, actual } => {
                write!(f, "head file is {actual} bytes, expected {expected}")
            }
            Self::Magic => f.write_str("not a head file (magic is not LQ8H)"),
            Self::Version(v) => write!(f, "head file version {v}, this build reads {HEAD_VERSION}"),
            Self::Kind { expected, actual } => {
                write!(f, "head kind {actual}, expected {expected}")
            }
            Self::Activation(a) => write!(f, "unknown hidden activation code {a}"),
            Self::Count { expected, actual } => write!(
                f,
                "parameter count (bytes 12..16) is {actual}, this head has {expected}"
            ),
            Self::Value {
                tensor,
                index,
                bits,
            } => write!(
                f,
                "{tensor}[{index}] is {:?} (values must be finite and at most {MAX_HEAD_VALUE:e} in magnitude)",
                f32::from_bits(bits)
            ),
            Self::Checksum => f.write_str("head file checksum mismatch"),
            Self::Trunk { expected, actual } => write!(
                f,
                "head learned on the trunk with CRC-32 {actual:#010x}, not this one ({expected:#010x})"
            ),
        }
    }
}

impl core::error::Error for HeadError {}

/// Length of the head file of `head`.
pub fn head_file_len<H: Head>(head: &H) -> usize {
    HEAD_HEADER_LEN + 4 * head.num_params() + 4
}

/// Writes the head file of `head`, learned on the trunk whose `.q8` file
/// has CRC-32 `trunk_crc`, to `sink` piece by piece (at most 64 bytes at a
/// time, so no buffer of the whole file is needed).
pub fn write_head<H: Head, E>(
    head: &H,
    trunk_crc: u32,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut header = [0u8; HEAD_HEADER_LEN];
    header[..4].copy_from_slice(&HEAD_MAGIC);
    header[4..6].copy_from_slice(&HEAD_VERSION.to_le_bytes());
    header[6] = H::CODE;
    header[7] = head.act_code();
    header[8..12].copy_from_slice(&trunk_crc.to_le_bytes());
    header[12..16].copy_from_slice(&(head.num_params() as u32).to_le_bytes());
    let mut crc = crc32_update(0, &header);
    sink(&header)?;
    let mut buf = [0u8; 64];
    for t in head.tensors() {
        for chunk in t.chunks(16) {
            for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                b.copy_from_slice(&v.to_le_bytes());
            }
            let bytes = &buf[..4 * chunk.len()];
            crc = crc32_update(crc, bytes);
            sink(bytes)?;
        }
    }
    sink(&crc.to_le_bytes())
}

/// Reads a head file into `head` (of the kind the file must hold) and
/// checks that it was learned on the trunk whose `.q8` file has CRC-32
/// `trunk_crc`.
///
/// # Errors
///
/// A [`HeadError`] naming the first check that failed: length, magic,
/// version, checksum, kind, activation, trunk.
pub fn read_head<H: Head>(head: &mut H, bytes: &[u8], trunk_crc: u32) -> Result<(), HeadError> {
    let expected = head_file_len(head);
    if bytes.len() != expected {
        return Err(HeadError::Length {
            expected,
            actual: bytes.len(),
        });
    }
    if bytes[..4] != HEAD_MAGIC {
        return Err(HeadError::Magic);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != HEAD_VERSION {
        return Err(HeadError::Version(version));
    }
    let (body, tail) = bytes.split_at(expected - 4);
    if crc32_update(0, body).to_le_bytes() != tail {
        return Err(HeadError::Checksum);
    }
    if bytes[6] != H::CODE {
        return Err(HeadError::Kind {
            expected: H::CODE,
            actual: bytes[6],
        });
    }
    let count = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let expected_count = head.num_params() as u32;
    if count != expected_count {
        return Err(HeadError::Count {
            expected: expected_count,
            actual: count,
        });
    }
    if !head.set_act_code(bytes[7]) {
        return Err(HeadError::Activation(bytes[7]));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if crc != trunk_crc {
        return Err(HeadError::Trunk {
            expected: trunk_crc,
            actual: crc,
        });
    }
    // Every value is checked before the head is changed.
    let mut values = body[HEAD_HEADER_LEN..].chunks_exact(4);
    for (t, &tensor) in head.tensors().zip(H::TENSORS) {
        for (index, b) in (0..t.len()).zip(&mut values) {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if v.is_nan() || v.abs() > MAX_HEAD_VALUE {
                return Err(HeadError::Value {
                    tensor,
                    index,
                    bits: v.to_bits(),
                });
            }
        }
    }
    let mut values = body[HEAD_HEADER_LEN..].chunks_exact(4);
    for t in head.tensors_mut() {
        for (v, b) in t.iter_mut().zip(&mut values) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamState, Sgd, SgdState};
    use crate::quant::QuantLeNet5;

    fn trunk() -> Box<QuantLeNet5> {
        let mut m = Box::new(QuantLeNet5::zeroed());
        m.act = QuantAct::Sigmoid;
        for (o, row) in m.fc3.weight.iter_mut().enumerate() {
            for (i, w) in row.iter_mut().enumerate() {
                *w = ((o * 7 + i * 3) % 11) as i8 - 5;
            }
        }
        for (o, row) in m.fc2.weight.iter_mut().enumerate() {
            for (i, w) in row.iter_mut().enumerate() {
                *w = ((o * 5 + i) % 9) as i8 - 4;
            }
        }
        m.fc3.weight_scale = [0.02; 10];
        m.fc2.weight_scale = [0.05; 84];
        m.fc3.bias = core::array::from_fn(|o| o as i32 * 100 - 400);
        m.act3.out = QParams {
            scale: 1.0 / 256.0,
            zero_point: -128,
        };
        m.act4.out = m.act3.out;
        m
    }

    #[test]
    fn from_quant_is_the_real_value_of_the_int8_layer() {
        let m = trunk();
        let h = Fc3Head::from_model(&*m);
        assert_eq!(h.fc3.w[1][2], 0.02 * f32::from(m.fc3.weight[1][2]));
        assert_eq!(h.fc3.b[9], 500.0 * (0.02 / 256.0));
        let h2 = Fc23Head::from_model(&*m);
        assert_eq!(h2.act, Activation::Sigmoid);
        assert_eq!(h2.fc3, h.fc3);
        assert_eq!(h2.num_params(), 11_014);
    }

    /// Both heads learn to separate two fixed inputs; the two-layer head's
    /// backward matches central differences of its loss.
    #[test]
    fn heads_learn_and_fc23_backward_matches_finite_differences() {
        let m = trunk();
        let xa: [f32; 84] = core::array::from_fn(|i| (i % 7) as f32 / 7.0);
        let xb: [f32; 84] = core::array::from_fn(|i| (i % 5) as f32 / 5.0);
        let mut h = Fc3Head::from_model(&*m);
        let (mut g, mut st) = (Fc3Head::ZERO, AdamState::new(Fc3Head::ZERO));
        for _ in 0..50 {
            train_step(&mut h, &mut g, &mut (), &Adam::new(1e-2), &mut st, &xa, 2);
            train_step(&mut h, &mut g, &mut (), &Adam::new(1e-2), &mut st, &xb, 7);
        }
        assert_eq!(predict(&h, &mut (), &xa), 2);
        assert_eq!(predict(&h, &mut (), &xb), 7);

        let h2 = Fc23Head::from_model(&*m);
        let x: [f32; 120] = core::array::from_fn(|i| (i % 13) as f32 / 13.0);
        let loss = |h: &Fc23Head| f64::from(cross_entropy(&h.forward(&mut [0.0; 84], &x), 4));
        let mut acts = [0.0; 84];
        let z = h2.forward(&mut acts, &x);
        let mut dz = [0.0; CLASSES];
        cross_entropy_backward(&mut dz, &z, 4, 1.0);
        let mut g2 = Box::new(Fc23Head::ZERO);
        h2.backward(&mut g2, &acts, &x, &dz);
        let eps = 1e-2f32;
        for (o, i) in [(0, 0), (3, 17), (83, 119)] {
            let (mut p, mut q) = (h2.clone(), h2.clone());
            p.fc2.w[o][i] += eps;
            q.fc2.w[o][i] -= eps;
            let num = (loss(&p) - loss(&q)) / (2.0 * f64::from(eps));
            assert!(
                (f64::from(g2.fc2.w[o][i]) - num).abs() < 1e-3,
                "fc2.w[{o}][{i}]"
            );
        }
        let mut h2 = h2;
        let mut st2 = Box::new(SgdState::new(Fc23Head::ZERO));
        let before = loss(&h2);
        train_step(&mut h2, &mut g2, &mut acts, &Sgd::new(0.5), &mut st2, &x, 4);
        assert!(loss(&h2) < before);
    }

    #[test]
    fn head_file_round_trips_and_rejects_damage() {
        let m = trunk();
        let h = Fc23Head::from_model(&*m);
        let mut file = Vec::new();
        write_head(&h, 0xDEAD_BEEF, |b| {
            assert!(b.len() <= 64);
            file.extend_from_slice(b);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(file.len(), head_file_len(&h));
        assert_eq!(file.len(), 16 + 4 * 11_014 + 4);
        let mut back = Box::new(Fc23Head::ZERO);
        back.act = Activation::Relu;
        read_head(&mut *back, &file, 0xDEAD_BEEF).unwrap();
        assert_eq!(*back, h);
        assert_eq!(
            read_head(&mut *back, &file, 1),
            Err(HeadError::Trunk {
                expected: 1,
                actual: 0xDEAD_BEEF
            })
        );
        let mut bad = file.clone();
        bad[100] ^= 1;
        assert_eq!(
            read_head(&mut *back, &bad, 0xDEAD_BEEF),
            Err(HeadError::Checksum)
        );
        let mut small = Fc3Head::ZERO;
        assert!(matches!(
            read_head(&mut small, &file, 0xDEAD_BEEF),
            Err(HeadError::Length { .. })
        ));
        assert_eq!(
            read_head(&mut *back, &file[..10], 0),
            Err(HeadError::Length {
                expected: file.len(),
                actual: 10
            })
        );
    }

    /// A head file with a valid checksum but NaN, infinite or huge values,
    /// or a parameter count that is not the head's, is refused naming the
    /// tensor and index (or the count), and the head is left as it was.
    #[test]
    fn head_file_with_nonsense_values_or_count_is_refused() {
        let h = Fc23Head::from_model(&*trunk());
        let mut file = Vec::new();
        write_head(&h, 7, |b| {
            file.extend_from_slice(b);
            Ok::<_, ()>(())
        })
        .unwrap();
        let recrc = |f: &mut Vec<u8>| {
            let n = f.len() - 4;
            let c = crc32_update(0, &f[..n]);
            f[n..].copy_from_slice(&c.to_le_bytes());
        };
        // fc2.weight has 120 * 84 values and fc2.bias 84: the value at
        // flat position 120 * 84 + 84 + 5 is fc3.weight[5].
        let at = |k: usize| HEAD_HEADER_LEN + 4 * k;
        for (k, v, tensor, index) in [
            (3, f32::NAN, "fc2.weight", 3),
            (120 * 84 + 1, f32::INFINITY, "fc2.bias", 1),
            (120 * 84 + 84 + 5, 3e38, "fc3.weight", 5),
            (11_013, -2e6, "fc3.bias", 9),
        ] {
            let mut bad = file.clone();
            bad[at(k)..at(k) + 4].copy_from_slice(&v.to_le_bytes());
            recrc(&mut bad);
            let mut back = Box::new(Fc23Head::ZERO);
            let e = read_head(&mut *back, &bad, 7).unwrap_err();
            assert_eq!(
                e,
                HeadError::Value {
                    tensor,
                    index,
                    bits: v.to_bits()
                }
            );
            assert_eq!(*back, Fc23Head::ZERO, "head changed on error");
            let msg = format!("{e}");
            assert!(msg.starts_with(&format!("{tensor}[{index}] is ")), "{msg}");
        }
        let mut bad = file.clone();
        bad[12..16].copy_from_slice(&11_015u32.to_le_bytes());
        recrc(&mut bad);
        let mut back = Box::new(Fc23Head::ZERO);
        assert_eq!(
            read_head(&mut *back, &bad, 7),
            Err(HeadError::Count {
                expected: 11_014,
                actual: 11_015
            })
        );
    }
}
