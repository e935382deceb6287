//! The seam between the training loop and the compute back ends.
//!
//! The CPU trainer and the CUDA trainer are twins behind [`Trainer`]: the
//! loop in `train` (data, epochs, metrics, checkpoints) never knows which one
//! it drives. Parameters travel as one flat `f32` vector in PyTorch
//! `state_dict` order (`0.weight`, `0.bias`, `3.weight`, ...), the same order
//! as `lenet_core::optim::Parameters::tensors` of the core model.

use lenet_core::activation::Activation;
use lenet_core::model::ModelKind;

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

/// What a back end needs to build a trainer.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// Which network.
    pub kind: ModelKind,
    /// Hidden-layer activation.
    pub act: Activation,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Worker threads (CPU back end); 0 means all cores.
    pub threads: usize,
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

/// A compute back end that trains and runs one model.
///
/// Images are `N x 1 x 28 x 28` row-major `f32` (already normalized),
/// labels are `0..10`.
pub trait Trainer: Send {
    /// Short name for messages: `"cpu"` or `"cuda"`.
    fn device_name(&self) -> &'static str;
    /// One optimizer step on a mini-batch of `labels.len()` images; returns
    /// the mean cross-entropy loss of the batch before the step.
    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> f32;
    /// Inference: writes `N x 10` logits.
    fn forward(&mut self, x: &[f32], logits: &mut [f32]);
    /// Changes the learning rate (for schedules).
    fn set_lr(&mut self, lr: f32);
    /// Current parameters, flat, `state_dict` order.
    fn params(&self) -> Vec<f32>;
    /// Current optimizer state (for checkpoints).
    fn optimizer_state(&self) -> OptimizerState;
    /// Restores parameters and optimizer state (for `--resume`).
    fn load(&mut self, params: &[f32], state: &OptimizerState);
}
