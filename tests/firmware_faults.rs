//! The firmware's last line of defence, in QEMU: a panic, a HardFault and a
//! stack overflow must each end the emulator with a non-zero status and a
//! message on stderr, never hang or exit 0.
//!
//! Builds the three programs of `firmware/examples/` (release, the
//! firmware's own target dir) and runs each under `timeout` in
//! `qemu-system-arm -machine mps2-an386`, as `tests/firmware_qemu.rs` does.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod common;
use common::firmware::{firmware_cargo, qemu_command};

/// A program that should end in a second gets this long before it counts
/// as hung.
const TIMEOUT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_examples() -> PathBuf {
    let fw = root().join("firmware");
    // The same model as tests/firmware_qemu.rs builds with, so the two tests
    // share one build of the library.
    let model = std::env::var_os("LENET_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("firmware/model/lenet5.q8"));
    let status = firmware_cargo()
        .current_dir(&fw)
        .env("CARGO_TARGET_DIR", fw.join("target"))
        .env("LENET_MODEL", std::path::absolute(&model).unwrap_or(model))
        .args(["build", "--release", "--examples"])
        .status()
        .expect("running cargo build for the firmware examples");
    assert!(status.success(), "firmware examples build failed");
    fw.join("target/thumbv7em-none-eabihf/release/examples")
}

fn qemu(elf: &Path) -> Output {
    let out = qemu_command(elf, TIMEOUT)
        .output()
        .expect("running timeout qemu-system-arm (install qemu-system-arm)");
    assert_ne!(
        out.status.code(),
        Some(124),
        "{} hung: QEMU ran past {} s",
        elf.display(),
        TIMEOUT.as_secs()
    );
    out
}

#[test]
fn panic_hardfault_and_stack_overflow_end_qemu_with_a_status_and_a_message() {
    let dir = build_examples();
    for (name, code, message) in [
        ("fault_panic", 101, "panic at examples/fault_panic.rs:"),
        ("fault_hardfault", 3, "HardFault: pc=0x"),
        ("fault_stack", 4, "stack overflow: sp=0x"),
    ] {
        let out = qemu(&dir.join(name));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {:?}\n{err}",
            out.status
        );
        assert!(
            err.contains(message),
            "{name}: `{message}` missing from\n{err}"
        );
    }
}
