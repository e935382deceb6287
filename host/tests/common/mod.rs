//! What the tests that run whole trainings share: a synthetic dataset on
//! disk, the short training run the resume tests (`kill_resume.rs`,
//! `interrupt_resume.rs`) repeat, and a run's output files, read for a
//! byte-for-byte comparison with the wall-clock values masked.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lenet_host::data::{Splits, synth};
use lenet_host::modelfile::ModelFile;
use lenet_host::train::files;

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
