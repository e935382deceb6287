//! Ctrl-C and SIGTERM during `host train`: the first one asks the training
//! loop to stop at the next step boundary and checkpoint there; a second
//! one has its default action and ends the process at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Test hook: `LENET_SIGINT_AT_STEP=K` raises SIGINT in this process
/// right after its K-th training step (counted from 1 in this
/// process), so tests interrupt a run at an exact step; `K,K` raises
/// it twice there (the second Ctrl-C).
pub const AT_STEP_ENV: &str = "LENET_SIGINT_AT_STEP";

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static STEPS: AtomicU64 = AtomicU64::new(0);

/// Installs the SIGINT and SIGTERM handlers (once per process).
///
/// # Errors
/// The handlers could not be installed.
pub fn install() -> std::io::Result<()> {
    if FLAG.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so a signal that finds the flag already set
        // (the second Ctrl-C) takes the default action.
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    let _ = FLAG.set(flag);
    Ok(())
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Called after each training step: counts it and, with
/// [`AT_STEP_ENV`] set, raises SIGINT at that step.
pub(crate) fn step_done() {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    let at = std::env::var(AT_STEP_ENV).unwrap_or_default();
    for _ in at.split(',').filter(|k| k.parse::<u64>() == Ok(n)) {
        // SAFETY: raise() only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGINT);
        }
    }
}
