//! The CUDA trainer: one implementation of [`Trainer`] for any network
//! described as data ([`Arch::layers`]), running on a [`Device`]: the
//! GPU through the CUDA driver (feature `cuda`) or the emulated device,
//! which runs the same kernel sources on the CPU (feature `cuda-emu`).
//!
//! The layer list becomes a schedule of kernel launches:
//!
//! - forward: one launch per convolution or linear layer (bias and the
//!   activation that follows fused in), per pooling, upsampling or dropout
//!   layer, and per activation that follows a layer it cannot be fused
//!   into (in place). Dropout multiplies by lenet-core's seeded mask in
//!   training and is skipped in [`Trainer::forward`] (inference: the next
//!   layer reads the dropout's input);
//! - the loss: one launch for softmax cross-entropy, the batch's mean loss
//!   written to a per-step slot on the device;
//! - backward: per layer with parameters, one launch for the weight and
//!   bias gradients; per layer, one for the input gradient, skipped where
//!   no layer before it has parameters (the first layer, and the first
//!   convolution after an upsampling of the input). Dropout's backward
//!   recomputes its mask. The derivative of an activation is applied by
//!   the next layer's input-gradient kernel, from the activation's output,
//!   which the forward pass keeps;
//! - the optimizer: one launch over all parameters, which live in one flat
//!   buffer in `state_dict` order (as the gradients and moments do).
//!
//! For the classic LeNet-5 that is 21 launches per training step, and no
//! transfer: with [`Trainer::train_epoch`] the training set stays on the
//! device, each batch is gathered, augmented and normalized there from the
//! epoch's order and augmentation lists (uploaded once per epoch), and the
//! losses of all steps are read back once at the end of the epoch.
//!
//! Gradient kernels write (not accumulate) their outputs, so no zeroing
//! launch is needed. Every reduction has a fixed order (no atomics): a
//! given device computes the same bits every run.

pub mod args;
pub mod device;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod ops;
#[cfg(test)]
mod tests;

use lenet_core::activation::Activation;
use lenet_core::dropout;
use lenet_core::model::{Arch, INPUT_SHAPE, Layer, Shape3};

use crate::trainer::{
    EpochPlan, OptimizerConfig, OptimizerState, Trainer, TrainerConfig, TrainerError, check_state,
    core_adam,
};
use args::{
    ActArgs, AdamArgs, ConvArgs, DropoutArgs, GatherArgs, LinearArgs, LossArgs, PoolArgs, SgdArgs,
    UpsampleArgs,
};
use device::{BLOCK, DevPtr, Device, DeviceExt, Kernel};

/// Number of classes (outputs of the last layer).
const CLASSES: usize = 10;

/// Largest convolution kernel side (`CONV_KMAX` of `lenet.cuh`).
const CONV_KMAX: usize = 11;

/// The activation's code in `lenet.cuh`.
fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Sigmoid => 1,
        Activation::Relu => 2,
        Activation::Tanh => 3,
    }
}

/// What one stage of the schedule computes.
#[derive(Clone, Copy, Debug)]
enum Op {
    Conv {
        k: usize,
        s: usize,
        p: usize,
    },
    Pool {
        k: usize,
        s: usize,
        max: bool,
    },
    /// The model's activation, in place on its input.
    Act,
    Linear,
    /// Bilinear resize to the stage's output shape.
    Upsample,
    /// Dropout with probability `p`; `layer` is its index in the layer
    /// list (an input of the mask).
    Dropout {
        p: f32,
        layer: u32,
    },
}

/// One stage: an op from value buffer `input` to value buffer `output`.
#[derive(Clone, Copy, Debug)]
struct Stage {
    op: Op,
    input: usize,
    output: usize,
    in_shape: Shape3,
    out_shape: Shape3,
    /// Activation fused into the output (a code of `lenet.cuh`).
    act: i32,
    /// Offsets of the weight and bias in the flat parameters.
    w_off: usize,
    b_off: usize,
}

/// A value buffer: a layer's output for a batch, and its gradient.
#[derive(Clone, Copy, Debug, Default)]
struct Val {
    /// Values per image.
    per_image: usize,
    /// Whether it holds the output of the model's activation (so the
    /// gradient kernels that write its gradient multiply by act').
    holds_act: bool,
    /// Whether max pooling writes its argmax indices next to it.
    has_arg: bool,
    /// Whether the loss's gradient with respect to it is needed: some
    /// layer before it has parameters (not so for the input, or for an
    /// upsampling of the input).
    needs_grad: bool,
    ptr: DevPtr,
    dptr: DevPtr,
    arg: DevPtr,
}

/// The schedule of a network: stages, value buffers, parameter count.
#[derive(Clone, Debug)]
struct Schedule {
    stages: Vec<Stage>,
    vals: Vec<Val>,
    params: usize,
}

impl Schedule {
    /// Builds the schedule of `layers` on 28x28 inputs.
    fn new(layers: &[Layer], act: i32) -> Result<Schedule, TrainerError> {
        let bad = |m: String| TrainerError::State(m);
        let mut vals = vec![Val {
            per_image: INPUT_SHAPE.len(),
            ..Val::default()
        }];
        let mut stages = Vec::new();
        let mut shape = INPUT_SHAPE;
        let mut cur = 0;
        let mut off = 0;
        let mut i = 0;
        while i < layers.len() {
            let layer = layers[i];
            let out_shape = layer.output_shape(shape).map_err(|e| bad(e.to_string()))?;
            let op = match layer {
                Layer::Conv2d { kernel, .. } if kernel > CONV_KMAX => {
                    return Err(bad(format!(
                        "layer {i}: the CUDA kernels take convolutions up to {CONV_KMAX}x{CONV_KMAX}"
                    )));
                }
                Layer::Conv2d {
                    kernel,
                    padding,
                    stride,
                    ..
                } => Some(Op::Conv {
                    k: kernel,
                    s: stride,
                    p: padding,
                }),
                Layer::Linear { .. } => Some(Op::Linear),
                Layer::AvgPool2d { kernel, stride } => Some(Op::Pool {
                    k: kernel,
                    s: stride,
                    max: false,
                }),
                Layer::MaxPool2d { kernel, stride } => Some(Op::Pool {
                    k: kernel,
                    s: stride,
                    max: true,
                }),
                Layer::Act => {
                    if cur == 0 || vals[cur].holds_act {
                        return Err(bad(format!(
                            "layer {i}: an activation must follow a layer that is not an activation"
                        )));
                    }
                    vals[cur].holds_act = true;
                    stages.push(Stage {
                        op: Op::Act,
                        input: cur,
                        output: cur,
                        in_shape: shape,
                        out_shape,
                        act,
                        w_off: 0,
                        b_off: 0,
                    });
                    None
                }
                Layer::Upsample { .. } => Some(Op::Upsample),
                Layer::Dropout { p } => Some(Op::Dropout {
                    p,
                    layer: u32::try_from(i).map_err(|e| bad(e.to_string()))?,
                }),
                Layer::Flatten => None,
                _ => return Err(bad(format!("layer {i}: {layer:?} has no CUDA kernel"))),
            };
            if let Some(op) = op {
                // An activation right after a convolution or linear layer is
                // fused into its forward kernel.
                let fuse = matches!(op, Op::Conv { .. } | Op::Linear)
                    && layers.get(i + 1) == Some(&Layer::Act);
                vals.push(Val {
                    per_image: out_shape.len(),
                    holds_act: fuse,
                    needs_grad: vals[cur].needs_grad || layer.num_params() > 0,
                    has_arg: matches!(op, Op::Pool { max: true, .. }),
                    ..Val::default()
                });
                let n_w = layer.param_shapes().map_or(0, |(w, _)| w.iter().product());
                stages.push(Stage {
                    op,
                    input: cur,
                    output: vals.len() - 1,
                    in_shape: shape,
                    out_shape,
                    act: if fuse { act } else { 0 },
                    w_off: off,
                    b_off: off + n_w,
                });
                off += layer.num_params();
                cur = vals.len() - 1;
                if fuse {
                    i += 1;
                }
            }
            shape = out_shape;
            i += 1;
        }
        if shape.len() != CLASSES || cur == 0 {
            return Err(bad(format!(
                "the network ends with {} values, not {CLASSES} logits",
                shape.len()
            )));
        }
        Ok(Schedule {
            stages,
            vals,
            params: off,
        })
    }

    /// Kernel launches of one training step.
    fn launches_per_step(&self) -> usize {
        let mut n = 3; // gather, loss, optimizer
        for st in &self.stages {
            n += 1;
            n += match st.op {
                Op::Conv { .. } | Op::Linear => 1 + usize::from(self.vals[st.input].needs_grad),
                Op::Pool { .. } | Op::Upsample | Op::Dropout { .. } => {
                    usize::from(self.vals[st.input].needs_grad)
                }
                Op::Act => 0,
            };
        }
        n
    }
}

/// The training set on the device.
struct DeviceSet {
    /// Identity of the host copy it came from (address and length).
    key: (usize, usize),
    images: DevPtr,
    labels: DevPtr,
}

/// The CUDA trainer on device `D` (see the module docs).
pub struct GpuTrainer<D: Device> {
    dev: D,
    config: TrainerConfig,
    sched: Schedule,
    lr: f32,
    step: u64,
    params: DevPtr,
    grads: DevPtr,
    m: DevPtr,
    v: DevPtr,
    /// Whether `m` holds SGD momentum (it is created on the first step
    /// that uses it, as in the CPU trainer).
    sgd_has_m: bool,
    /// Batch capacity of the value buffers.
    cap: usize,
    labels: DevPtr,
    losses: DevPtr,
    losses_cap: usize,
    set: Option<DeviceSet>,
    order: DevPtr,
    aug: DevPtr,
    order_cap: usize,
}

fn ptr_at(base: DevPtr, floats: usize) -> DevPtr {
    base + (floats * 4) as u64
}

fn lr_of(opt: OptimizerConfig) -> f32 {
    match opt {
        OptimizerConfig::Adam { lr, .. } | OptimizerConfig::Sgd { lr, .. } => lr,
    }
}

fn int(v: usize) -> i32 {
    // Every size here is far below 2^31 (checked in `ensure_capacity`).
    v as i32
}

impl<D: Device> GpuTrainer<D> {
    /// A trainer for `config` on `dev`, starting from `init` (flat,
    /// `state_dict` order).
    ///
    /// # Errors
    /// A network the kernels cannot run, a wrong parameter count, or a
    /// device failure.
    pub fn new(mut dev: D, config: &TrainerConfig, init: &[f32]) -> Result<Self, TrainerError> {
        let sched = Schedule::new(&config.arch.layers(), act_code(config.act))?;
        let n = sched.params;
        if init.len() != n {
            return Err(TrainerError::State(format!(
                "expected {n} parameters, got {}",
                init.len()
            )));
        }
        let params = dev.alloc(n * 4)?;
        let grads = dev.alloc(n * 4)?;
        let m = dev.alloc(n * 4)?;
        let v = dev.alloc(n * 4)?;
        dev.upload_slice(params, init)?;
        Ok(GpuTrainer {
            dev,
            config: config.clone(),
            sched,
            lr: lr_of(config.optimizer),
            step: 0,
            params,
            grads,
            m,
            v,
            sgd_has_m: false,
            cap: 0,
            labels: 0,
            losses: 0,
            losses_cap: 0,
            set: None,
            order: 0,
            aug: 0,
            order_cap: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Kernel launches of one training step (21 for the classic LeNet-5).
    pub fn launches_per_step(&self) -> usize {
        self.sched.launches_per_step()
    }

    fn device_err(&self, msg: String) -> TrainerError {
        TrainerError::Device {
            device: self.dev.kind(),
            msg,
        }
    }

    /// Makes the value buffers hold batches of `n` images.
    fn ensure_capacity(&mut self, n: usize) -> Result<(), TrainerError> {
        if n <= self.cap {
            return Ok(());
        }
        let biggest = self
            .sched
            .vals
            .iter()
            .map(|v| v.per_image)
            .max()
            .unwrap_or(0);
        // Kernels index values with `int`, and a grid's last block may run
        // up to BLOCK - 1 threads past the end.
        let limit = i32::MAX as usize - BLOCK as usize;
        if n.checked_mul(biggest).is_none_or(|t| t > limit) {
            return Err(self.device_err(format!(
                "a batch of {n} images needs buffers beyond the kernels' 32-bit indexing"
            )));
        }
        for i in 0..self.sched.vals.len() {
            let v = self.sched.vals[i];
            for p in [v.ptr, v.dptr, v.arg] {
                if p != 0 {
                    self.dev.free(p)?;
                }
            }
            let bytes = n * v.per_image * 4;
            let ptr = self.dev.alloc(bytes)?;
            let dptr = if i == 0 { 0 } else { self.dev.alloc(bytes)? };
            let arg = if v.has_arg { self.dev.alloc(bytes)? } else { 0 };
            self.sched.vals[i] = Val {
                ptr,
                dptr,
                arg,
                ..v
            };
        }
        if self.labels != 0 {
            self.dev.free(self.labels)?;
        }
        self.labels = self.dev.alloc(n * 4)?;
        self.cap = n;
        Ok(())
    }

    fn ensure_losses(&mut self, steps: usize) -> Result<(), TrainerError> {
        if steps > self.losses_cap {
            if self.losses != 0 {
                self.dev.free(self.losses)?;
            }
            self.losses = self.dev.alloc(steps * 4)?;
            self.losses_cap = steps;
        }
        Ok(())
    }

    /// Forward pass of `n` images from value buffer 0, in training
    /// (dropout applied) or inference (dropout skipped); returns the
    /// logits' buffer.
    fn forward_device(&mut self, n: usize, train: bool) -> Result<DevPtr, TrainerError> {
        let p = self.params;
        // Which buffer holds each value: its own, or in inference, for the
        // output of a dropout, the dropout's input.
        let mut at: Vec<usize> = (0..self.sched.vals.len()).collect();
        for st in self.sched.stages.clone() {
            let (inp, out) = (self.sched.vals[at[st.input]], self.sched.vals[st.output]);
            let (a, b) = (st.in_shape, st.out_shape);
            match st.op {
                Op::Conv { k, s, p: pad } => {
                    let args = ConvArgs {
                        x: inp.ptr,
                        w: ptr_at(p, st.w_off),
                        b: ptr_at(p, st.b_off),
                        y: out.ptr,
                        ..conv_dims(n, a, b, k, s, pad, st.act)
                    };
                    self.dev
                        .launch_over(Kernel::Conv2dForward, n * b.len(), &args)?;
                }
                Op::Pool { k, s, max } => {
                    let args = PoolArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        arg: out.arg,
                        ..pool_dims(n, a, b, k, s, max, 0)
                    };
                    self.dev
                        .launch_over(Kernel::PoolForward, n * b.len(), &args)?;
                }
                Op::Act => {
                    let args = ActArgs {
                        y: inp.ptr,
                        len: int(n * a.len()),
                        act: st.act,
                    };
                    self.dev
                        .launch_over(Kernel::ActivationForward, n * a.len(), &args)?;
                }
                Op::Linear => {
                    let args = LinearArgs {
                        x: inp.ptr,
                        w: ptr_at(p, st.w_off),
                        b: ptr_at(p, st.b_off),
                        y: out.ptr,
                        n: int(n),
                        f_in: int(a.len()),
                        f_out: int(b.len()),
                        act: st.act,
                        ..LinearArgs::default()
                    };
                    self.dev
                        .launch_over(Kernel::LinearForward, n * b.len(), &args)?;
                }
                Op::Upsample => {
                    let args = UpsampleArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        ..upsample_dims(n, a, b, 0)
                    };
                    self.dev
                        .launch_over(Kernel::UpsampleForward, n * b.len(), &args)?;
                }
                Op::Dropout { p: prob, layer } => {
                    if !train {
                        at[st.output] = at[st.input];
                        continue;
                    }
                    let args = DropoutArgs {
                        x: inp.ptr,
                        y: out.ptr,
                        ..self.dropout_dims(n * a.len(), prob, layer, 0)
                    };
                    self.dev
                        .launch_over(Kernel::DropoutForward, n * a.len(), &args)?;
                }
            }
        }
        let last = at[self.sched.vals.len() - 1];
        Ok(self.sched.vals[last].ptr)
    }

    /// The dimensions and mask of dropout layer `layer` (probability `p`)
    /// over `len` values at the current step.
    fn dropout_dims(&self, len: usize, p: f32, layer: u32, act: i32) -> DropoutArgs {
        DropoutArgs {
            seed: self.config.dropout_seed,
            step: self.step,
            layer,
            threshold: dropout::threshold(p),
            scale: dropout::scale(p),
            len: int(len),
            act,
            ..DropoutArgs::default()
        }
    }

    /// Loss, backward pass and optimizer step for `n` images whose inputs
    /// and labels are on the device; the batch loss goes to slot `slot`.
    fn train_device(&mut self, n: usize, slot: usize) -> Result<(), TrainerError> {
        self.forward_device(n, true)?;
        let last = self.sched.vals[self.sched.vals.len() - 1];
        let loss = LossArgs {
            logits: last.ptr,
            labels: self.labels,
            dlogits: last.dptr,
            losses: self.losses,
            n: int(n),
            classes: int(CLASSES),
            slot: int(slot),
            scale: 1.0 / n as f32,
        };
        self.dev.launch(Kernel::SoftmaxCrossEntropy, 1, &loss)?;
        let (p, g) = (self.params, self.grads);
        let act = act_code(self.config.act);
        for st in self.sched.stages.clone().iter().rev() {
            let (inp, out) = (self.sched.vals[st.input], self.sched.vals[st.output]);
            let (a, b) = (st.in_shape, st.out_shape);
            let in_act = if inp.holds_act { act } else { 0 };
            match st.op {
                Op::Conv { k, s, p: pad } => {
                    let dims = conv_dims(n, a, b, k, s, pad, in_act);
                    let wargs = ConvArgs {
                        x: inp.ptr,
                        dy: out.dptr,
                        dw: ptr_at(g, st.w_off),
                        db: ptr_at(g, st.b_off),
                        ..dims
                    };
                    let blocks = b.c * a.c * k + b.c;
                    self.dev.launch(
                        Kernel::Conv2dBackwardWeight,
                        u32::try_from(blocks).map_err(|e| self.device_err(e.to_string()))?,
                        &wargs,
                    )?;
                    if inp.needs_grad {
                        let iargs = ConvArgs {
                            x: inp.ptr,
                            w: ptr_at(p, st.w_off),
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..dims
                        };
                        self.dev
                            .launch_over(Kernel::Conv2dBackwardInput, n * a.len(), &iargs)?;
                    }
                }
                Op::Pool { k, s, max } => {
                    if inp.needs_grad {
                        let args = PoolArgs {
                            x: inp.ptr,
                            arg: out.arg,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..pool_dims(n, a, b, k, s, max, in_act)
                        };
                        self.dev
                            .launch_over(Kernel::PoolBackward, n * a.len(), &args)?;
                    }
                }
                Op::Act => {}
                Op::Upsample => {
                    if inp.needs_grad {
                        let args = UpsampleArgs {
                            x: inp.ptr,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..upsample_dims(n, a, b, in_act)
                        };
                        self.dev
                            .launch_over(Kernel::UpsampleBackward, n * a.len(), &args)?;
                    }
                }
                Op::Dropout { p: prob, layer } => {
                    if inp.needs_grad {
                        let args = DropoutArgs {
                            x: inp.ptr,
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..self.dropout_dims(n * a.len(), prob, layer, in_act)
                        };
                        self.dev
                            .launch_over(Kernel::DropoutBackward, n * a.len(), &args)?;
                    }
                }
                Op::Linear => {
                    let dims = LinearArgs {
                        n: int(n),
                        f_in: int(a.len()),
                        f_out: int(b.len()),
                        act: in_act,
                        ..LinearArgs::default()
                    };
                    let wargs = LinearArgs {
                        x: inp.ptr,
                        dy: out.dptr,
                        dw: ptr_at(g, st.w_off),
                        db: ptr_at(g, st.b_off),
                        ..dims
                    };
                    self.dev.launch_over(
                        Kernel::LinearBackwardWeight,
                        b.len() * a.len() + b.len(),
                        &wargs,
                    )?;
                    if inp.needs_grad {
                        let iargs = LinearArgs {
                            x: inp.ptr,
                            w: ptr_at(p, st.w_off),
                            dy: out.dptr,
                            dx: inp.dptr,
                            ..dims
                        };
                        self.dev
                            .launch_over(Kernel::LinearBackwardInput, n * a.len(), &iargs)?;
                    }
                }
            }
        }
        self.update()
    }

    /// One optimizer step over all parameters (lenet-core's formulas).
    fn update(&mut self) -> Result<(), TrainerError> {
        self.step += 1;
        let len = self.sched.params;
        match self.config.optimizer {
            OptimizerConfig::Adam { .. } => {
                let mut opt = core_adam(self.config.optimizer);
                opt.lr = self.lr;
                let k = opt.scalars(self.step);
                let args = AdamArgs {
                    p: self.params,
                    g: self.grads,
                    m: self.m,
                    v: self.v,
                    len: int(len),
                    step_size: k.step_size,
                    bc2_sqrt: k.bc2_sqrt,
                    w1: k.w1,
                    w2: k.w2,
                    beta2: k.beta2,
                    eps: k.eps,
                    weight_decay: k.weight_decay,
                };
                self.dev.launch_over(Kernel::AdamUpdate, len, &args)
            }
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                ..
            } => {
                if momentum != 0.0 {
                    self.sgd_has_m = true;
                }
                let args = SgdArgs {
                    p: self.params,
                    g: self.grads,
                    buf: self.m,
                    len: int(len),
                    lr: self.lr,
                    momentum,
                    weight_decay,
                    first: i32::from(self.step == 1),
                    pad_: 0,
                };
                self.dev.launch_over(Kernel::SgdUpdate, len, &args)
            }
        }
    }

    /// Puts `plan.data` on the device unless it is there already.
    fn ensure_set(&mut self, plan: &EpochPlan<'_>) -> Result<(), TrainerError> {
        let key = (plan.data.images.as_ptr() as usize, plan.data.images.len());
        if self.set.as_ref().is_some_and(|s| s.key == key) {
            return Ok(());
        }
        if let Some(old) = self.set.take() {
            self.dev.free(old.images)?;
            self.dev.free(old.labels)?;
        }
        let images = self.dev.alloc(plan.data.images.len())?;
        self.dev.upload(images, &plan.data.images)?;
        let labels = self.dev.alloc(plan.data.labels.len())?;
        self.dev.upload(labels, &plan.data.labels)?;
        self.set = Some(DeviceSet {
            key,
            images,
            labels,
        });
        Ok(())
    }
}

fn conv_dims(n: usize, a: Shape3, b: Shape3, k: usize, s: usize, p: usize, act: i32) -> ConvArgs {
    ConvArgs {
        n: int(n),
        c_in: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        c_out: int(b.c),
        oh: int(b.h),
        ow: int(b.w),
        k: int(k),
        s: int(s),
        p: int(p),
        act,
        ..ConvArgs::default()
    }
}

fn upsample_dims(n: usize, a: Shape3, b: Shape3, act: i32) -> UpsampleArgs {
    UpsampleArgs {
        n: int(n),
        c: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        oh: int(b.h),
        ow: int(b.w),
        act,
        ..UpsampleArgs::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn pool_dims(n: usize, a: Shape3, b: Shape3, k: usize, s: usize, max: bool, act: i32) -> PoolArgs {
    PoolArgs {
        n: int(n),
        c: int(a.c),
        h: int(a.h),
        w_in: int(a.w),
        oh: int(b.h),
        ow: int(b.w),
        k: int(k),
        s: int(s),
        max: i32::from(max),
        act,
        ..PoolArgs::default()
    }
}

impl<D: Device> Trainer for GpuTrainer<D> {
    fn device_name(&self) -> &'static str {
        self.dev.kind()
    }

    fn train_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<f32, TrainerError> {
        let n = labels.len();
        if x.len() != n * INPUT_SHAPE.len() {
            return Err(TrainerError::State(format!(
                "{} input values for {n} images",
                x.len()
            )));
        }
        if n == 0 {
            return Ok(0.0);
        }
        self.ensure_capacity(n)?;
        self.ensure_losses(1)?;
        let input = self.sched.vals[0].ptr;
        self.dev.upload_slice(input, x)?;
        let l: Vec<i32> = labels.iter().map(|&l| i32::from(l)).collect();
        self.dev.upload_slice(self.labels, &l)?;
        self.train_device(n, 0)?;
        let mut loss = [0.0f32];
        self.dev.download_slice(&mut loss, self.losses)?;
        Ok(loss[0])
    }

    fn forward(&mut self, x: &[f32], logits: &mut [f32]) -> Result<(), TrainerError> {
        let n = logits.len() / CLASSES;
        if x.len() != n * INPUT_SHAPE.len() || logits.len() != n * CLASSES {
            return Err(TrainerError::State(format!(
                "{} input values and {} logits do not make whole images",
                x.len(),
                logits.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        self.ensure_capacity(n)?;
        let input = self.sched.vals[0].ptr;
        self.dev.upload_slice(input, x)?;
        let last = self.forward_device(n, false)?;
        self.dev.download_slice(logits, last)
    }

    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn params(&mut self) -> Result<Vec<f32>, TrainerError> {
        let mut p = vec![0.0; self.sched.params];
        self.dev.download_slice(&mut p, self.params)?;
        Ok(p)
    }

    fn optimizer_state(&mut self) -> Result<OptimizerState, TrainerError> {
        let n = self.sched.params;
        let mut m = vec![0.0; n];
        let mut v = vec![0.0; n];
        match self.config.optimizer {
            OptimizerConfig::Adam { .. } => {
                self.dev.download_slice(&mut m, self.m)?;
                self.dev.download_slice(&mut v, self.v)?;
            }
            OptimizerConfig::Sgd { .. } => {
                if self.sgd_has_m {
                    self.dev.download_slice(&mut m, self.m)?;
                } else {
                    m.clear();
                }
                v.clear();
            }
        }
        Ok(OptimizerState {
            step: self.step,
            m,
            v,
        })
    }

    fn load(&mut self, params: &[f32], state: &OptimizerState) -> Result<(), TrainerError> {
        let n = self.sched.params;
        check_state(n, params, state)?;
        self.dev.upload_slice(self.params, params)?;
        let zeros = vec![0.0f32; n];
        let m = if state.m.is_empty() { &zeros } else { &state.m };
        let v = if state.v.is_empty() { &zeros } else { &state.v };
        self.dev.upload_slice(self.m, m)?;
        self.dev.upload_slice(self.v, v)?;
        self.sgd_has_m = !state.m.is_empty();
        self.step = state.step;
        Ok(())
    }

    fn train_epoch(
        &mut self,
        plan: &EpochPlan<'_>,
        progress: &mut dyn FnMut(),
    ) -> Result<Vec<f32>, TrainerError> {
        let steps = plan.steps();
        if steps == 0 {
            return Ok(Vec::new());
        }
        self.ensure_set(plan)?;
        self.ensure_capacity(plan.batch_size.min(plan.order.len()))?;
        self.ensure_losses(steps)?;
        let len = plan.order.len();
        if len > self.order_cap {
            for p in [self.order, self.aug] {
                if p != 0 {
                    self.dev.free(p)?;
                }
            }
            self.order = self.dev.alloc(len * 4)?;
            self.aug = self.dev.alloc(len * 3)?;
            self.order_cap = len;
        }
        self.dev.upload_slice(self.order, &plan.order)?;
        let aug = match &plan.aug {
            Some(a) => {
                let flat: Vec<i8> = a.iter().flat_map(|g| [g.flip, g.dy, g.dx]).collect();
                self.dev.upload_slice(self.aug, &flat)?;
                self.aug
            }
            None => 0,
        };
        let set = self.set.as_ref().map(|s| (s.images, s.labels));
        let (images, labels) = set.ok_or_else(|| self.device_err("no training set".into()))?;
        for b in 0..steps {
            let first = b * plan.batch_size;
            let n = (len - first).min(plan.batch_size);
            let g = GatherArgs {
                images,
                labels,
                order: self.order,
                aug,
                x: self.sched.vals[0].ptr,
                y: self.labels,
                first: int(first),
                n: int(n),
                mean: plan.norm.mean,
                std: plan.norm.std,
            };
            self.dev
                .launch_over(Kernel::GatherBatch, n * INPUT_SHAPE.len(), &g)?;
            self.lr = plan.lrs[b];
            self.train_device(n, b)?;
            progress();
        }
        let mut losses = vec![0.0f32; steps];
        self.dev.download_slice(&mut losses, self.losses)?;
        Ok(losses)
    }
}

/// The network's parameter count as the schedule sees it (equal to
/// [`Arch::num_params`]).
///
/// # Errors
/// A network the kernels cannot run.
pub fn schedule_params(arch: Arch) -> Result<usize, TrainerError> {
    Ok(Schedule::new(&arch.layers(), 1)?.params)
}

/// Kernel launches of one training step of the network (what
/// [`GpuTrainer::launches_per_step`] says, without a device).
///
/// # Errors
/// A network the kernels cannot run.
pub fn schedule_launches(arch: Arch) -> Result<usize, TrainerError> {
    Ok(Schedule::new(&arch.layers(), 1)?.launches_per_step())
}
