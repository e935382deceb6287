//! The firmware in QEMU against lenet-core's int8 reference, bit for bit.
//!
//! Builds `firmware/` (release, its own target dir), runs the `classify`
//! program as a Cortex-M4 in `qemu-system-arm -machine mps2-an386` on all
//! 10,000 Fashion-MNIST test images (semihosting file I/O), and checks that
//! every image's ten int8 logits, and so its prediction, are identical to
//! `QuantModel::infer` on the host. Also runs the `demo` program (images in
//! flash) and checks its exit status.
//!
//! The model is the one the firmware embeds: `firmware/model/lenet5.q8`, or
//! the file named by `LENET_MODEL` (which the firmware build reads too).
//! The test set comes from `FASHION_MNIST_DIR` (default
//! `/usr/share/datasets/fashion-mnist`). Missing QEMU is a failure, not a
//! skip: `scripts/setup.sh` installs it.

use std::{
    env,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use lenet_core::quant::{QuantModel, Scratch};

const PIXELS: usize = 784;
const RECORD: usize = 11;
/// Wall-clock limit for one QEMU run (QEMU spins forever if its output pipe
/// closes, so it always runs under `timeout`).
const QEMU_TIMEOUT: Duration = Duration::from_secs(900);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The model the firmware embeds, as an absolute path (the firmware build
/// runs in another directory).
fn model_path() -> PathBuf {
    let p = match env::var_os("LENET_MODEL") {
        Some(p) => PathBuf::from(p),
        None => root().join("firmware/model/lenet5.q8"),
    };
    std::path::absolute(&p).unwrap_or(p)
}

fn dataset_dir() -> PathBuf {
    env::var_os("FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
}

/// Reads a gzip-compressed (`.gz`) or raw IDX file and returns its payload
/// after checking the magic and the declared counts.
fn read_idx(path: &Path, magic: u32, item: usize) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("decompressing {}: {e}", path.display()));
        out
    } else {
        raw
    };
    let header = if magic == 0x803 { 16 } else { 8 };
    assert!(
        bytes.len() >= header,
        "{}: truncated header",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    assert_eq!(be(0), magic as usize, "{}: bad IDX magic", path.display());
    let n = be(4);
    assert_eq!(
        bytes.len(),
        header + n * item,
        "{}: wrong length",
        path.display()
    );
    bytes[header..].to_vec()
}

/// A fresh directory for QEMU's semihosting files, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> Self {
        let p = env::temp_dir().join(format!("lenet-firmware-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // The firmware is its own workspace with its own target dir and target
    // (firmware/.cargo/config.toml); host-side settings must not leak in.
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

fn build_firmware() -> PathBuf {
    let fw = root().join("firmware");
    let status = cargo()
        .current_dir(&fw)
        .env("CARGO_TARGET_DIR", fw.join("target"))
        .env("LENET_MODEL", model_path())
        .args(["build", "--release", "--bins"])
        .status()
        .expect("running cargo build for the firmware");
    assert!(status.success(), "firmware build failed");
    fw.join("target/thumbv7em-none-eabihf/release")
}

/// Runs `elf` in QEMU with `dir` as the semihosting working directory.
fn qemu(elf: &Path, dir: &Path) -> Output {
    let which = Command::new("qemu-system-arm")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(which, Ok(s) if s.success()),
        "qemu-system-arm not found: install it (scripts/setup.sh, or apt-get install qemu-system-arm)"
    );
    let out = Command::new("timeout")
        .arg("-k5")
        .arg(QEMU_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-arm",
            "-machine",
            "mps2-an386",
            "-cpu",
            "cortex-m4",
        ])
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .args(["-icount", "shift=6", "-kernel"])
        .arg(elf)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running timeout qemu-system-arm");
    if out.status.code() == Some(124) {
        panic!("QEMU ran past {QEMU_TIMEOUT:?}: {}", elf.display());
    }
    out
}

#[test]
fn firmware_matches_int8_reference_on_all_test_images() {
    let model_bytes = std::fs::read(model_path())
        .unwrap_or_else(|e| panic!("reading {}: {e}", model_path().display()));
    let model = Box::new(QuantModel::from_bytes(&model_bytes).expect("model file is valid"));
    let images = read_idx(
        &dataset_dir().join("t10k-images-idx3-ubyte.gz"),
        0x803,
        PIXELS,
    );
    let labels = read_idx(&dataset_dir().join("t10k-labels-idx1-ubyte.gz"), 0x801, 1);
    let n = labels.len();
    assert_eq!(n, 10_000);

    let bin = build_firmware();
    let dir = WorkDir::new("classify");
    std::fs::write(dir.path().join("images.u8"), &images).unwrap();

    let start = Instant::now();
    let out = qemu(&bin.join("classify"), dir.path());
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("QEMU classify ({:.1?}):\n{report}", start.elapsed());
    assert!(out.status.success(), "classify exited with {}", out.status);
    assert!(report.contains(&format!("images: {n}")), "report: {report}");

    let records = std::fs::read(dir.path().join("predictions.bin")).unwrap();
    assert_eq!(records.len(), n * RECORD, "predictions.bin length");

    let mut scratch = Scratch::new();
    let (mut mismatches, mut first, mut right_dev, mut right_ref) = (0, None, 0, 0);
    for (i, (rec, image)) in records
        .chunks_exact(RECORD)
        .zip(images.chunks_exact(PIXELS))
        .enumerate()
    {
        let want = model.infer(&mut scratch, image.try_into().unwrap());
        let got: [i8; 10] = std::array::from_fn(|k| rec[1 + k] as i8);
        let want_class = lenet_core::quant::argmax(&want);
        right_dev += usize::from(usize::from(rec[0]) == usize::from(labels[i]));
        right_ref += usize::from(want_class == usize::from(labels[i]));
        if got != want || usize::from(rec[0]) != want_class {
            mismatches += 1;
            first.get_or_insert((i, got, rec[0], want, want_class));
        }
    }
    eprintln!("accuracy: device {right_dev}/{n}, host int8 reference {right_ref}/{n}");
    if let Some((i, got, class, want, want_class)) = first {
        panic!(
            "{mismatches} of {n} images differ; first: image {i}: device {got:?} (class {class}), \
             reference {want:?} (class {want_class})"
        );
    }
}

#[test]
fn firmware_demo_classifies_images_in_flash() {
    let bin = build_firmware();
    let dir = WorkDir::new("demo");
    let out = qemu(&bin.join("demo"), dir.path());
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "demo exited with {}", out.status);
    assert!(report.contains("right"), "report: {report}");
}
