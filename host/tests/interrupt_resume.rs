//! `host train` stopped by Ctrl-C at exact training steps (through the
//! `LENET_SIGINT_AT_STEP` hook of `lenet_host::interrupt`, which
//! raises a real SIGINT in the process), then resumed with the command it
//! prints, must end with the same model, checkpoint, metrics and plots as a
//! run that was never interrupted, every file byte for byte. The only values
//! allowed to differ are the wall-clock ones (`seconds`, `images_per_sec`),
//! masked as text as `kill_resume.rs` does.
#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

mod common;

use common::{assert_same_run, finished_run, toy_dataset};
use lenet_host::fsutil::CRASH_ENV;
use lenet_host::interrupt::AT_STEP_ENV;
use lenet_host::modelfile::ModelFile;
use lenet_host::train::{CheckpointInfo, files};

/// 600 images in batches of 50: 12 steps an epoch, 36 in the run.
const STEPS: u64 = 36;

fn host(args: &[&str], at_step: Option<u64>) -> Output {
    host_at(args, at_step.map(|k| k.to_string()))
}

fn host_at(args: &[&str], at_step: Option<String>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_host"));
    c.args(args)
        .env_remove(CRASH_ENV)
        .env_remove(AT_STEP_ENV)
        .env("LENET_FONT", "none");
    if let Some(k) = at_step {
        c.env(AT_STEP_ENV, k);
    }
    c.output().expect("run host")
}

/// The resume tests' run (`common::train_args`) with augmentation on.
fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = common::train_args(data, out);
    args.push("--augment");
    args
}

/// The resume command printed on stderr, split into its arguments (the
/// test's paths need no quoting).
fn resume_command(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resume with: "))
        .unwrap_or_else(|| panic!("no resume command in: {stderr}"));
    let v: Vec<String> = line.split(' ').map(str::to_string).collect();
    assert_eq!(v[..3], ["host", "train", "--resume"], "{line}");
    v[1..].to_vec()
}

#[test]
fn ctrl_c_at_any_step_then_resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = toy_dataset(tmp.path(), 600, 200, false);
    let data_s = data.to_str().unwrap();
    let reference = tmp.path().join("reference");
    let ref_s = reference.to_str().unwrap();
    let o = host(&train_args(data_s, ref_s), None);
    let (want, ref_line) = finished_run(&reference, &o);

    // Steps inside the first epoch, at its end, inside later epochs, and
    // the very last one (the run then finishes normally). A second number
    // interrupts the resumed run again after that many of its steps.
    let points: [(u64, Option<u64>); 7] = [
        (1, None),
        (5, Some(4)),
        (12, None),
        (13, Some(12)),
        (23, None),
        (35, None),
        (STEPS, None),
    ];
    for (i, &(k, again)) in points.iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let out_s = out.to_str().unwrap();
        let o = host(&train_args(data_s, out_s), Some(k));
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let mut stops = 0;
        let mut o = if k == STEPS {
            // Interrupted after the last step: the run is complete.
            assert!(o.status.success(), "step {k}: {stderr}");
            o
        } else {
            assert_eq!(
                o.status.code(),
                Some(130),
                "step {k}: {:?}: {stderr}",
                o.status
            );
            assert!(o.status.signal().is_none());
            assert!(
                stderr.contains(&format!("interrupted at step {}", k % 12))
                    || (k % 12 == 0 && stderr.contains("interrupted at step 0")),
                "step {k}: {stderr}"
            );
            let f = ModelFile::load(&out.join(files::CHECKPOINT)).unwrap();
            let info: CheckpointInfo =
                serde_json::from_str(&f.checkpoint.as_ref().unwrap().json).unwrap();
            assert_eq!(
                info.partial.as_ref().map_or(0, |p| p.steps),
                k % 12,
                "step {k}: steps saved"
            );
            stops += 1;
            host(
                &resume_command(&stderr)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                again,
            )
        };
        if again.is_some() {
            let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            assert_eq!(o.status.code(), Some(130), "step {k} again: {stderr}");
            stops += 1;
            o = host(
                &resume_command(&stderr)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                None,
            );
        }
        assert!(
            o.status.success(),
            "step {k}: resume failed after {stops} stops: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_same_run(&format!("step {k}"), &out, &o, &want, &ref_line);
    }
}

/// A second Ctrl-C has the default action: the process ends at once,
/// killed by SIGINT, without finishing its step or writing a checkpoint.
#[test]
fn a_second_ctrl_c_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = toy_dataset(tmp.path(), 600, 200, false);
    let out = tmp.path().join("run");
    let o = host_at(
        &train_args(data.to_str().unwrap(), out.to_str().unwrap()),
        Some("5,5".into()),
    );
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGINT),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.join(files::CHECKPOINT).exists());
}
