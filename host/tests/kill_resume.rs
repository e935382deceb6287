//! `host train` killed with SIGKILL at exact points inside every
//! write-and-rename of an epoch's files (through the `LENET_CRASH_AT` hook of
//! `lenet_host::fsutil`), resumed, must end with the same model, checkpoint,
//! metrics and plots as a run that was never interrupted, every file byte
//! for byte. The only values allowed to differ are the wall-clock ones
//! (`seconds`, `images_per_sec`), masked as text.
#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

use common::{
    RUN_FILES, assert_same_run, finished_run, last_line, outputs, toy_dataset, train_args,
};
use lenet_host::fsutil::CRASH_ENV;
use lenet_host::train::files;

const EPOCHS: u32 = 3;

fn host(args: &[&str], crash: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_host"));
    c.args(args).env_remove(CRASH_ENV).env("LENET_FONT", "none");
    if let Some(p) = crash {
        c.env(CRASH_ENV, p);
    }
    c.output().expect("run host")
}

#[test]
fn killed_at_every_write_point_then_resumed_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = toy_dataset(tmp.path(), 600, 200, false);
    let data_s = data.to_str().unwrap();
    let reference: PathBuf = tmp.path().join("reference");
    let ref_s = reference.to_str().unwrap();
    let o = host(&train_args(data_s, ref_s), None);
    let (want, ref_line) = finished_run(&reference, &o);
    let mut every = RUN_FILES;
    every.sort();
    assert_eq!(
        want.iter().map(|w| w.0.as_str()).collect::<Vec<_>>(),
        every,
        "every output file, and nothing else (no lock file or temporary left)"
    );

    // Every write of an epoch, in order: checkpoint, model, metrics, plots;
    // and the confusion matrix at the end. Three points in each write.
    let mut points = Vec::new();
    for epoch in 1..=EPOCHS {
        for f in [files::CHECKPOINT, files::MODEL] {
            for stage in ["tmp-written", "renamed", "done"] {
                points.push(format!("{stage}:{f}@{epoch}"));
            }
        }
    }
    for p in [
        format!("renamed:{}@2", files::METRICS),
        format!("tmp-written:{}@1", files::LOSS_PNG),
        format!("done:{}@3", files::ACCURACY_PNG),
    ] {
        points.push(p);
    }
    for stage in ["tmp-written", "renamed", "done"] {
        points.push(format!("{stage}:{}", files::CONFUSION_PNG));
    }
    assert!(points.len() >= 20);

    let mut survived = 0;
    for (i, point) in points.iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let out_s = out.to_str().unwrap();
        let o = host(&train_args(data_s, out_s), Some(point));
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: not killed ({:?}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let ck = out.join(files::CHECKPOINT);
        let o = if ck.exists() {
            host(
                &["train", "--resume", ck.to_str().unwrap(), "--data", data_s],
                None,
            )
        } else {
            // Killed before the first checkpoint: start again.
            host(&train_args(data_s, out_s), None)
        };
        assert!(
            o.status.success(),
            "{point}: resume failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_same_run(&point.to_string(), &out, &o, &want, &ref_line);
        survived += 1;
    }
    eprintln!("kill points survived: {survived} of {}", points.len());

    // Resuming the finished run reports it exactly and changes nothing.
    let ck = reference.join(files::CHECKPOINT);
    let o = host(
        &["train", "--resume", ck.to_str().unwrap(), "--data", data_s],
        None,
    );
    assert!(o.status.success());
    assert_eq!(last_line(&o, ref_s), ref_line);
    assert!(outputs(&reference) == want);
}
