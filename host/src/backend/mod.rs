//! The seam between the training loop and the compute back ends, and the
//! back ends behind it: [`cpu`] (the CPU trainer for every network),
//! [`gpu`] (the CUDA trainer, on a GPU or its emulated twin) and
//! [`reference`](mod@reference) (the plain-loop oracle); the functions that build one for
//! a `--device` and check its memory come from `select.rs`.
//!
//! The CPU trainer and the CUDA trainer are twins behind [`Trainer`]: the
//! loop in `train` (data, epochs, metrics, checkpoints) never knows which one
//! it drives. Parameters travel as one flat `f32` vector in PyTorch
//! `state_dict` order (`0.weight`, `0.bias`, `3.weight`, ...), the same order
//! as `lenet_core::optim::Parameters::tensors` of the core model.

pub mod cpu;
pub mod gpu;
pub mod reference;
mod select;

pub use select::*;

use lenet_core::activation::Activation;
use lenet_core::init::Rng;

use crate::data::{Dataset, Normalization, PIXELS, SIDE};
use crate::rng::SplitMix64;
use lenet_core::model::Arch;
use lenet_core::optim::{Adam, Sgd};

/// PyTorch-style initial parameters of `arch` for `seed` (flat,
/// `state_dict` order), as every back end starts from them.
pub fn init_params(arch: Arch, seed: u64) -> Vec<f32> {
    let mut p = vec![0.0; arch.num_params()];
    arch.init(&mut p, &mut Rng::new(seed));
    p
}

/// Optimizer and its hyper-parameters (PyTorch semantics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.Adam(lr, betas=(beta1, beta2), eps, weight_decay)`.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
    /// `torch.optim.SGD(lr, momentum, weight_decay)`.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor (0 disables it).
        momentum: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
    },
}

impl OptimizerConfig {
    /// Adam with PyTorch's defaults (betas 0.9 and 0.999, epsilon 1e-8, no
    /// weight decay) at learning rate `lr`.
    pub const fn adam(lr: f32) -> OptimizerConfig {
        OptimizerConfig::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// lenet-core's Adam with the hyper-parameters of `opt` (learning rate 0
/// for SGD): its [`Adam::scalars`] and [`AdamScalars::update`] are the one
/// definition of the update that every back end applies.
///
/// [`AdamScalars::update`]: lenet_core::optim::AdamScalars::update
pub fn core_adam(opt: OptimizerConfig) -> Adam {
    match opt {
        OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } => Adam::new(lr)
            .with_betas(beta1, beta2)
            .with_eps(eps)
            .with_weight_decay(weight_decay),
        OptimizerConfig::Sgd { .. } => Adam::new(0.0),
    }
}

/// lenet-core's SGD with the hyper-parameters of `opt` (learning rate 0 for
/// Adam); [`Sgd::update`] is the one definition of its update.
pub fn core_sgd(opt: OptimizerConfig) -> Sgd {
    match opt {
        OptimizerConfig::Sgd {
            lr,
            momentum,
            weight_decay,
        } => Sgd::new(lr)
            .with_momentum(momentum)
            .with_weight_decay(weight_decay),
        OptimizerConfig::Adam { .. } => Sgd::new(0.0),
    }
}

/// What a back end needs to build a trainer.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Which network.
    pub arch: Arch,
    /// Hidden-layer activation.
    pub act: Activation,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Worker threads (CPU back end); 0 means all cores.
    pub threads: usize,
    /// Seed of the dropout masks (see `lenet_core::dropout`).
    pub dropout_seed: u64,
}

/// Optimizer state, flat, in the same order as the parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState {
    /// Steps taken so far.
    pub step: u64,
    /// First moment (Adam) or momentum buffer (SGD); empty if unused.
    pub m: Vec<f32>,
    /// Second moment (Adam); empty if unused.
    pub v: Vec<f32>,
}

impl OptimizerState {
    /// What a trainer of `n` parameters with `optimizer` keeps after
    /// loading this state (checked by [`check_state`] first): the step;
    /// for Adam both moments, zeros where this state has none (a fresh
    /// optimizer); for SGD the momentum buffer, or none before the first
    /// step, and no second moment.
    pub fn fitted(&self, optimizer: OptimizerConfig, n: usize) -> OptimizerState {
        let fit = |s: &[f32]| {
            if s.len() == n {
                s.to_vec()
            } else {
                vec![0.0; n]
            }
        };
        let (m, v) = match optimizer {
            OptimizerConfig::Adam { .. } => (fit(&self.m), fit(&self.v)),
            OptimizerConfig::Sgd { .. } if self.m.len() == n => (self.m.clone(), Vec::new()),
            OptimizerConfig::Sgd { .. } => (Vec::new(), Vec::new()),
        };
        OptimizerState {
            step: self.step,
            m,
            v,
        }
    }
}

/// A back end's failure: a device error (out of memory, launch failure,
/// driver too old), or a request the back end cannot take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    /// The device failed; the message says what it was doing.
    #[error("{device}: {msg}")]
    Device {
        /// `"cuda"`, `"cuda-emu"`, ...
        device: &'static str,
        /// What failed.
        msg: String,
    },
    /// Parameters or optimizer state of the wrong size or kind.
    #[error("{0}")]
    State(String),
}

/// Checks what [`Trainer::load`] receives against a model of `n`
/// parameters: the parameter count, and moment vectors that are empty (a
/// fresh optimizer) or of length `n`.
///
/// # Errors
/// [`TrainerError::State`] naming the mismatch.
pub fn check_state(n: usize, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
    if params.len() != n {
        return Err(TrainerError::State(format!(
            "expected {n} parameters, got {}",
            params.len()
        )));
    }
    for (name, v) in [("first moment", &state.m), ("second moment", &state.v)] {
        if !v.is_empty() && v.len() != n {
            return Err(TrainerError::State(format!(
                "optimizer {name} has {} values for {n} parameters",
                v.len()
            )));
        }
    }
    Ok(())
}

/// `n` zeros, or an error naming `what` when the allocation fails (a
/// network's size comes from the command line or a file).
///
/// # Errors
/// [`TrainerError::Device`] if the memory cannot be had.
pub fn try_zeros(n: usize, what: &str) -> Result<Vec<f32>, TrainerError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| TrainerError::Device {
        device: "cpu",
        msg: format!(
            "cannot allocate {} for {what} ({n} floats)",
            crate::progress::human_bytes(n as u64 * 4)
        ),
    })?;
    v.resize(n, 0.0);
    Ok(v)
}

/// The parameters and optimizer state of a back end that keeps them in
/// host memory (the CPU trainer and the reference), with the state methods
/// of [`Trainer`] they share: the one place where a learning rate is set,
/// a state is read out, and a saved state is checked and restored.
#[derive(Clone, Debug)]
pub struct HostState {
    /// The optimizer and its current learning rate.
    pub optimizer: OptimizerConfig,
    /// Flat parameters, `state_dict` order.
    pub params: Vec<f32>,
    /// Adam first moment or SGD momentum buffer (empty until needed).
    pub m: Vec<f32>,
    /// Adam second moment (empty for SGD).
    pub v: Vec<f32>,
    /// Optimizer steps taken.
    pub step: u64,
}

impl HostState {
    /// `params` with a fresh optimizer state (Adam's moments zeroed).
    ///
    /// # Errors
    /// [`TrainerError::State`] if `params` does not have `n` values,
    /// [`TrainerError::Device`] if the memory cannot be had.
    pub fn new(
        optimizer: OptimizerConfig,
        n: usize,
        params: &[f32],
    ) -> Result<HostState, TrainerError> {
        check_state(n, params, &OptimizerState::default())?;
        let (m, v) = match optimizer {
            OptimizerConfig::Adam { .. } => (
                try_zeros(n, "the first moment")?,
                try_zeros(n, "the second moment")?,
            ),
            OptimizerConfig::Sgd { .. } => (Vec::new(), Vec::new()),
        };
        let mut own = try_zeros(n, "the parameters")?;
        own.copy_from_slice(params);
        Ok(HostState {
            optimizer,
            params: own,
            m,
            v,
            step: 0,
        })
    }

    /// [`Trainer::set_lr`].
    pub fn set_lr(&mut self, lr: f32) {
        match &mut self.optimizer {
            OptimizerConfig::Adam { lr: l, .. } | OptimizerConfig::Sgd { lr: l, .. } => *l = lr,
        }
    }

    /// [`Trainer::optimizer_state`].
    pub fn optimizer_state(&self) -> OptimizerState {
        OptimizerState {
            step: self.step,
            m: self.m.clone(),
            v: self.v.clone(),
        }
    }

    /// [`Trainer::load`]: checks `params` and `state` against this model,
    /// then restores them ([`OptimizerState::fitted`]); on error nothing
    /// changes.
    ///
    /// # Errors
    /// As [`check_state`].
    pub fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        check_state(self.params.len(), params, state)?;
        self.params.copy_from_slice(params);
        let s = state.fitted(self.optimizer, params.len());
        (self.step, self.m, self.v) = (s.step, s.m, s.v);
        Ok(())
    }
}

/// One epoch's work, drawn by the training loop from its RNG so that every
/// back end sees the same batches: the shuffled order, the augmentation of
/// each image in that order, and the learning rate of each step.
#[derive(Clone, Debug)]
pub struct EpochPlan<'a> {
    /// The training images and labels.
    pub data: &'a Dataset,
    /// Input normalization.
    pub norm: Normalization,
    /// Indices into `data` in the order they are used.
    pub order: Vec<u32>,
    /// Per image of `order`: the augmentation to apply (or none).
    pub aug: Option<Vec<Augment>>,
    /// Mini-batch size (the last batch may be smaller).
    pub batch_size: usize,
    /// Learning rate of each step.
    pub lrs: Vec<f32>,
}

impl EpochPlan<'_> {
    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Normalized (and augmented) images and labels of batch `b`, built on
    /// the host: what a back end without its own copy of the data trains on.
    pub fn batch(&self, b: usize, x: &mut Vec<f32>, labels: &mut Vec<u8>) {
        let lo = b * self.batch_size;
        let hi = (lo + self.batch_size).min(self.order.len());
        x.clear();
        labels.clear();
        let mut img = [0u8; PIXELS];
        for k in lo..hi {
            let i = self.order[k] as usize;
            match &self.aug {
                Some(a) => a[k].apply(&mut img, self.data.image(i)),
                None => img.copy_from_slice(self.data.image(i)),
            }
            self.norm.extend(x, &img);
            labels.push(self.data.labels[i]);
        }
    }
}

/// A compute back end that trains and runs one model.
///
/// Images are `N x 1 x 28 x 28` row-major `f32` (already normalized),
/// labels are `0..10`. Every method that touches the device returns its
/// failure as a [`TrainerError`].
pub trait Trainer: Send {
    /// Short name for messages: `"cpu"`, `"cuda"`, ...
    fn device_name(&self) -> &'static str;
    /// One optimizer step on a mini-batch of `labels.len()` images; returns
    /// the mean cross-entropy loss of the batch before the step.
    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError>;
    /// Inference: writes `N x 10` logits.
    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError>;
    /// Changes the learning rate (for schedules).
    fn set_lr(&mut self, lr: f32);
    /// Current parameters, flat, `state_dict` order.
    fn params(&mut self) -> Result<Vec<f32>, TrainerError>;
    /// Current optimizer state (for checkpoints).
    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError>;
    /// Restores parameters and optimizer state (for `--resume`).
    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError>;
    /// Runs every step of `plan`, calling `progress` after each, and returns
    /// the loss of each step. This default builds each batch on the host
    /// and calls [`train_batch`](Self::train_batch); a GPU back end keeps
    /// the data on the device and reads the losses back once.
    ///
    /// A back end may stop after any step once a stop is requested
    /// ([`crate::interrupt::requested`], Ctrl-C) and return the
    /// losses of the steps it took; the training loop checkpoints them.
    /// This default does so; the GPU back end runs its epoch to the end.
    fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<f32>, TrainerError> {
        let mut x = Vec::with_capacity(plan.batch_size * PIXELS);
        let mut labels = Vec::with_capacity(plan.batch_size);
        let mut losses = Vec::with_capacity(plan.steps());
        for b in 0..plan.steps() {
            self.set_lr(plan.lrs[b]);
            plan.batch(b, &mut x, &mut labels);
            losses.push(self.train_batch(&x, &labels)?);
            progress();
            if crate::interrupt::requested() {
                break;
            }
        }
        Ok(losses)
    }
}

/// The random shift and flip of one training image (see
/// [`train::augment`](crate::train::augment)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Augment {
    /// Mirror horizontally (1) or not (0).
    pub flip: i8,
    /// Shift down by `dy` rows (negative: up), zero fill.
    pub dy: i8,
    /// Shift right by `dx` columns (negative: left), zero fill.
    pub dx: i8,
}

impl Augment {
    /// Draws one from `rng`: flip with probability 1/2, then `dy` and `dx`
    /// uniform in `-shift..=shift`.
    pub fn draw(shift: u32, rng: &mut SplitMix64) -> Augment {
        let flip = rng.below(2) == 1;
        let s = u64::from(shift);
        let dy = rng.below(2 * s + 1) as i64 - i64::from(shift);
        let dx = rng.below(2 * s + 1) as i64 - i64::from(shift);
        Augment {
            flip: i8::from(flip),
            dy: dy as i8,
            dx: dx as i8,
        }
    }

    /// `out[y][x] = src[y - dy][x' ]`, where `x' = x - dx`, mirrored to
    /// `27 - x'` when flipping; zero where `y - dy` or `x'` falls outside.
    /// The CUDA kernel `gather_batch` computes the same mapping.
    pub fn apply(self, out: &mut [u8], src: &[u8]) {
        let side = SIDE as isize;
        for y in 0..side {
            for x in 0..side {
                let sy = y - self.dy as isize;
                let sx0 = x - self.dx as isize;
                let sx = if self.flip != 0 { side - 1 - sx0 } else { sx0 };
                let v = if (0..side).contains(&sy) && (0..side).contains(&sx0) {
                    src[(sy as usize) * SIDE + sx as usize]
                } else {
                    0
                };
                out[(y as usize) * SIDE + x as usize] = v;
            }
        }
    }
}
