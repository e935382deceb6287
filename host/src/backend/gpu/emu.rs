//! The emulated CUDA device (feature `cuda-emu`): device memory is host
//! memory, and a launch runs the kernel's C++ build from
//! `host/cuda/emu/emu.cpp` (the same `.cu` sources as the PTX) under the
//! scheduler of `cuda_emu.h`. For tests and for checking the CUDA trainer
//! on machines without a GPU; it is slow (one CPU thread).
//!
//! Every launch makes the checks compute-sanitizer makes on a GPU
//! (`cuda_emu.h` says how): memcheck (every global access inside one
//! allocation, every shared index inside its array), initcheck (fresh
//! memory and each block's shared memory hold a poison pattern, and
//! reading a byte nothing wrote is an error), racecheck (two threads on
//! one shared element between two barriers, one of them writing). Blocks
//! and threads run in the device's [`ThreadOrder`]. A failed check fails
//! the launch with a message naming the check, kernel, block, thread,
//! allocation and offset.

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr::NonNull;

use super::device::{DevPtr, Device, Kernel};
use crate::backend::TrainerError;

/// The C++ side's device: its allocations.
#[repr(C)]
struct RawDevice {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn lenet_emu_device_new() -> *mut RawDevice;
    fn lenet_emu_device_free(d: *mut RawDevice);
    fn lenet_emu_alloc(d: *mut RawDevice, bytes: usize) -> u64;
    fn lenet_emu_dealloc(d: *mut RawDevice, p: u64) -> c_int;
    fn lenet_emu_copy(
        d: *mut RawDevice,
        dir: c_int,
        dev: u64,
        host: *mut c_void,
        len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn lenet_emu_find(name: *const c_char) -> c_int;
    fn lenet_emu_args_size(k: c_int) -> usize;
    fn lenet_emu_launch(
        d: *mut RawDevice,
        k: c_int,
        grid: *const u32,
        block: *const u32,
        args: *const c_void,
        order_mode: c_int,
        seed: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

/// In which order the blocks of a grid and the threads of a block run
/// (they are sequential on the CPU); results must not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadOrder {
    /// Block 0 and thread 0 first.
    Ascending,
    /// The last block and the last thread first.
    Descending,
    /// Permutations drawn from the seed: of the blocks anew for every
    /// launch, of the threads anew for every block and phase.
    Shuffled(u64),
}

/// Host memory posing as device memory, and the CPU build of the kernels.
pub struct EmuDevice {
    order: ThreadOrder,
    raw: NonNull<RawDevice>,
    kernels: Vec<c_int>,
}

// SAFETY: the C++ device is plain data (its allocations) with no tie to
// the thread that made it; `&mut self` on every call keeps it to one
// thread at a time.
unsafe impl Send for EmuDevice {}

impl Drop for EmuDevice {
    fn drop(&mut self) {
        // SAFETY: made by lenet_emu_device_new, freed once.
        unsafe { lenet_emu_device_free(self.raw.as_ptr()) }
    }
}

fn err(msg: String) -> TrainerError {
    TrainerError::Device {
        device: "cuda-emu",
        msg,
    }
}

fn kernel_index(name: &str) -> Result<c_int, TrainerError> {
    let c = CString::new(name).map_err(|e| err(e.to_string()))?;
    // SAFETY: a NUL-terminated string; the function only reads it.
    let i = unsafe { lenet_emu_find(c.as_ptr()) };
    if i < 0 {
        return Err(err(format!("no kernel {name} in the emulator")));
    }
    Ok(i)
}

fn message(msg: &[c_char]) -> String {
    let bytes: Vec<u8> = msg
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl EmuDevice {
    /// A new emulated device running blocks and threads in `order`.
    ///
    /// # Errors
    /// A kernel of [`Kernel::ALL`] is missing from the emulator's table, or
    /// no memory for the device.
    pub fn new(order: ThreadOrder) -> Result<EmuDevice, TrainerError> {
        let kernels = Kernel::ALL
            .iter()
            .map(|k| kernel_index(k.name()))
            .collect::<Result<_, _>>()?;
        // SAFETY: no arguments; null only when out of memory.
        let raw = NonNull::new(unsafe { lenet_emu_device_new() })
            .ok_or_else(|| err("no memory for the emulated device".into()))?;
        Ok(EmuDevice {
            order,
            raw,
            kernels,
        })
    }

    /// Runs `kernel` with one bug planted from now on (`host/build.rs`
    /// lists them: `past_end`, `h_as_w` in the pooling kernels,
    /// `no_barrier` in the convolution's weight gradient), to show that
    /// the checks catch that class of bug.
    ///
    /// # Errors
    /// No such planted copy of `kernel`.
    pub fn plant(&mut self, kernel: Kernel, bug: &str) -> Result<(), TrainerError> {
        self.kernels[kernel.index()] = kernel_index(&format!("planted_{bug}__{}", kernel.name()))?;
        Ok(())
    }

    /// The C compiler's `sizeof` of `kernel`'s argument struct.
    pub fn args_size(&self, kernel: Kernel) -> usize {
        // SAFETY: plain query of a table index.
        unsafe { lenet_emu_args_size(self.kernels[kernel.index()]) }
    }

    fn order_mode(&self) -> (c_int, u64) {
        match self.order {
            ThreadOrder::Ascending => (0, 0),
            ThreadOrder::Descending => (1, 0),
            ThreadOrder::Shuffled(s) => (2, s),
        }
    }

    fn copy(
        &mut self,
        dir: c_int,
        dev: DevPtr,
        host: *mut u8,
        len: usize,
    ) -> Result<(), TrainerError> {
        let mut msg = [0 as c_char; 256];
        // SAFETY: `host` points to `len` bytes the caller owns (read for
        // dir 0, written for dir 1, unused for 2); the device range is
        // checked against the allocations before it is touched.
        let rc = unsafe {
            lenet_emu_copy(
                self.raw.as_ptr(),
                dir,
                dev,
                host.cast(),
                len,
                msg.as_mut_ptr(),
                msg.len(),
            )
        };
        if rc != 0 {
            return Err(err(message(&msg)));
        }
        Ok(())
    }

    /// Launches kernel table entry `k`.
    ///
    /// # Safety
    /// `args` points to the whole argument struct of entry `k`.
    unsafe fn launch_index(
        &mut self,
        k: c_int,
        grid: u32,
        block: u32,
        args: *const c_void,
    ) -> Result<(), TrainerError> {
        let (mode, seed) = self.order_mode();
        let mut msg = [0 as c_char; 640];
        // SAFETY: `args` is the kernel's argument struct (the caller's
        // promise); every access the kernel makes through it is checked
        // against this device's allocations, so a wrong pointer or size
        // is an error, never a wild access.
        let rc = unsafe {
            lenet_emu_launch(
                self.raw.as_ptr(),
                k,
                [grid, 1, 1].as_ptr(),
                [block, 1, 1].as_ptr(),
                args,
                mode,
                seed,
                msg.as_mut_ptr(),
                msg.len(),
            )
        };
        if rc != 0 {
            return Err(err(message(&msg)));
        }
        Ok(())
    }
}

/// The emulator's own test kernels (`host/cuda/emu/emu.cpp`), each a bug
/// its checks must report, or the correct block sum beside them.
pub const SELFTESTS: [&str; 6] = [
    "selftest_sum",
    "selftest_racy_sum",
    "selftest_equal_race",
    "selftest_stale_shared",
    "selftest_past_end",
    "selftest_block_chain",
];

/// Runs the emulator's test kernel `name` (of [`SELFTESTS`]) on `blocks`
/// blocks of 64 threads in `order`: `x` holds 1..=64 and `out` has `n`
/// floats that nothing wrote before. Returns `out`, or the error the
/// checks report.
///
/// # Errors
/// The launch failed: the checks found the kernel's bug.
pub fn selftest(
    order: ThreadOrder,
    name: &str,
    blocks: u32,
    n: usize,
) -> Result<Vec<f32>, TrainerError> {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SelftestArgs {
        x: u64,
        out: u64,
        n: i32,
        pad: i32,
    }
    let mut dev = EmuDevice::new(order)?;
    let k = kernel_index(name)?;
    let x: Vec<f32> = (1..=64).map(|v| v as f32).collect();
    let xp = dev.alloc(64 * 4)?;
    dev.upload(xp, super::device::bytemuck_lite::bytes(&x))?;
    let out = dev.alloc(n * 4)?;
    let args = SelftestArgs {
        x: xp,
        out,
        n: i32::try_from(n).map_err(|e| err(e.to_string()))?,
        pad: 0,
    };
    // SAFETY: the selftest kernels take SelftestArgs.
    unsafe { dev.launch_index(k, blocks, 64, (&args as *const SelftestArgs).cast())? };
    let mut v = vec![0.0f32; n];
    dev.download(super::device::bytemuck_lite::bytes_mut(&mut v), out)?;
    Ok(v)
}

impl Device for EmuDevice {
    fn kind(&self) -> &'static str {
        "cuda-emu"
    }

    fn describe(&self) -> String {
        format!(
            "emulated CUDA device on the CPU (memcheck, initcheck, racecheck), blocks and threads {:?}",
            self.order
        )
    }

    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, TrainerError> {
        // SAFETY: a live device; 0 only when out of memory.
        let p = unsafe { lenet_emu_alloc(self.raw.as_ptr(), bytes) };
        if p == 0 {
            return Err(err(format!("out of memory allocating {bytes} bytes")));
        }
        Ok(p)
    }

    fn free(&mut self, ptr: DevPtr) -> Result<(), TrainerError> {
        // SAFETY: a live device; an unknown pointer is reported, not freed.
        if unsafe { lenet_emu_dealloc(self.raw.as_ptr(), ptr) } != 0 {
            return Err(err(format!("free of {ptr:#x}, which was not allocated")));
        }
        Ok(())
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainerError> {
        // (dir 0 only reads through the pointer)
        self.copy(0, dst, src.as_ptr().cast_mut(), src.len())
    }

    fn download(&mut self, dst: &mut [u8], src: DevPtr) -> Result<(), TrainerError> {
        self.copy(1, src, dst.as_mut_ptr(), dst.len())
    }

    fn zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), TrainerError> {
        self.copy(2, dst, std::ptr::null_mut(), bytes)
    }

    unsafe fn launch_raw(
        &mut self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: *const c_void,
        args_size: usize,
    ) -> Result<(), TrainerError> {
        let want = self.args_size(kernel);
        if want != args_size {
            return Err(err(format!(
                "{}: arguments of {args_size} bytes, the kernel takes {want}",
                kernel.name()
            )));
        }
        // SAFETY: `args` holds `args_size` bytes of the kernel's argument
        // struct (the caller's promise, its size checked above).
        unsafe { self.launch_index(self.kernels[kernel.index()], grid, block, args) }
    }

    fn sync(&mut self) -> Result<(), TrainerError> {
        Ok(())
    }
}
