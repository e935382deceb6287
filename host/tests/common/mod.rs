//! What the tests that run whole trainings share: a synthetic dataset on
//! disk, a training on the CPU, the short training run the resume tests (`kill_resume.rs`,
//! `interrupt_resume.rs`) repeat, a run's output files, read for a
//! byte-for-byte comparison with the wall-clock values masked, and the
//! comparison of a resumed run with one never interrupted.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use lenet_host::backend::Trainer;
use lenet_host::backend::cpu_trainer;
use lenet_host::data::{Splits, synth};
use lenet_host::modelfile::ModelFile;
use lenet_host::train::{TrainSettings, TrainSummary, files, train};

/// `root/data`, an IDX dataset (gzipped with `gzip`) of `train` and `test`
/// synthetic images drawn with seeds 1 and 2.
pub fn toy_dataset(root: &Path, train: usize, test: usize, gzip: bool) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir(&data).unwrap();
    let splits = Splits {
        train: synth::toy(train, 1),
        test: synth::toy(test, 2),
    };
    synth::write_idx_dir(&data, &splits, gzip);
    data
}

/// Trains with `s` on `data` into `out` on the CPU (2 threads), printing
/// each line of progress; returns the trained trainer and the summary.
pub fn train_on_cpu(
    s: &TrainSettings,
    data: &Splits,
    out: &Path,
) -> (Box<dyn Trainer>, TrainSummary) {
    let mut t = cpu_trainer(&s.trainer_config(2).unwrap(), s.seed).unwrap();
    let sum = train(t.as_mut(), s, data, out, None, &mut |l| eprintln!("{l}")).unwrap();
    (t, sum)
}

/// `host train` arguments for the resume tests' run: LeNet-5 (max) with
/// ReLU on one CPU thread, 3 epochs of batches of 50.
pub fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        "--threads",
        "1",
        "--model",
        "lenet5-max",
        "--act",
        "relu",
        "--lr",
        "3e-3",
        "--batch-size",
        "50",
        "--epochs",
        "3",
    ]
}

/// `json` with the values of the wall-clock fields (`seconds`,
/// `images_per_sec`) replaced by `0`, as text: nothing else is parsed or
/// written again, so every other digit is compared as the run wrote it.
fn mask_clock(json: &str) -> String {
    let mut s = json.to_string();
    for key in ["\"seconds\":", "\"images_per_sec\":"] {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(key) {
            out.push_str(&rest[..i + key.len()]);
            rest = &rest[i + key.len()..];
            let end = rest.find([',', '}']).expect("a JSON number ends");
            out.push('0');
            rest = &rest[end..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

/// Every output file, byte for byte, except the wall-clock values: the
/// last two columns of the metrics, and those two fields of the
/// checkpoint's JSON (masked as text; the checkpoint is otherwise its own
/// bytes, which re-encoding reproduces exactly).
pub fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let b = std::fs::read(dir.join(&n)).unwrap();
            let b = match n.as_str() {
                files::METRICS => String::from_utf8(b)
                    .unwrap()
                    .lines()
                    .map(|l| l.rsplitn(3, ',').nth(2).unwrap().to_string() + "\n")
                    .collect::<String>()
                    .into_bytes(),
                files::CHECKPOINT => {
                    let mut f = ModelFile::from_bytes(Path::new(&n), &b).unwrap();
                    assert!(f.to_bytes() == b, "{n}: re-encoding is not exact");
                    let c = f.checkpoint.as_mut().unwrap();
                    c.json = mask_clock(&c.json);
                    f.to_bytes()
                }
                _ => b,
            };
            (n, b)
        })
        .collect()
}

/// The files a finished run writes.
pub const RUN_FILES: [&str; 6] = [
    files::MODEL,
    files::CHECKPOINT,
    files::METRICS,
    files::LOSS_PNG,
    files::ACCURACY_PNG,
    files::CONFUSION_PNG,
];

/// The last line `host` printed on stdout, with the output folder `out`
/// written as `OUT`, so that runs into different folders compare equal.
pub fn last_line(o: &Output, out: &str) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .replace(out, "OUT")
}

/// A run into `out` that must have succeeded: its files ([`outputs`]) and
/// its last line ([`last_line`]).
pub fn finished_run(out: &Path, o: &Output) -> (Vec<(String, Vec<u8>)>, String) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (outputs(out), last_line(o, out.to_str().unwrap()))
}

/// Asserts that the run `o` into `out` ended as the uninterrupted one did:
/// the same files, byte for byte (`want`, from [`outputs`]), and the same
/// last line (`want_line`, from [`last_line`]). `what` names the case.
pub fn assert_same_run(
    what: &str,
    out: &Path,
    o: &Output,
    want: &[(String, Vec<u8>)],
    want_line: &str,
) {
    let got = outputs(out);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(want),
        "{what}: files (stale temporaries?)"
    );
    for ((n, a), (_, b)) in got.iter().zip(want) {
        assert!(a == b, "{what}: {n} differs from the uninterrupted run");
    }
    let line = last_line(o, out.to_str().unwrap());
    assert_eq!(line, want_line, "{what}: reported result");
}
