//! The real GPU behind [`Device`] (feature `cuda`), through the CUDA driver
//! API. The driver library is loaded at run time, so this compiles and runs
//! without a CUDA installation, and the kernels ship as PTX inside the
//! binary (`host/cuda/ptx`, made from `host/cuda/*.cu` by
//! `scripts/cuda_ptx.py`): the user's machine needs the NVIDIA driver only.
//!
//! What the emulated device cannot check is what this file does: the
//! driver calls themselves (context, module loading and JIT, memory,
//! copies, launches). It keeps them few and plain: one context, the legacy
//! default stream (every operation in issue order), synchronous copies.

use std::collections::HashSet;
use std::ffi::{CString, c_void};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, DriverError, result, sys};

use crate::backend::TrainerError;
use crate::backend::gpu::device::{DevPtr, Device, Kernel, Mark};

/// The PTX modules, by source file name.
const PTX: [(&str, &str); 9] = [
    (
        "activation",
        include_str!("../../../cuda/ptx/activation.ptx"),
    ),
    ("conv2d", include_str!("../../../cuda/ptx/conv2d.ptx")),
    ("data", include_str!("../../../cuda/ptx/data.ptx")),
    ("dropout", include_str!("../../../cuda/ptx/dropout.ptx")),
    ("linear", include_str!("../../../cuda/ptx/linear.ptx")),
    ("loss", include_str!("../../../cuda/ptx/loss.ptx")),
    ("optim", include_str!("../../../cuda/ptx/optim.ptx")),
    ("pool", include_str!("../../../cuda/ptx/pool.ptx")),
    ("resize", include_str!("../../../cuda/ptx/resize.ptx")),
];

/// The oldest driver that loads the PTX: ISA 8.0 comes with CUDA 12.0
/// (driver R525).
pub const MIN_DRIVER: i32 = 12000;

/// `Ok(device name)` if the driver loads, is new enough and device 0 is
/// Volta or newer; else the reason.
pub fn probe() -> Result<String, String> {
    open().map(|(_, name)| name)
}

/// The context of device 0 and the device's name, once the driver is found
/// and the device checked; else the reason.
fn open() -> Result<(Arc<CudaContext>, String), String> {
    // SAFETY: `is_culib_present` only tries to dlopen the driver library by
    // its usual names and drops it; it calls no CUDA function.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return Err("no CUDA driver library (libcuda.so) found; install the NVIDIA driver".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot open CUDA device 0: {e}"))?;
    check_device(&ctx)?;
    let name = ctx
        .name()
        .map_err(|e| format!("cannot query CUDA device 0: {e}"))?;
    Ok((ctx, name))
}

/// Bytes of each JIT log buffer.
const JIT_LOG: usize = 16 * 1024;

/// Loads one PTX module with the driver's JIT error and info logs; on
/// failure the message names the module and carries the error log.
fn load_module(file: &str, ptx: &str) -> Result<sys::CUmodule, TrainerError> {
    let text = CString::new(ptx).map_err(|e| TrainerError::Device {
        device: "cuda",
        msg: format!("{file}.ptx: {e}"),
    })?;
    let mut error_log = vec![0u8; JIT_LOG];
    let mut info_log = vec![0u8; JIT_LOG];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
    ];
    // The sizes travel as pointer-sized integers, as the driver API takes
    // them.
    let mut values = [
        error_log.as_mut_ptr().cast::<c_void>(),
        JIT_LOG as *mut c_void,
        info_log.as_mut_ptr().cast::<c_void>(),
        JIT_LOG as *mut c_void,
    ];
    let mut module = std::mem::MaybeUninit::<sys::CUmodule>::uninit();
    // SAFETY: a NUL-terminated PTX text; four options with their values,
    // the buffers alive and `JIT_LOG` bytes long for the call; the context
    // is current.
    let rc = unsafe {
        sys::cuModuleLoadDataEx(
            module.as_mut_ptr(),
            text.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    match rc.result() {
        // SAFETY: the driver wrote the module on success.
        Ok(()) => Ok(unsafe { module.assume_init() }),
        Err(e) => {
            let log = |b: &[u8]| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end])
                    .trim()
                    .replace('\n', "; ")
            };
            Err(TrainerError::Device {
                device: "cuda",
                msg: format!(
                    "loading {file}.ptx (the driver JIT-compiles it): {e}; JIT log: {} {}",
                    log(&error_log),
                    log(&info_log)
                ),
            })
        }
    }
}

fn check_device(ctx: &Arc<CudaContext>) -> Result<(), String> {
    let mut version = 0;
    // SAFETY: writes one int; the driver is initialized by CudaContext::new.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| format!("cannot query the CUDA driver version: {e}"))?;
    if version < MIN_DRIVER {
        return Err(format!(
            "the NVIDIA driver supports CUDA {}.{}; lenet's kernels need CUDA 12.0 or newer (driver R525 or newer)",
            version / 1000,
            version % 1000 / 10
        ));
    }
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| format!("cannot query the compute capability: {e}"))?;
    if major < 7 {
        return Err(format!(
            "compute capability {major}.{minor}: lenet's kernels need Volta (7.0) or newer"
        ));
    }
    Ok(())
}

/// One CUDA device: its context, the loaded kernels and the allocations.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    name: String,
    modules: Vec<sys::CUmodule>,
    /// By [`Kernel::index`].
    functions: Vec<sys::CUfunction>,
    allocs: HashSet<DevPtr>,
    /// Events made by [`Device::mark`], until [`Device::clear_marks`].
    events: Vec<sys::CUevent>,
    /// Time to load the modules.
    jit: Duration,
}

// SAFETY: the handles are plain driver handles, valid in any thread once
// the context is current; every method makes the context current first.
unsafe impl Send for CudaDevice {}

fn err(what: &str, e: DriverError) -> TrainerError {
    TrainerError::Device {
        device: "cuda",
        msg: format!("{what}: {e}"),
    }
}

impl CudaDevice {
    /// Opens device 0 and loads the kernels (the driver JIT-compiles the
    /// PTX for this GPU on first use and caches it).
    ///
    /// # Errors
    /// No driver, a driver or GPU too old, or a failed module load, with
    /// the reason.
    pub fn new() -> Result<CudaDevice, TrainerError> {
        let fail = |msg: String| TrainerError::Device {
            device: "cuda",
            msg,
        };
        let (ctx, name) = open().map_err(fail)?;
        ctx.bind_to_thread().map_err(|e| err("bind context", e))?;
        let start = Instant::now();
        let mut modules = Vec::new();
        for (file, ptx) in PTX {
            match load_module(file, ptx) {
                Ok(m) => modules.push(m),
                Err(e) => {
                    for m in modules {
                        // SAFETY: loaded above; no function of it is in use.
                        let _ = unsafe { result::module::unload(m) };
                    }
                    return Err(e);
                }
            }
        }
        let jit = start.elapsed();
        let mut dev = CudaDevice {
            ctx,
            name,
            modules,
            functions: Vec::new(),
            allocs: HashSet::new(),
            events: Vec::new(),
            jit,
        };
        for k in Kernel::ALL {
            let module = PTX
                .iter()
                .position(|(f, _)| *f == k.file())
                .map(|i| dev.modules[i])
                .ok_or_else(|| fail(format!("no PTX module {}", k.file())))?;
            let name = CString::new(k.name()).map_err(|e| fail(e.to_string()))?;
            // SAFETY: the module was loaded above and is not unloaded.
            let f = unsafe { result::module::get_function(module, name) }
                .map_err(|e| err(&format!("kernel {}", k.name()), e))?;
            dev.functions.push(f);
        }
        Ok(dev)
    }

    /// How long loading the PTX modules took (the driver's JIT compile, or
    /// its cache).
    pub fn jit_time(&self) -> Duration {
        self.jit
    }

    fn bind(&self) -> Result<(), TrainerError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| err("make the context current", e))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        for &p in &self.allocs {
            // SAFETY: allocated by `alloc` in this context and not freed.
            let _ = unsafe { result::free_sync(p) };
        }
        let _ = self.clear_marks();
        for &m in &self.modules {
            // SAFETY: loaded in `new`; no function of it is used after this.
            let _ = unsafe { result::module::unload(m) };
        }
    }
}

impl Device for CudaDevice {
    fn kind(&self) -> &'static str {
        "cuda"
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn alloc(&mut self, bytes: usize) -> Result<DevPtr, TrainerError> {
        self.bind()?;
        let bytes = bytes.max(1);
        // SAFETY: the context is current; the memory is written (by a copy,
        // `zero` or a kernel) before it is read.
        let p = unsafe { result::malloc_sync(bytes) }
            .map_err(|e| err(&format!("allocating {bytes} bytes"), e))?;
        self.allocs.insert(p);
        Ok(p)
    }

    fn zero(&mut self, dst: DevPtr, bytes: usize) -> Result<(), TrainerError> {
        self.bind()?;
        // SAFETY: `dst` is device memory of at least `bytes` bytes (the
        // trainer sizes every buffer before it writes to it).
        unsafe { result::memset_d8_sync(dst, 0, bytes) }
            .map_err(|e| err(&format!("zeroing {bytes} bytes"), e))
    }

    fn free(&mut self, ptr: DevPtr) -> Result<(), TrainerError> {
        self.bind()?;
        if !self.allocs.remove(&ptr) {
            return Err(TrainerError::Device {
                device: "cuda",
                msg: format!("free of {ptr:#x}, which was not allocated"),
            });
        }
        // SAFETY: allocated by `alloc` and now forgotten.
        unsafe { result::free_sync(ptr) }.map_err(|e| err("freeing memory", e))
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), TrainerError> {
        self.bind()?;
        // SAFETY: `dst` is device memory of at least `src.len()` bytes (the
        // trainer sizes every buffer before it copies into it).
        unsafe { result::memcpy_htod_sync(dst, src) }
            .map_err(|e| err(&format!("copying {} bytes to the device", src.len()), e))
    }

    fn download(&mut self, dst: &mut [u8], src: DevPtr) -> Result<(), TrainerError> {
        self.bind()?;
        // SAFETY: as in `upload`; the copy on the default stream waits for
        // the kernels issued before it.
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(|e| {
            err(
                &format!(
                    "copying {} bytes from the device (errors of earlier kernels show here)",
                    dst.len()
                ),
                e,
            )
        })
    }

    unsafe fn launch_raw(
        &mut self,
        kernel: Kernel,
        grid: u32,
        block: u32,
        args: *const c_void,
        _args_size: usize,
    ) -> Result<(), TrainerError> {
        self.bind()?;
        let mut params = [args.cast_mut()];
        // SAFETY: the function takes one by-value struct argument, and
        // `args` points to that struct (KernelArgs, mirrored from
        // lenet.cuh); the driver copies it at launch. Every device pointer
        // in it is a live allocation sized by the trainer.
        unsafe {
            result::launch_kernel(
                self.functions[kernel.index()],
                (grid, 1, 1),
                (block, 1, 1),
                0,
                std::ptr::null_mut(),
                &mut params,
            )
        }
        .map_err(|e| err(&format!("launching {}", kernel.name()), e))
    }

    fn sync(&mut self) -> Result<(), TrainerError> {
        self.bind()?;
        self.ctx.synchronize().map_err(|e| err("synchronizing", e))
    }

    fn free_memory(&mut self) -> Result<Option<usize>, TrainerError> {
        self.bind()?;
        let (free, _total) = result::mem_get_info().map_err(|e| err("querying free memory", e))?;
        Ok(Some(free))
    }

    fn mark(&mut self) -> Result<Mark, TrainerError> {
        self.bind()?;
        let e = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| err("creating an event", e))?;
        self.events.push(e);
        // SAFETY: a live event, recorded on the legacy default stream that
        // every launch and copy uses.
        unsafe { result::event::record(e, std::ptr::null_mut()) }
            .map_err(|e| err("recording an event", e))?;
        Ok(Mark::Event(self.events.len() - 1))
    }

    fn elapsed_ms(&mut self, from: Mark, to: Mark) -> Result<f64, TrainerError> {
        self.bind()?;
        let event = |m: Mark| match m {
            Mark::Event(i) => self.events.get(i).copied(),
            Mark::Host(_) => None,
        };
        let (Some(a), Some(b)) = (event(from), event(to)) else {
            return Err(TrainerError::Device {
                device: "cuda",
                msg: "timing marks that are not this device's events".into(),
            });
        };
        // SAFETY: both events were created and recorded by `mark` and are
        // not destroyed before `clear_marks`.
        unsafe { result::event::synchronize(b) }.map_err(|e| {
            err(
                "waiting for an event (errors of earlier kernels show here)",
                e,
            )
        })?;
        // SAFETY: as above; both recorded on the same stream.
        let ms = unsafe { result::event::elapsed(a, b) }.map_err(|e| err("timing events", e))?;
        Ok(f64::from(ms))
    }

    fn clear_marks(&mut self) -> Result<(), TrainerError> {
        self.bind()?;
        for e in self.events.drain(..) {
            // SAFETY: created by `mark`, destroyed once here.
            unsafe { result::event::destroy(e) }.map_err(|e| err("destroying an event", e))?;
        }
        Ok(())
    }
}
