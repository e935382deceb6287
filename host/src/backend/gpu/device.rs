//! What the CUDA trainer needs from a device: memory, copies and kernel
//! launches. Two implement it: the real GPU through the CUDA driver
//! (feature `cuda`), and the emulated device (feature `cuda-emu`), which
//! runs the same kernel sources compiled for the CPU.

use super::args::KernelArgs;
use crate::backend::TrainerError;

/// Every kernel, by the name it has in `host/cuda/*.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kernel {
    GatherBatch,
    Conv2dForward,
    Conv2dForwardGemm,
    Conv2dForwardGemmLarge,
    Conv2dBackwardInput,
    Conv2dBackwardInputGemm,
    Conv2dBackwardInputGemmLarge,
    Conv2dBackwardWeight,
    Conv2dBackwardWeightGemm,
    Conv2dBackwardWeightGemmLarge,
    Conv2dBackwardWeightReduce,
    PoolForward,
    PoolBackward,
    ActivationForward,
    LinearForward,
    LinearForwardLarge,
    LinearBackwardInput,
    LinearBackwardInputLarge,
    LinearBackwardWeight,
    LinearBackwardWeightLarge,
    SoftmaxCrossEntropy,
    AdamUpdate,
    SgdUpdate,
    UpsampleForward,
    UpsampleBackward,
    DropoutForward,
    DropoutBackward,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 27] = [
        Kernel::GatherBatch,
        Kernel::Conv2dForward,
        Kernel::Conv2dForwardGemm,
        Kernel::Conv2dForwardGemmLarge,
        Kernel::Conv2dBackwardInput,
        Kernel::Conv2dBackwardInputGemm,
        Kernel::Conv2dBackwardInputGemmLarge,
        Kernel::Conv2dBackwardWeight,
        Kernel::Conv2dBackwardWeightGemm,
        Kernel::Conv2dBackwardWeightGemmLarge,
        Kernel::Conv2dBackwardWeightReduce,
        Kernel::PoolForward,
        Kernel::PoolBackward,
        Kernel::ActivationForward,
        Kernel::LinearForward,
        Kernel::LinearForwardLarge,
        Kernel::LinearBackwardInput,
        Kernel::LinearBackwardInputLarge,
        Kernel::LinearBackwardWeight,
        Kernel::LinearBackwardWeightLarge,
        Kernel::SoftmaxCrossEntropy,
        Kernel::AdamUpdate,
        Kernel::SgdUpdate,
        Kernel::UpsampleForward,
        Kernel::UpsampleBackward,
        Kernel::DropoutForward,
        Kernel::DropoutBackward,
    ];

    /// The `extern "C"` name of the kernel.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::GatherBatch => "gather_batch",
            Kernel::Conv2dForward => "conv2d_forward",
            Kernel::Conv2dForwardGemm => "conv2d_forward_gemm",
            Kernel::Conv2dForwardGemmLarge => "conv2d_forward_gemm_large",
            Kernel::Conv2dBackwardInput => "conv2d_backward_input",
            Kernel::Conv2dBackwardInputGemm => "conv2d_backward_input_gemm",
            Kernel::Conv2dBackwardInputGemmLarge => "conv2d_backward_input_gemm_large",
            Kernel::Conv2dBackwardWeight => "conv2d_backward_weight",
            Kernel::Conv2dBackwardWeightGemm => "conv2d_backward_weight_gemm",
            Kernel::Conv2dBackwardWeightGemmLarge => "conv2d_backward_weight_gemm_large",
            Kernel::Conv2dBackwardWeightReduce => "conv2d_backward_weight_reduce",
            Kernel::PoolForward => "pool_forward",
            Kernel::PoolBackward => "pool_backward",
            Kernel::ActivationForward => "activation_forward",
            Kernel::LinearForward => "linear_forward",
            Kernel::LinearForwardLarge => "linear_forward_large",
            Kernel::LinearBackwardInput => "linear_backward_input",
            Kernel::LinearBackwardInputLarge => "linear_backward_input_large",
            Kernel::LinearBackwardWeight => "linear_backward_weight",
            Kernel::LinearBackwardWeightLarge => "linear_backward_weight_large",
            Kernel::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Kernel::AdamUpdate => "adam_update",
            Kernel::SgdUpdate => "sgd_update",
            Kernel::UpsampleForward => "upsample_forward",
            Kernel::UpsampleBackward => "upsample_backward",
            Kernel::DropoutForward => "dropout_forward",
            Kernel::DropoutBackward => "dropout_backward",
        }
    }

    /// The source file (in `host/cuda/`, without `.cu`) that defines it,
    /// which is also the PTX module it is loaded from.
    pub const fn file(self) -> &'static str {
        match self {
            Kernel::GatherBatch => "data",
            Kernel::Conv2dForward
            | Kernel::Conv2dForwardGemm
            | Kernel::Conv2dForwardGemmLarge
            | Kernel::Conv2dBackwardInput
            | Kernel::Conv2dBackwardInputGemm
            | Kernel::Conv2dBackwardInputGemmLarge
            | Kernel::Conv2dBackwardWeight
            | Kernel::Conv2dBackwardWeightGemm
            | Kernel::Conv2dBackwardWeightGemmLarge
            | Kernel::Conv2dBackwardWeightReduce => "conv2d",
            Kernel::PoolForward | Kernel::PoolBackward => "pool",
            Kernel::ActivationForward => "activation",
            Kernel::LinearForward
            | Kernel::LinearForwardLarge
            | Kernel::LinearBackwardInput
            | Kernel::LinearBackwardInputLarge
            | Kernel::LinearBackwardWeight
            | Kernel::LinearBackwardWeightLarge => "linear",
            Kernel::SoftmaxCrossEntropy => "loss",
            Kernel::AdamUpdate | Kernel::SgdUpdate => "optim",
            Kernel::UpsampleForward | Kernel::UpsampleBackward => "resize",
            Kernel::DropoutForward | Kernel::DropoutBackward => "dropout",
        }
    }

    /// Position in [`Kernel::ALL`].
    pub fn index(self) -> usize {
        Kernel::ALL.iter().position(|&k| k == self).unwrap_or(0)
    }
}

/// Threads per block of every launch; the block-reduction kernels need
/// exactly `REDUCE_THREADS` of `lenet.cuh`.
pub const BLOCK: u32 = 256;

/// A device address (a `CUdeviceptr`, or a host address on the emulator).
pub type DevPtr = u64;

/// Memory, copies and launches on one device, in one stream: operations
/// run in the order they are issued; [`download`](Device::download) waits
/// for everything before it.
pub trait Device: Send {
    /// `"cuda"` or `"cuda-emu"`.
    fn kind(&self) -> &'static str;
    /// The device, for messages (`"NVIDIA H100 80GB HBM3"`).
    fn describe(&self) -> String;
    /// `bytes` of device memory, uninitialized (as `cuMemAlloc` gives it:
    /// the emulated device fills it with a poison pattern and reports a
    /// read of a byte nothing wrote), freed when the device is dropped or
    /// by [`free`](Device::free).
    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, TrainerError>;
    /// Sets `bytes` bytes from `dst` to zero.
    fn zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), TrainerError>;
    /// Frees what [`alloc`](Device::alloc) returned.
    fn free(&mut self, ptr: DevPtr) -> Result<(), TrainerError>;
    /// Copies `src` to device address `dst`.
    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainerError>;
    /// Copies from device address `src` into `dst`, after all work issued
    /// before.
    fn download(&mut self, dst: &mut [u8], src: DevPtr) -> Result<(), TrainerError>;
    /// Launches `kernel` on a 1-D grid of `grid` blocks of `block` threads.
    ///
    /// # Safety
    /// `args` points to `args_size` bytes holding `kernel`'s argument
    /// struct, and every device pointer in it is a live allocation of this
    /// device large enough for what the kernel reads and writes.
    unsafe fn launch_raw(
        &mut self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: *const core::ffi::c_void,
        args_size: usize,
    ) -> Result<(), TrainerError>;
    /// Waits for all issued work.
    fn sync(&mut self) -> Result<(), TrainerError>;
    /// Free device memory in bytes, where the device can tell.
    fn free_memory(&mut self) -> Result<Option<usize>, TrainerError> {
        Ok(None)
    }
    /// A point in the stream of issued work, for timing launches. By
    /// default the host clock after waiting for the work issued so far
    /// (exact on a device that runs each launch before returning).
    fn mark(&mut self) -> Result<Mark, TrainerError> {
        self.sync()?;
        Ok(Mark::Host(std::time::Instant::now()))
    }
    /// Milliseconds from mark `from` to the later mark `to`, waiting for
    /// the work before `to`.
    fn elapsed_ms(&mut self, from: Mark, to: Mark) -> Result<f64, TrainerError> {
        match (from, to) {
            (Mark::Host(a), Mark::Host(b)) => Ok(b.duration_since(a).as_secs_f64() * 1e3),
            _ => Err(TrainerError::Device {
                device: self.kind(),
                msg: "timing marks of another kind of device".into(),
            }),
        }
    }
    /// Releases every mark made so far.
    fn clear_marks(&mut self) -> Result<(), TrainerError> {
        Ok(())
    }
}

/// A timestamp in a device's stream: the host clock, or the index of a
/// device event.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    /// Taken on the host after the work before it finished.
    Host(std::time::Instant),
    /// The device's own event number (see [`Device::clear_marks`]).
    Event(usize),
}

/// Typed launch helpers over [`Device::launch_raw`].
pub trait DeviceExt: Device {
    /// Launches `kernel` with `args` on `grid` blocks of [`BLOCK`] threads.
    fn launch<A: KernelArgs>(
        &mut self,
        kernel: Kernel,
        grid: u32,
        args: &A,
    ) -> Result<(), TrainerError> {
        // SAFETY: `args` is a whole argument struct (KernelArgs); the
        // trainer sizes every buffer it names before launching.
        unsafe {
            self.launch_raw(
                kernel,
                grid,
                BLOCK,
                (args as *const A).cast(),
                core::mem::size_of::<A>(),
            )
        }
    }

    /// Launches `kernel` with one thread per item of `items` (at least one
    /// block).
    fn launch_over<A: KernelArgs>(
        &mut self,
        kernel: Kernel,
        items: usize,
        args: &A,
    ) -> Result<(), TrainerError> {
        let grid = items.div_ceil(BLOCK as usize).max(1);
        let grid = u32::try_from(grid).map_err(|_| TrainerError::Device {
            device: self.kind(),
            msg: format!("{}: {items} threads exceed one grid", kernel.name()),
        })?;
        self.launch(kernel, grid, args)
    }

    /// `bytes` of device memory set to zero.
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<DevPtr, TrainerError> {
        let p = self.alloc(bytes)?;
        if let Err(e) = self.zero(p, bytes) {
            let _ = self.free(p);
            return Err(e);
        }
        Ok(p)
    }

    /// Uploads a slice of plain numbers.
    fn upload_slice<T: bytemuck_lite::Pod>(
        &mut self,
        dst: DevPtr,
        src: &[T],
    ) -> Result<(), TrainerError> {
        self.upload(dst, bytemuck_lite::bytes(src))
    }

    /// Downloads into a slice of plain numbers.
    fn download_slice<T: bytemuck_lite::Pod>(
        &mut self,
        dst: &mut [T],
        src: DevPtr,
    ) -> Result<(), TrainerError> {
        self.download(bytemuck_lite::bytes_mut(dst), src)
    }
}

impl<D: Device + ?Sized> DeviceExt for D {}

/// Byte views of slices of plain numbers.
pub mod bytemuck_lite {
    /// Numbers whose every bit pattern is valid and that have no padding.
    ///
    /// # Safety
    /// Only for the primitive number types below.
    pub unsafe trait Pod: Copy {}
    // SAFETY: primitive numbers: no padding, every bit pattern valid.
    unsafe impl Pod for f32 {}
    // SAFETY: as above.
    unsafe impl Pod for u32 {}
    // SAFETY: as above.
    unsafe impl Pod for i32 {}
    // SAFETY: as above.
    unsafe impl Pod for u8 {}
    // SAFETY: as above.
    unsafe impl Pod for i8 {}

    /// The bytes of `s`.
    pub fn bytes<T: Pod>(s: &[T]) -> &[u8] {
        // SAFETY: T is Pod (no padding), the length is the slice's size in
        // bytes, and u8 has alignment 1.
        unsafe { core::slice::from_raw_parts(s.as_ptr().cast(), core::mem::size_of_val(s)) }
    }

    /// The bytes of `s`, writable.
    pub fn bytes_mut<T: Pod>(s: &mut [T]) -> &mut [u8] {
        // SAFETY: as in `bytes`; every bit pattern is a valid T.
        unsafe { core::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), core::mem::size_of_val(s)) }
    }
}
