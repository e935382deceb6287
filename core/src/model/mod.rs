//! LeNet-5 models: parameters, activations, forward, backward and training
//! steps, all in fixed-size structs that need no heap.
//!
//! Three models share the [`Model`] trait:
//!
//! - [`LeNet5`]: the classic network as in PyTorch/d2l,
//!   `Conv(1,6,5,pad 2) act AvgPool2 -> Conv(6,16,5) act AvgPool2 -> 400
//!   -> 120 act -> 84 act -> 10`;
//! - [`LeNet5Max`]: the variant without padding and with max pooling,
//!   `Conv(1,6,5) act MaxPool2 -> Conv(6,16,5) act MaxPool2 -> 256 -> 120
//!   act -> 84 act -> 10`;
//! - [`LeNet5Wide`]: the same with 16 and 32 channels (512 flattened
//!   features, 85 822 parameters), the widest LeNet of this shape under
//!   100k parameters that keeps 120 and 84 hidden units in round numbers.
//!
//! Each has three plain structs with every buffer's shape beside it:
//! `Params` (also used for gradients and optimizer state), `Activations`
//! (what forward keeps for backward) and, inside `backward`, a stack
//! scratch of the same order of size as the activations. All have
//! `const fn zeroed()`, so they can be `static`s on the microcontroller and
//! live in a `Box` on the workstation.
//!
//! Parameter tensors are visited (see [`Parameters`]) in the order of the
//! PyTorch `state_dict` of
//! `nn.Sequential(Conv2d, act, pool, Conv2d, act, pool, Flatten, Linear,
//! act, Linear, act, Linear)`, whose names are [`PARAM_NAMES`].
//!
//! # Examples
//!
//! Inference from a `static` model (all zeros here, so every logit is 0):
//!
//! ```
//! use lenet_core::activation::Activation;
//! use lenet_core::model::{predict, Image, LeNet5, LeNet5Activations, LeNet5Params, Model};
//! static PARAMS: LeNet5Params = LeNet5Params::zeroed();
//! const MODEL: LeNet5 = LeNet5 { act: Activation::Sigmoid };
//! let mut acts = LeNet5Activations::zeroed();
//! let x: Image = [[[0.5; 28]; 28]; 1];
//! assert_eq!(MODEL.forward(&mut acts, &PARAMS, &x), &[0.0; 10]);
//! assert_eq!(predict(&MODEL, &mut acts, &PARAMS, &x), 0); // ties: first class
//! ```
//!
//! One training step (on the workstation the buffers go in a `Box`; on the
//! microcontroller they are `static`s):
//!
//! ```
//! use lenet_core::activation::Activation;
//! use lenet_core::init::Rng;
//! use lenet_core::model::{train_step_batch, Image, LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams, Model};
//! use lenet_core::optim::{Adam, AdamState};
//! let model = LeNet5Max { act: Activation::Relu };
//! let mut params = Box::new(LeNet5MaxParams::zeroed());
//! model.init(&mut params, &mut Rng::new(0));
//! let mut grads = Box::new(LeNet5MaxParams::zeroed());
//! let mut acts = Box::new(LeNet5MaxActivations::zeroed());
//! let opt = Adam::new(1e-3);
//! let mut state = Box::new(AdamState::from_zeros(LeNet5MaxParams::zeroed(), LeNet5MaxParams::zeroed()));
//! let images: [Image; 2] = [[[[0.1; 28]; 28]; 1], [[[0.9; 28]; 28]; 1]];
//! let loss = train_step_batch(&model, &mut params, &mut grads, &mut acts, &opt, &mut state, &images, &[3, 7]);
//! assert!(loss.is_finite() && state.t == 1);
//! ```

mod arch;
mod layers;
mod lenet5;
mod lenet5_max;
mod lenet_params;
mod plan;

pub use arch::{
    AlexNetConfig, Arch, ArchDefaults, FAMILIES, Family, Layers, MAX_LAYERS, NetOption, VggConfig,
};
pub use layers::{INPUT_SHAPE, Layer, Shape3, ShapeError};
pub use plan::{ParamRange, Plan, PlannedLayer, Tensor, TensorKind, TensorName};

pub use lenet5::{LeNet5, LeNet5Activations, LeNet5Params};
pub use lenet5_max::{
    LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams, LeNet5Wide, LeNet5WideActivations,
    LeNet5WideParams, MaxNet, MaxNetActivations, MaxNetParams,
};

use crate::init::Rng;
use crate::loss::{cross_entropy, cross_entropy_backward};
use crate::optim::{Optimizer, Parameters};

/// One input image, `(C, H, W) = (1, 28, 28)`, as PyTorch's `ToTensor()`
/// gives it (values in `[0, 1]`, or normalised).
pub type Image = [[[f32; 28]; 28]; 1];

/// Number of classes (the ten Fashion-MNIST garment classes, 0 to 9).
pub const CLASSES: usize = 10;

/// Names of the parameter tensors in PyTorch `state_dict` order, for every
/// model (indices into the `nn.Sequential`).
pub const PARAM_NAMES: [&str; 10] = [
    "0.weight",
    "0.bias",
    "3.weight",
    "3.bias",
    "7.weight",
    "7.bias",
    "9.weight",
    "9.bias",
    "11.weight",
    "11.bias",
];

/// Which network: the value is the model's id in files and on the wire.
///
/// # Examples
///
/// ```
/// use lenet_core::model::ModelKind;
/// let kind = ModelKind::from_u8(2).unwrap();
/// assert_eq!(kind, ModelKind::LeNet5Max);
/// assert_eq!(kind.name(), "lenet5-max");
/// assert_eq!(ModelKind::parse("lenet5"), Some(ModelKind::LeNet5));
/// assert_eq!(ModelKind::LeNet5.num_params(), 61_706);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ModelKind {
    /// [`LeNet5`]: padding 2, average pooling, 400 flattened features.
    LeNet5 = 1,
    /// [`LeNet5Max`]: no padding, max pooling, 256 flattened features.
    LeNet5Max = 2,
    /// [`LeNet5Wide`]: [`LeNet5Max`] with 16 and 32 channels, 512 flattened
    /// features.
    LeNet5Wide = 3,
}

impl ModelKind {
    /// Every kind, in id order.
    pub const ALL: [ModelKind; 3] = [
        ModelKind::LeNet5,
        ModelKind::LeNet5Max,
        ModelKind::LeNet5Wide,
    ];

    /// Name used on the command line and in files: `"lenet5"`,
    /// `"lenet5-max"` or `"lenet5-wide"`.
    pub const fn name(self) -> &'static str {
        Arch::LeNet(self).name()
    }

    /// The kind with id `id` (1 to 3), or `None`.
    pub const fn from_u8(id: u8) -> Option<ModelKind> {
        match id {
            1 => Some(ModelKind::LeNet5),
            2 => Some(ModelKind::LeNet5Max),
            3 => Some(ModelKind::LeNet5Wide),
            _ => None,
        }
    }

    /// The max-pool kind ([`MaxNet`]) with `n1` and `n2` convolution
    /// channels; a compile-time error in a `const` for other widths.
    pub const fn max_pool(n1: usize, n2: usize) -> ModelKind {
        match (n1, n2) {
            (6, 16) => ModelKind::LeNet5Max,
            (16, 32) => ModelKind::LeNet5Wide,
            _ => panic!("no ModelKind for these channel counts"),
        }
    }

    /// Output channels of the two convolutions: (6, 16) or (16, 32).
    pub const fn channels(self) -> (usize, usize) {
        match self {
            ModelKind::LeNet5 | ModelKind::LeNet5Max => (6, 16),
            ModelKind::LeNet5Wide => (16, 32),
        }
    }

    /// The kind named `s` (see [`name`](Self::name); ASCII case-insensitive), or `None`.
    pub fn parse(s: &str) -> Option<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }

    /// Number of trainable scalars (61 706, 44 426 or 85 822).
    pub const fn num_params(self) -> usize {
        match self {
            ModelKind::LeNet5 => LeNet5Params::NUM_PARAMS,
            ModelKind::LeNet5Max => LeNet5MaxParams::NUM_PARAMS,
            ModelKind::LeNet5Wide => LeNet5WideParams::NUM_PARAMS,
        }
    }

    /// Shapes of the parameter tensors, in [`PARAM_NAMES`] order (the
    /// `SHAPES` of the kind's parameter struct).
    pub const fn shapes(self) -> [&'static [usize]; 10] {
        match self {
            ModelKind::LeNet5 => LeNet5Params::SHAPES,
            ModelKind::LeNet5Max => LeNet5MaxParams::SHAPES,
            ModelKind::LeNet5Wide => LeNet5WideParams::SHAPES,
        }
    }

    /// Number of features after the flatten, the input size of the first
    /// linear layer: 400 (16 x 5 x 5), 256 (16 x 4 x 4) or 512 (32 x 4 x 4).
    pub const fn flat_features(self) -> usize {
        match self {
            ModelKind::LeNet5 => 400,
            ModelKind::LeNet5Max => 256,
            ModelKind::LeNet5Wide => 512,
        }
    }

    /// Whether the network pools by maximum without padding ([`MaxNet`]);
    /// the classic [`LeNet5`] pads and averages.
    pub const fn is_max_pool(self) -> bool {
        !matches!(self, ModelKind::LeNet5)
    }
}

impl core::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of `str::parse::<ModelKind>()`: the name is not `lenet5`,
/// `lenet5-max` or `lenet5-wide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseModelKindError;

impl core::fmt::Display for ParseModelKindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown model (expected lenet5, lenet5-max or lenet5-wide)")
    }
}

impl core::error::Error for ParseModelKindError {}

impl core::str::FromStr for ModelKind {
    type Err = ParseModelKindError;

    /// Same as [`ModelKind::parse`], with an error instead of `None`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::parse(s).ok_or(ParseModelKindError)
    }
}

/// A network mapping an [`Image`] to [`CLASSES`] logits, with its own
/// parameter and activation structs.
pub trait Model {
    /// The parameter tensors; the same type holds gradients and optimizer
    /// state.
    type Params: Parameters + Clone;
    /// What forward keeps for backward.
    type Activations;
    /// Which network this is.
    const KIND: ModelKind;

    /// Forward pass of one image; fills `acts` and returns the logits
    /// (a reference into `acts`).
    fn forward<'a>(
        &self,
        acts: &'a mut Self::Activations,
        params: &Self::Params,
        x: &Image,
    ) -> &'a [f32; CLASSES];

    /// Backward pass of the last [`forward`](Self::forward) (whose results
    /// are in `acts`) from the gradient of the loss with respect to the
    /// logits; *accumulates* (`+=`) into `grads`.
    fn backward(
        &self,
        grads: &mut Self::Params,
        acts: &Self::Activations,
        params: &Self::Params,
        dlogits: &[f32; CLASSES],
    );

    /// PyTorch's default initialisation, layer by layer in `state_dict`
    /// order: weights and biases from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    fn init(&self, params: &mut Self::Params, rng: &mut Rng);
}

/// Index of the largest of `logits`; the first one on ties (as
/// `torch.argmax`). NaNs are never chosen over a number.
///
/// # Examples
///
/// ```
/// assert_eq!(lenet_core::model::argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
/// ```
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || (logits[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

/// The predicted class of `x`: the [`argmax`] of the logits.
pub fn predict<M: Model>(
    model: &M,
    acts: &mut M::Activations,
    params: &M::Params,
    x: &Image,
) -> usize {
    argmax(model.forward(acts, params, x))
}

/// Forward, cross entropy and backward for one sample: adds
/// `scale * dL/dparams` to `grads` and returns the sample's (unscaled) loss
/// `L = cross_entropy(logits, label)`. With `scale = 1/N` over `N` samples,
/// `grads` ends up holding the gradient of the batch mean, as PyTorch's
/// `CrossEntropyLoss()` gives.
///
/// # Panics
///
/// If `label >= CLASSES`.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_gradients<M: Model>(
    model: &M,
    grads: &mut M::Params,
    acts: &mut M::Activations,
    params: &M::Params,
    x: &Image,
    label: u8,
    scale: f32,
) -> f32 {
    let label = label as usize;
    let logits = *model.forward(acts, params, x);
    let loss = cross_entropy(&logits, label);
    let mut dlogits = [0.0f32; CLASSES];
    cross_entropy_backward(&mut dlogits, &logits, label, scale);
    model.backward(grads, acts, params, &dlogits);
    loss
}

/// One optimizer step on one sample: zeroes `grads`, accumulates the
/// sample's gradient, steps. Returns the sample's loss (before the step).
///
/// # Panics
///
/// If `label >= CLASSES` (a programming error for labels the caller
/// produced; for labels read from outside use [`try_train_step_sample`]).
#[allow(clippy::too_many_arguments)]
pub fn train_step_sample<M: Model, O: Optimizer>(
    model: &M,
    params: &mut M::Params,
    grads: &mut M::Params,
    acts: &mut M::Activations,
    opt: &O,
    opt_state: &mut O::State<M::Params>,
    x: &Image,
    label: u8,
) -> f32 {
    grads.fill(0.0);
    let loss = accumulate_gradients(model, grads, acts, params, x, label, 1.0);
    opt.step(params, grads, opt_state);
    loss
}

/// One optimizer step on a batch with the mean cross entropy: zeroes
/// `grads`, accumulates every sample with scale `1/N`, steps. Returns the
/// mean loss (before the step).
///
/// # Panics
///
/// If `images` is empty, if `images` and `labels` differ in length, or if
/// a label is `>= CLASSES` (for data from outside use
/// [`try_train_step_batch`], which returns these as errors).
#[allow(clippy::too_many_arguments)]
pub fn train_step_batch<M: Model, O: Optimizer>(
    model: &M,
    params: &mut M::Params,
    grads: &mut M::Params,
    acts: &mut M::Activations,
    opt: &O,
    opt_state: &mut O::State<M::Params>,
    images: &[Image],
    labels: &[u8],
) -> f32 {
    assert_eq!(
        images.len(),
        labels.len(),
        "train_step_batch: images and labels differ in length"
    );
    assert!(!images.is_empty(), "train_step_batch: empty batch");
    let scale = 1.0 / images.len() as f32;
    grads.fill(0.0);
    let mut loss = 0.0f32;
    for (x, &label) in images.iter().zip(labels) {
        loss += accumulate_gradients(model, grads, acts, params, x, label, scale);
    }
    opt.step(params, grads, opt_state);
    loss * scale
}

/// Why [`try_train_step_sample`] or [`try_train_step_batch`] refused a step
/// (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepError {
    /// A label is not a class index (`>= CLASSES`).
    Label {
        /// Position in the batch.
        index: usize,
        /// The label.
        label: u8,
    },
    /// `images` and `labels` differ in length.
    Length {
        /// Images given.
        images: usize,
        /// Labels given.
        labels: usize,
    },
    /// The batch is empty.
    Empty,
}

impl core::fmt::Display for StepError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Label { index, label } => write!(
                f,
                "label {label} at batch position {index} is not a class (0..{CLASSES})"
            ),
            Self::Length { images, labels } => {
                write!(f, "{images} images but {labels} labels")
            }
            Self::Empty => f.write_str("empty batch"),
        }
    }
}

impl core::error::Error for StepError {}

fn check_batch(images: usize, labels: &[u8]) -> Result<(), StepError> {
    if images != labels.len() {
        return Err(StepError::Length {
            images,
            labels: labels.len(),
        });
    }
    if images == 0 {
        return Err(StepError::Empty);
    }
    match labels.iter().position(|&l| usize::from(l) >= CLASSES) {
        Some(index) => Err(StepError::Label {
            index,
            label: labels[index],
        }),
        None => Ok(()),
    }
}

/// [`train_step_sample`] for labels from outside: a label `>= CLASSES` is an
/// error instead of a panic, and nothing is changed.
///
/// # Errors
///
/// [`StepError::Label`].
#[allow(clippy::too_many_arguments)]
pub fn try_train_step_sample<M: Model, O: Optimizer>(
    model: &M,
    params: &mut M::Params,
    grads: &mut M::Params,
    acts: &mut M::Activations,
    opt: &O,
    opt_state: &mut O::State<M::Params>,
    x: &Image,
    label: u8,
) -> Result<f32, StepError> {
    check_batch(1, &[label])?;
    Ok(train_step_sample(
        model, params, grads, acts, opt, opt_state, x, label,
    ))
}

/// [`train_step_batch`] for data from outside: a label `>= CLASSES`, an
/// empty batch or a length mismatch is an error instead of a panic, and
/// nothing is changed.
///
/// # Errors
///
/// See [`StepError`].
#[allow(clippy::too_many_arguments)]
pub fn try_train_step_batch<M: Model, O: Optimizer>(
    model: &M,
    params: &mut M::Params,
    grads: &mut M::Params,
    acts: &mut M::Activations,
    opt: &O,
    opt_state: &mut O::State<M::Params>,
    images: &[Image],
    labels: &[u8],
) -> Result<f32, StepError> {
    check_batch(images.len(), labels)?;
    Ok(train_step_batch(
        model, params, grads, acts, opt, opt_state, images, labels,
    ))
}

/// Flattened view of a 4-D tensor.
fn flat4<const A: usize, const B: usize, const C: usize, const D: usize>(
    t: &[[[[f32; D]; C]; B]; A],
) -> &[f32] {
    t.as_flattened().as_flattened().as_flattened()
}

/// Mutable flattened view of a 4-D tensor.
fn flat4_mut<const A: usize, const B: usize, const C: usize, const D: usize>(
    t: &mut [[[[f32; D]; C]; B]; A],
) -> &mut [f32] {
    t.as_flattened_mut().as_flattened_mut().as_flattened_mut()
}

/// Flattened view of a 3-D tensor (PyTorch's `Flatten` of one sample).
fn flat3<const N: usize, const A: usize, const B: usize, const C: usize>(
    t: &[[[f32; C]; B]; A],
) -> &[f32; N] {
    const { assert!(N == A * B * C) };
    t.as_flattened()
        .as_flattened()
        .try_into()
        .expect("N == A * B * C")
}

/// Mutable flattened view of a 3-D tensor.
fn flat3_mut<const N: usize, const A: usize, const B: usize, const C: usize>(
    t: &mut [[[f32; C]; B]; A],
) -> &mut [f32; N] {
    const { assert!(N == A * B * C) };
    t.as_flattened_mut()
        .as_flattened_mut()
        .try_into()
        .expect("N == A * B * C")
}

#[cfg(test)]
mod tests;
