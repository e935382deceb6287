//! The emulated CUDA device (feature `cuda-emu`): device memory is host
//! memory, and a launch runs the kernel's C++ build from
//! `host/cuda/emu/emu.cpp` (the same `.cu` sources as the PTX) under the
//! scheduler of `cuda_emu.h`. For tests and for checking the CUDA trainer
//! on machines without a GPU; it is slow (one CPU thread).

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_int, c_void};

use super::device::{DevPtr, Device, Kernel};
use crate::trainer::TrainerError;

unsafe extern "C" {
    fn lenet_emu_find(name: *const c_char) -> c_int;
    fn lenet_emu_args_size(k: c_int) -> usize;
    fn lenet_emu_launch(
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

/// In which order the threads of a block run (they are sequential on the
/// CPU); results must not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadOrder {
    /// Thread 0 first.
    Ascending,
    /// The last thread first.
    Descending,
    /// A permutation drawn from the seed, anew for every block and phase.
    Shuffled(u64),
}

/// Host memory posing as device memory, and the CPU build of the kernels.
pub struct EmuDevice {
    order: ThreadOrder,
    /// Allocations by address; u64 storage keeps every one 8-byte aligned.
    mem: HashMap<DevPtr, Vec<u64>>,
    kernels: Vec<c_int>,
}

fn err(msg: String) -> TrainerError {
    TrainerError::Device {
        device: "cuda-emu",
        msg,
    }
}

impl EmuDevice {
    /// A new emulated device running threads in `order`.
    ///
    /// # Errors
    /// A kernel of [`Kernel::ALL`] is missing from the emulator's table.
    pub fn new(order: ThreadOrder) -> Result<EmuDevice, TrainerError> {
        let kernels = Kernel::ALL
            .iter()
            .map(|k| {
                let name = CString::new(k.name()).map_err(|e| err(e.to_string()))?;
                // SAFETY: a NUL-terminated string; the function only reads it.
                let i = unsafe { lenet_emu_find(name.as_ptr()) };
                if i < 0 {
                    return Err(err(format!("no kernel {} in the emulator", k.name())));
                }
                Ok(i)
            })
            .collect::<Result<_, _>>()?;
        Ok(EmuDevice {
            order,
            mem: HashMap::new(),
            kernels,
        })
    }

    /// The C compiler's `sizeof` of `kernel`'s argument struct.
    pub fn args_size(&self, kernel: Kernel) -> usize {
        // SAFETY: plain query of a table index.
        unsafe { lenet_emu_args_size(self.kernels[kernel.index()]) }
    }

    /// The allocation holding `[ptr, ptr + len)`, as bytes from `ptr`.
    fn find(&mut self, ptr: DevPtr, len: usize) -> Result<&mut [u8], TrainerError> {
        for (&base, v) in self.mem.iter_mut() {
            let size = v.len() * 8;
            if ptr >= base && ptr - base <= size as u64 && len <= size - (ptr - base) as usize {
                let off = (ptr - base) as usize;
                // SAFETY: the Vec<u64> owns `size` initialized bytes; u8
                // has alignment 1.
                let bytes: &mut [u8] =
                    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), size) };
                return Ok(&mut bytes[off..off + len]);
            }
        }
        Err(err(format!(
            "{len} bytes at {ptr:#x} are not inside one allocation"
        )))
    }
}

/// Runs the emulator's own test kernels on 64 threads whose values are
/// 1..=64, in `order`: a block sum with its `__syncthreads` and the same sum
/// without it. Returns both sums (the first is 2080 in any order; the
/// second is 2080 only when thread 0 happens to run last).
///
/// # Errors
/// A launch failed.
pub fn selftest(order: ThreadOrder) -> Result<(f32, f32), TrainerError> {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SelftestArgs {
        x: u64,
        out: u64,
    }
    let dev = EmuDevice::new(order)?;
    let x: Vec<f32> = (1..=64).map(|v| v as f32).collect();
    let mut sums = [0.0f32; 2];
    for (name, sum) in ["selftest_sum", "selftest_racy_sum"].iter().zip(&mut sums) {
        let c = CString::new(*name).map_err(|e| err(e.to_string()))?;
        // SAFETY: a NUL-terminated string; the function only reads it.
        let k = unsafe { lenet_emu_find(c.as_ptr()) };
        let args = SelftestArgs {
            x: x.as_ptr() as u64,
            out: sum as *mut f32 as u64,
        };
        let (mode, seed) = dev.order_mode();
        let mut msg = [0 as c_char; 256];
        // SAFETY: the kernel reads 64 floats of `x` and writes one float to
        // `out`, both alive for the call; 64 threads in one block.
        let rc = unsafe {
            lenet_emu_launch(
                k,
                [1, 1, 1].as_ptr(),
                [64, 1, 1].as_ptr(),
                (&args as *const SelftestArgs).cast(),
                mode,
                seed,
                msg.as_mut_ptr(),
                msg.len(),
            )
        };
        if rc != 0 {
            return Err(err(message(&msg)));
        }
    }
    Ok((sums[0], sums[1]))
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
    fn order_mode(&self) -> (c_int, u64) {
        match self.order {
            ThreadOrder::Ascending => (0, 0),
            ThreadOrder::Descending => (1, 0),
            ThreadOrder::Shuffled(s) => (2, s),
        }
    }
}

impl Device for EmuDevice {
    fn kind(&self) -> &'static str {
        "cuda-emu"
    }

    fn describe(&self) -> String {
        format!("emulated CUDA device on the CPU, threads {:?}", self.order)
    }

    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, TrainerError> {
        let v = vec![0u64; bytes.div_ceil(8).max(1)];
        let p = v.as_ptr() as DevPtr;
        self.mem.insert(p, v);
        Ok(p)
    }

    fn free(&mut self, ptr: DevPtr) -> Result<(), TrainerError> {
        self.mem
            .remove(&ptr)
            .map(drop)
            .ok_or_else(|| err(format!("free of {ptr:#x}, which was not allocated")))
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainerError> {
        self.find(dst, src.len())?.copy_from_slice(src);
        Ok(())
    }

    fn download(&mut self, dst: &mut [u8], src: DevPtr) -> Result<(), TrainerError> {
        dst.copy_from_slice(self.find(src, dst.len())?);
        Ok(())
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
        let (mode, seed) = self.order_mode();
        let mut msg = [0 as c_char; 256];
        // SAFETY: `args` points to `args_size` bytes of the kernel's
        // argument struct (checked above); every device pointer in it was
        // handed out by `alloc` of this device and stays alive; the kernels
        // index only inside the buffers the trainer sized for them.
        let rc = unsafe {
            lenet_emu_launch(
                self.kernels[kernel.index()],
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
            let bytes: Vec<u8> = msg
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            return Err(err(String::from_utf8_lossy(&bytes).into_owned()));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), TrainerError> {
        Ok(())
    }
}
