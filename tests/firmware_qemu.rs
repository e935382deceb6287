//! The firmware in QEMU against lenet-core's int8 reference, bit for bit.
//!
//! For each committed model (`firmware/model/lenet5.q8`, `lenet5-max.q8`,
//! `lenet5-wide.q8`: the three networks, each on its own kernels), or only
//! the file named by `LENET_MODEL`, builds `firmware/` with it (release,
//! its own target dir), runs the `classify` program as a Cortex-M4 in
//! `qemu-system-arm -machine mps2-an386` on all 10,000 Fashion-MNIST test
//! images (semihosting file I/O), and checks that every image's ten int8
//! logits, and so its prediction, are identical to `QuantModel::infer` on
//! the host. Also runs the `demo` program (images in flash) and checks its
//! exit status.
//! The test set comes from `FASHION_MNIST_DIR` (default
//! `/usr/share/datasets/fashion-mnist`). Missing QEMU is a failure, not a
//! skip: `scripts/setup.sh` installs it.

use std::{
    env,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use lenet_core::quant::{QuantModel, Scratch};

mod common;
use common::firmware::{firmware_cargo, qemu_command};

const PIXELS: usize = 784;
const RECORD: usize = 11;
/// Wall-clock limit for one QEMU run (QEMU spins forever if its output pipe
/// closes, so it always runs under `timeout`).
const QEMU_TIMEOUT: Duration = Duration::from_secs(900);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The models to test, as absolute paths (the firmware build runs in
/// another directory): `LENET_MODEL`, or the three committed ones.
fn model_paths() -> Vec<PathBuf> {
    match env::var_os("LENET_MODEL") {
        Some(p) => {
            let p = PathBuf::from(p);
            vec![std::path::absolute(&p).unwrap_or(p)]
        }
        None => ["lenet5.q8", "lenet5-max.q8", "lenet5-wide.q8"]
            .into_iter()
            .map(|f| root().join("firmware/model").join(f))
            .collect(),
    }
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

/// Held from a firmware build until its programs have run: the tests build
/// with different models into one target dir.
static FIRMWARE: Mutex<()> = Mutex::new(());

/// Builds the firmware with `model`; returns the directory of its programs,
/// valid while the guard is held.
fn build_firmware(model: &Path) -> (MutexGuard<'static, ()>, PathBuf) {
    let guard = FIRMWARE.lock().unwrap_or_else(|e| e.into_inner());
    let fw = root().join("firmware");
    let status = firmware_cargo()
        .current_dir(&fw)
        .env("CARGO_TARGET_DIR", fw.join("target"))
        .env("LENET_MODEL", model)
        .args(["build", "--release", "--bins"])
        .status()
        .expect("running cargo build for the firmware");
    assert!(status.success(), "firmware build failed");
    (guard, fw.join("target/thumbv7em-none-eabihf/release"))
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
    let out = qemu_command(elf, QEMU_TIMEOUT)
        .current_dir(dir)
        .output()
        .expect("running timeout qemu-system-arm");
    if out.status.code() == Some(124) {
        panic!("QEMU ran past {QEMU_TIMEOUT:?}: {}", elf.display());
    }
    out
}

#[test]
fn firmware_matches_int8_reference_on_all_test_images() {
    let images = read_idx(
        &dataset_dir().join("t10k-images-idx3-ubyte.gz"),
        0x803,
        PIXELS,
    );
    let labels = read_idx(&dataset_dir().join("t10k-labels-idx1-ubyte.gz"), 0x801, 1);
    assert_eq!(labels.len(), 10_000);
    for model in model_paths() {
        check_model(&model, &images, &labels);
    }
}

/// Runs `classify` built with `model` on `images` in QEMU and compares
/// every record with lenet-core's int8 reference.
fn check_model(model: &Path, images: &[u8], labels: &[u8]) {
    let model_bytes =
        std::fs::read(model).unwrap_or_else(|e| panic!("reading {}: {e}", model.display()));
    let q = Box::new(QuantModel::from_bytes(&model_bytes).expect("model file is valid"));
    let n = labels.len();

    let (_guard, bin) = build_firmware(model);
    let dir = WorkDir::new("classify");
    std::fs::write(dir.path().join("images.u8"), images).unwrap();

    let start = Instant::now();
    let out = qemu(&bin.join("classify"), dir.path());
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "{}: QEMU classify ({:.1?}):\n{report}",
        model.display(),
        start.elapsed()
    );
    assert!(out.status.success(), "classify exited with {}", out.status);
    assert!(report.contains(&format!("images: {n}")), "report: {report}");
    assert!(
        report.contains("kernel: cortex-m4"),
        "{}: the firmware fell back to the reference: {report}",
        model.display()
    );

    let records = std::fs::read(dir.path().join("predictions.bin")).unwrap();
    assert_eq!(records.len(), n * RECORD, "predictions.bin length");

    // The reference on all cores (the wide network is 1.1 M MACs a image).
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads);
    let want: Vec<[i8; 10]> = std::thread::scope(|s| {
        let q = &q;
        let jobs: Vec<_> = images
            .chunks(per * PIXELS)
            .map(|chunk| {
                s.spawn(move || {
                    let mut scratch = Scratch::new();
                    chunk
                        .chunks_exact(PIXELS)
                        .map(|img| q.infer(&mut scratch, img.try_into().unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter().flat_map(|j| j.join().unwrap()).collect()
    });

    let (mut mismatches, mut first, mut right_dev, mut right_ref) = (0, None, 0, 0);
    for (i, (rec, want)) in records.chunks_exact(RECORD).zip(want).enumerate() {
        let got: [i8; 10] = std::array::from_fn(|k| rec[1 + k] as i8);
        let want_class = lenet_core::quant::argmax(&want);
        right_dev += usize::from(usize::from(rec[0]) == usize::from(labels[i]));
        right_ref += usize::from(want_class == usize::from(labels[i]));
        if got != want || usize::from(rec[0]) != want_class {
            mismatches += 1;
            first.get_or_insert((i, got, rec[0], want, want_class));
        }
    }
    eprintln!(
        "{}: accuracy: device {right_dev}/{n}, host int8 reference {right_ref}/{n}",
        model.display()
    );
    if let Some((i, got, class, want, want_class)) = first {
        panic!(
            "{}: {mismatches} of {n} images differ; first: image {i}: device {got:?} (class {class}), \
             reference {want:?} (class {want_class})",
            model.display()
        );
    }
}

#[test]
fn firmware_demo_classifies_images_in_flash() {
    let (_guard, bin) = build_firmware(&model_paths()[0]);
    let dir = WorkDir::new("demo");
    let out = qemu(&bin.join("demo"), dir.path());
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "demo exited with {}", out.status);
    assert!(report.contains("right"), "report: {report}");
}
