//! The whole command-line workflow through `cli::run` on a synthetic IDX
//! dataset: train, resume, eval, predict, export (safetensors and int8),
//! import.

use std::path::Path;

use clap::Parser;
use image::{GrayImage, Luma};
use lenet_host::cli::{Cli, run};
use lenet_host::modelfile::ModelFile;

mod common;

use common::toy_dataset;

fn host(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["host"];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v)?)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_resume_eval_predict_export_import() {
    let d = tempfile::tempdir().unwrap();
    let data = toy_dataset(d.path(), 300, 100, true);
    let out = d.path().join("run");
    let common = [
        "--data",
        s(&data),
        "--threads",
        "2",
        "--batch-size",
        "32",
        "--lr",
        "0.002",
    ];
    let mut a = vec![
        "train",
        "--out",
        s(&out),
        "--epochs",
        "1",
        "--device",
        "auto",
    ];
    a.extend_from_slice(&common);
    host(&a).unwrap();
    let ck = out.join("checkpoint.lenet");
    host(&[
        "train",
        "--resume",
        s(&ck),
        "--epochs",
        "3",
        "--data",
        s(&data),
    ])
    .unwrap();
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "3 epochs after resuming: {csv}");

    // `host <command> --model <out> --data <data> <more...>`
    let on_data = |command: &str, more: &[&str]| {
        let mut a = vec![command, "--model", s(&out), "--data", s(&data)];
        a.extend_from_slice(more);
        host(&a)
    };
    on_data("eval", &[]).unwrap();
    on_data("predict", &["--index", "0", "--index", "7", "--json"]).unwrap();
    assert!(on_data("predict", &["--index", "100"]).is_err());

    // A large white image with a dark bar, like a photo.
    let mut img = GrayImage::from_pixel(56, 56, Luma([255]));
    for y in 10..16 {
        for x in 8..48 {
            img.put_pixel(x, y, Luma([0]));
        }
    }
    let png = d.path().join("bar.png");
    img.save(&png).unwrap();
    host(&["predict", "--model", s(&out), s(&png)]).unwrap();

    let st = d.path().join("m.safetensors");
    host(&["export", "--model", s(&out), "--out", s(&st)]).unwrap();
    let back = d.path().join("back.lenet");
    host(&["import", s(&st), "--out", s(&back)]).unwrap();
    assert_eq!(
        ModelFile::load(&back).unwrap(),
        ModelFile::load(&out.join("model.lenet")).unwrap()
    );

    let q8 = d.path().join("m.q8");
    host(&[
        "export",
        "--model",
        s(&out),
        "--int8",
        "--calibration",
        "100",
        "--data",
        s(&data),
        "--out",
        s(&q8),
    ])
    .unwrap();
    assert!(std::fs::metadata(&q8).unwrap().len() > 40_000);
    // int8 next to float: quantized anew, and from the exported file.
    on_data("eval", &["--int8", "--calibration", "100"]).unwrap();
    on_data("eval", &["--int8", "--q8", s(&q8)]).unwrap();
    let bad = d.path().join("bad.q8");
    std::fs::write(&bad, b"not a model").unwrap();
    let e = on_data("eval", &["--int8", "--q8", s(&bad)]).unwrap_err();
    assert!(format!("{e:#}").contains("bad.q8"), "{e:#}");

    host(&[
        "bench",
        "--threads",
        "1",
        "--batch",
        "8",
        "--seconds",
        "0.01",
    ])
    .unwrap();
    assert!(host(&["bench", "--seconds", "0"]).is_err());

    // Clear errors, no panics: each names the path it could not use.
    let (nope, missing) = (d.path().join("nope.lenet"), d.path().join("missing"));
    for (args, path) in [
        (
            ["eval", "--model", s(&nope), "--data", s(&data)],
            "nope.lenet",
        ),
        (
            ["train", "--data", s(&missing), "--out", s(&out)],
            "missing",
        ),
    ] {
        let e = host(&args).unwrap_err();
        assert!(format!("{e:#}").contains(path), "{e:#}");
    }
}
