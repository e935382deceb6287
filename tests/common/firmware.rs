//! What the firmware tests share: cargo for the firmware's own workspace,
//! and the QEMU command line that runs one of its programs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `cargo` for `firmware/`: its own workspace, with its own target dir and
/// target (`firmware/.cargo/config.toml`), so the host-side settings of
/// this test run are removed.
pub fn firmware_cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
    ] {
        c.env_remove(var);
    }
    c
}

/// `timeout -k5 <limit> qemu-system-arm ... -kernel <elf>`: the program as a
/// Cortex-M4 on QEMU's mps2-an386, semihosting on (its files are relative
/// to the command's working directory), instructions counted (`-icount
/// shift=6`), stdin closed. It always runs under `timeout` because QEMU
/// spins forever if its output pipe closes; status 124: it ran past `limit`.
/// `firmware/qemu-run.sh` (the cargo runner, which `scripts/firmware.sh`
/// and `scripts/learn.sh` call) runs the same line.
pub fn qemu_command(elf: &Path, limit: Duration) -> Command {
    let mut c = Command::new("timeout");
    c.arg("-k5")
        .arg(limit.as_secs().to_string())
        .args(["qemu-system-arm", "-machine", "mps2-an386"])
        .args(["-cpu", "cortex-m4", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=6", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null());
    c
}
