//! The kernels' argument structs, field for field as `host/cuda/lenet.cuh`
//! declares them (`#[repr(C)]`, device pointers as `u64`, no padding
//! bytes). A test compares every size with the C compiler's.

#![allow(missing_docs)] // each field is the same-named field of lenet.cuh, documented there

/// `GatherArgs`: see `gather_batch` in `data.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GatherArgs {
    pub images: u64,
    pub labels: u64,
    pub order: u64,
    pub aug: u64,
    pub x: u64,
    pub y: u64,
    pub first: i32,
    pub n: i32,
    pub mean: f32,
    pub std: f32,
}

/// `ConvArgs`: see `conv2d.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvArgs {
    pub x: u64,
    pub w: u64,
    pub b: u64,
    pub y: u64,
    pub dy: u64,
    pub dx: u64,
    pub dw: u64,
    pub db: u64,
    pub n: i32,
    pub c_in: i32,
    pub h: i32,
    pub w_in: i32,
    pub c_out: i32,
    pub oh: i32,
    pub ow: i32,
    pub k: i32,
    pub s: i32,
    pub p: i32,
    pub act: i32,
    pub splits: i32,
}

/// `PoolArgs`: see `pool.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolArgs {
    pub x: u64,
    pub y: u64,
    pub arg: u64,
    pub dy: u64,
    pub dx: u64,
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w_in: i32,
    pub oh: i32,
    pub ow: i32,
    pub k: i32,
    pub s: i32,
    pub max: i32,
    pub act: i32,
}

/// `ActArgs`: see `activation.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ActArgs {
    pub y: u64,
    pub len: i32,
    pub act: i32,
}

/// `LinearArgs`: see `linear.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LinearArgs {
    pub x: u64,
    pub w: u64,
    pub b: u64,
    pub y: u64,
    pub dy: u64,
    pub dx: u64,
    pub dw: u64,
    pub db: u64,
    pub n: i32,
    pub f_in: i32,
    pub f_out: i32,
    pub act: i32,
}

/// `LossArgs`: see `loss.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LossArgs {
    pub logits: u64,
    pub labels: u64,
    pub dlogits: u64,
    pub losses: u64,
    pub n: i32,
    pub classes: i32,
    pub slot: i32,
    pub scale: f32,
}

/// `AdamArgs`: see `optim.cu`; the scalars are lenet-core's
/// `Adam::scalars`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamArgs {
    pub p: u64,
    pub g: u64,
    pub m: u64,
    pub v: u64,
    pub len: i32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub w1: f32,
    pub w2: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// `SgdArgs`: see `optim.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SgdArgs {
    pub p: u64,
    pub g: u64,
    pub buf: u64,
    pub len: i32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub first: i32,
    pub pad_: i32,
}

/// `UpsampleArgs`: see `resize.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UpsampleArgs {
    pub x: u64,
    pub y: u64,
    pub dy: u64,
    pub dx: u64,
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w_in: i32,
    pub oh: i32,
    pub ow: i32,
    pub act: i32,
    pub pad_: i32,
}

/// `DropoutArgs`: see `dropout.cu`; `threshold` and `scale` are
/// lenet-core's `dropout::threshold` and `dropout::scale`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DropoutArgs {
    pub x: u64,
    pub y: u64,
    pub dy: u64,
    pub dx: u64,
    pub seed: u64,
    pub step: u64,
    pub layer: u32,
    pub threshold: u32,
    pub scale: f32,
    pub len: i32,
    pub act: i32,
    pub pad_: i32,
}

/// A kernel's argument struct: plain old data without padding, passed to
/// the kernel by value.
///
/// # Safety
/// Implemented only for the `#[repr(C)]` structs above, whose layout the
/// `.cu` side declares identically.
pub unsafe trait KernelArgs: Copy + core::fmt::Debug + 'static {}

// SAFETY: each is #[repr(C)], all fields are plain numbers, and the field
// order leaves no padding (sizes checked against the C compiler in tests).
unsafe impl KernelArgs for GatherArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for ConvArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for PoolArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for ActArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for LinearArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for LossArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for AdamArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for SgdArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for UpsampleArgs {}
// SAFETY: as above.
unsafe impl KernelArgs for DropoutArgs {}
