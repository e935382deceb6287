//! The memory a CPU run needs is computed before the run
//! (`lenet_host::backend::cpu::graph::cpu_memory`) and a run that needs more than
//! is available is refused in one line, with the largest batch that fits.
//! The estimate is held to the peak resident size of a real run.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::Instant;

mod common;

use common::toy_dataset;

use lenet_core::model::{Arch, VggConfig};
use lenet_host::backend::MEM_AVAILABLE_ENV;
use lenet_host::backend::OptimizerConfig;
use lenet_host::backend::cpu::graph::{RunKind, cpu_memory};

fn adam() -> OptimizerConfig {
    OptimizerConfig::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

fn data_dir(tmp: &std::path::Path) -> String {
    let data = toy_dataset(tmp, 600, 200, false);
    data.to_str().unwrap().to_string()
}

fn train_vgg224(
    data: &str,
    out: &std::path::Path,
    batch: usize,
    avail: u64,
) -> (Option<i32>, String) {
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["train", "--data", data, "--device", "cpu", "--threads", "2"])
        .args(["--model", "vgg", "--input-size", "224"])
        .args(["--batch-size", &batch.to_string()])
        .args(["--out", out.to_str().unwrap()])
        .env(MEM_AVAILABLE_ENV, avail.to_string())
        .output()
        .unwrap();
    assert!(t0.elapsed().as_secs() < 60, "refused before allocating");
    assert!(!out.join("checkpoint.lenet").exists());
    let err = String::from_utf8_lossy(&o.stderr);
    (
        o.status.code(),
        err.lines().last().unwrap_or("").to_string(),
    )
}

/// The notes' VGG-11 at 224x224 with batch 128 needs about 15 GB: with
/// less available it is refused at once, in one line naming the need,
/// what is available and the largest batch that fits, which the estimate
/// confirms.
#[test]
fn a_run_that_cannot_fit_is_refused_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    let out = tmp.path().join("out");
    let (code, line) = train_vgg224(&data, &out, 128, 4 << 30);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("error: vgg"), "{line}");
    assert!(
        line.contains("needs 15.") && line.contains("4.0 GiB is available"),
        "{line}"
    );
    // Evaluation alone holds 64 images a thread.
    assert!(line.ends_with("not even a batch of 1 fits"), "{line}");

    let avail: u64 = 20 << 30;
    let (code, line) = train_vgg224(&data, &out, 512, avail);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("20.0 GiB is available"), "{line}");
    let fits: usize = line
        .rsplit("the largest batch that fits is ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    let arch = Arch::Vgg(VggConfig {
        size: 224,
        ..VggConfig::NOTES
    });
    let need = |b| {
        cpu_memory(arch, RunKind::Train(adam()), 2, b, 800)
            .unwrap()
            .total()
    };
    assert!(need(fits) <= avail && need(fits + 1) > avail, "{fits}");
    assert!((128..512).contains(&fits), "{fits}");
}

/// Peak resident size of a child (`getrusage` through `wait4`), in bytes.
// `wait4` reaps the child; `Child::wait` could not return its usage.
#[allow(clippy::zombie_processes)]
fn peak_rss(mut c: Command) -> u64 {
    let child = c.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain system call on our own child; `ru` is written by it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
    ru.ru_maxrss as u64 * 1024
}

/// The estimate against the real peak of small training runs: never
/// below 90% of it, never above 150% of it.
#[test]
fn the_estimate_is_within_a_stated_margin_of_the_real_peak() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(tmp.path());
    for (size, div, hidden, batch) in [(32u16, 2u16, 1024u32, 256usize), (64, 4, 512, 64)] {
        let out = tmp.path().join(format!("run{size}"));
        let mut c = Command::new(env!("CARGO_BIN_EXE_host"));
        c.args([
            "train",
            "--data",
            &data,
            "--device",
            "cpu",
            "--threads",
            "2",
        ])
        .args(["--model", "vgg", "--epochs", "1", "--limit-test", "100"])
        .args([
            "--input-size",
            &size.to_string(),
            "--width-div",
            &div.to_string(),
        ])
        .args([
            "--hidden",
            &hidden.to_string(),
            "--batch-size",
            &batch.to_string(),
        ])
        .args(["--out", out.to_str().unwrap()])
        .env("LENET_FONT", "none")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let peak = peak_rss(c);
        let arch = Arch::Vgg(VggConfig {
            size,
            width_div: div,
            hidden,
            ..VggConfig::NOTES
        });
        let est = cpu_memory(arch, RunKind::Train(adam()), 2, batch, 800)
            .unwrap()
            .total();
        let ratio = est as f64 / peak as f64;
        eprintln!(
            "vgg {size} /{div} {hidden} batch {batch}: estimate {est}, peak {peak}, ratio {ratio:.2}"
        );
        assert!(
            (0.9..=1.5).contains(&ratio),
            "estimate {est} vs peak RSS {peak}"
        );
    }
}

/// With the check passed (a huge `MemAvailable`) but the address space
/// capped at 3 GB, the run's large buffers cannot be allocated: an error
/// naming them, exit status 1, never an abort.
#[test]
fn a_failed_allocation_is_an_error_not_an_abort() {
    use std::os::unix::process::ExitStatusExt;
    let o = Command::new("sh")
        .args(["-c", "ulimit -v 3000000 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_host"))
        .args([
            "bench",
            "--model",
            "vgg",
            "--input-size",
            "224",
            "--batch",
            "128",
        ])
        .args(["--seconds", "1", "--threads", "2", "--device", "cpu"])
        .env(MEM_AVAILABLE_ENV, (1u64 << 50).to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), None, "killed: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cpu: cannot allocate "), "{err}");
}
