//! Learning on the device, end to end, against lenet-core on the host.
//!
//! Builds the firmware's `learn` program with `firmware/model/shipped.q8`
//! (LeNet-5 trained without Sandal and Bag; its own target directory, so
//! the `classify` build of `firmware_qemu` is left alone), streams the
//! first 2,000 Fashion-MNIST training images through it in QEMU, and
//! checks that:
//! - the head file it writes is, byte for byte, the head lenet-core learns
//!   on the host from the same images in the same order (`f32` on the
//!   Cortex-M4F FPU and on the workstation: the same IEEE arithmetic);
//! - the learned head reaches the targets on the 10,000 test images: at
//!   least 86 % on all ten classes, the eight old classes losing at most
//!   2 points against the shipped int8 model;
//! - the device's reported accuracies are the host's.
//!
//! The dataset comes from `FASHION_MNIST_DIR` (default
//! `/usr/share/datasets/fashion-mnist`); missing QEMU is a failure.

use std::{
    env,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lenet_core::head::{
    Fc3Head, Head, cosine_lr, dequantize, features, head_file_len, predict, read_head, train_step,
    write_head,
};
use lenet_core::optim::{Sgd, SgdState};
use lenet_core::quant::{QuantModel, Scratch, argmax};
use lenet_host::data::{self, PIXELS};

mod common;
use common::firmware::{firmware_cargo, qemu_command};

/// Training images streamed through the device.
const N: usize = 2000;
/// The device's peak learning rate (`LR` in `firmware/src/bin/learn.rs`;
/// the device reports it and the test checks the report).
const LR: f32 = 0.12;
/// The classes `shipped.q8` never saw.
const NEW: [u8; 2] = [5, 8];
const QEMU_TIMEOUT: Duration = Duration::from_secs(600);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn build_learn(model: &Path) -> PathBuf {
    let fw = root().join("firmware");
    let target = fw.join("target/shipped");
    let status = firmware_cargo()
        .current_dir(&fw)
        .env("CARGO_TARGET_DIR", &target)
        .env("LENET_MODEL", model)
        .args(["build", "--release", "--bin", "learn"])
        .status()
        .expect("running cargo build for the firmware");
    assert!(status.success(), "firmware build failed");
    target.join("thumbv7em-none-eabihf/release/learn")
}

/// A fresh directory for QEMU's semihosting files, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Self {
        let p = env::temp_dir().join(format!("lenet-firmware-{}-learn", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `right/seen = xx.xx%` as the device prints it.
fn pct(right: usize, seen: usize) -> String {
    let bp = (right * 20_000 / seen.max(1)).div_ceil(2);
    format!("{right}/{seen} = {}.{:02}%", bp / 100, bp % 100)
}

#[test]
fn device_learns_new_classes_bit_exact_with_the_host() {
    let model_path = root().join("firmware/model/shipped.q8");
    let bytes = std::fs::read(&model_path).expect("reading firmware/model/shipped.q8");
    let QuantModel::LeNet5(model) = QuantModel::from_bytes(&bytes).expect("valid model") else {
        panic!("shipped.q8 is not the classic LeNet-5")
    };
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    let dir = env::var_os("FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    let d = data::load(&data::DataSource::Idx(dir), 0).expect("Fashion-MNIST");

    let elf = build_learn(&model_path);
    let work = WorkDir::new();
    let w = work.0.as_path();
    std::fs::write(w.join("train.u8"), &d.train.images[..N * PIXELS]).unwrap();
    std::fs::write(w.join("train-labels.u8"), &d.train.labels[..N]).unwrap();
    std::fs::write(w.join("test.u8"), &d.test.images).unwrap();
    std::fs::write(w.join("test-labels.u8"), &d.test.labels).unwrap();
    let start = Instant::now();
    let out = qemu_command(&elf, QEMU_TIMEOUT)
        .current_dir(w)
        .output()
        .expect("running timeout qemu-system-arm (scripts/setup.sh installs QEMU)");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("QEMU learn ({:.1?}):\n{report}", start.elapsed());
    assert!(out.status.success(), "learn exited with {}", out.status);
    assert!(
        report.contains("SGD, cosine decay from lr 120e-3"),
        "{report}"
    );
    let device = std::fs::read(w.join("head.bin")).expect("head.bin");

    // The same stream on the host, with lenet-core's integer trunk.
    let mut head = Fc3Head::from_model(&model);
    let (mut grads, mut state) = (Fc3Head::ZERO, SgdState::new(Fc3Head::ZERO));
    let mut scratch = Scratch::new();
    let mut x = Fc3Head::ZERO_INPUT;
    for (i, img) in d.train.images.chunks_exact(PIXELS).take(N).enumerate() {
        features::<Fc3Head, 400>(&mut x, &model, &mut scratch, img.try_into().unwrap());
        let opt = Sgd::new(cosine_lr(LR, i, N));
        let y = usize::from(d.train.labels[i]);
        train_step(&mut head, &mut grads, &mut (), &opt, &mut state, &x, y);
    }
    let mut host = Vec::new();
    write_head(&head, crc, |b| {
        host.extend_from_slice(b);
        Ok::<_, ()>(())
    })
    .unwrap();
    assert_eq!(host.len(), head_file_len(&head));
    if device != host {
        let mut back = Fc3Head::ZERO;
        let read = read_head(&mut back, &device, crc);
        let first = device.iter().zip(&host).position(|(a, b)| a != b);
        panic!("device head differs from the host's (first byte {first:?}; device file: {read:?})");
    }

    // Accuracy before (the int8 model) and after (the learned head).
    let (mut before, mut after) = ([0usize; 3], [0usize; 3]); // all, new, old
    let mut seen = [0usize; 3];
    for (img, &y) in d.test.images.chunks_exact(PIXELS).zip(&d.test.labels) {
        let img: &[u8; PIXELS] = img.try_into().unwrap();
        // One trunk pass for both: `infer` leaves the fc2 activations
        // (the head's input) in `scratch.b`.
        let b = argmax(&model.infer(&mut scratch, img)) == usize::from(y);
        let q = Fc3Head::input_quant(&model);
        let fc2 = scratch.b[..84].iter().map(|&v| i32::from(v) - q.zero_point);
        dequantize(&mut x, q.scale, fc2);
        let a = predict(&head, &mut (), &x) == usize::from(y);
        let k = if NEW.contains(&y) { 1 } else { 2 };
        for j in [0, k] {
            seen[j] += 1;
            before[j] += usize::from(b);
            after[j] += usize::from(a);
        }
    }
    let line = |v: &[usize; 3]| {
        format!(
            "all {} new {} old {}",
            pct(v[0], seen[0]),
            pct(v[1], seen[1]),
            pct(v[2], seen[2])
        )
    };
    eprintln!(
        "host: before {}\nhost: after  {}",
        line(&before),
        line(&after)
    );
    assert!(report.contains(&format!("before (shipped int8 model): {}", line(&before))));
    assert!(report.contains(&format!("after (learned head): {}", line(&after))));
    let acc = |v: usize, n: usize| 100.0 * v as f64 / n as f64;
    assert!(acc(after[0], seen[0]) >= 86.0, "after: {}", line(&after));
    assert!(
        acc(before[2], seen[2]) - acc(after[2], seen[2]) <= 2.0,
        "old classes lost more than 2 points: before {}, after {}",
        line(&before),
        line(&after)
    );
}
