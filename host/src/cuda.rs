//! CUDA device discovery (feature `cuda`). The driver library is loaded at
//! run time, so this compiles and runs without a CUDA installation.

use cudarc::driver::CudaContext;

/// `Ok(device name)` if the driver loads and device 0 opens, else the reason.
pub fn probe() -> Result<String, String> {
    // SAFETY: `is_culib_present` only tries to dlopen the driver library by
    // its usual names and drops it; it calls no CUDA function.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return Err("no CUDA driver library (libcuda.so) found".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot open CUDA device 0: {e}"))?;
    ctx.name()
        .map_err(|e| format!("cannot query CUDA device 0: {e}"))
}
