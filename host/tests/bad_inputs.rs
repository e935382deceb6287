//! A corpus of hostile inputs against the `host` binary, generated here
//! (nothing large is stored). Each case must end with a non-zero exit, one
//! line of error that names the file (or flag) and the problem, no panic,
//! and no output file left behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use lenet_core::activation::Activation;
use lenet_core::model::ModelKind;
use lenet_host::data::synth::{csv, gzip, idx_images, idx_labels, toy, write_idx_dir};
use lenet_host::data::{Normalization, Splits};
use lenet_host::modelfile::{HEADER_LEN, ModelFile, ModelMeta};
use lenet_host::untrusted::{Parser, seeds};

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Every string must appear in the error line.
    expect: Vec<String>,
}

/// A valid four-file IDX directory with one file replaced by `bytes`.
fn idx_dir(root: &Path, name: &str, file: &str, bytes: &[u8]) -> String {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    write_idx_dir(
        &d,
        &Splits {
            train: toy(20, 1),
            test: toy(10, 2),
        },
        false,
    );
    for f in std::fs::read_dir(&d).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(file.trim_end_matches(".gz"))
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::write(d.join(file), bytes).unwrap();
    d.to_string_lossy().into_owned()
}

fn file(root: &Path, name: &str, bytes: &[u8]) -> String {
    let p = root.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn model_bytes(f: impl FnOnce(&mut ModelFile)) -> Vec<u8> {
    let kind = ModelKind::LeNet5Max;
    let mut m = ModelFile {
        meta: ModelMeta {
            arch: kind.into(),
            act: Activation::Relu,
            norm: Normalization::STANDARD,
        },
        params: vec![0.01; kind.num_params()],
        checkpoint: None,
    };
    f(&mut m);
    m.to_bytes()
}

/// The generated checkpoint seed, edited by `f` (re-serialized with valid
/// checksums).
fn checkpoint(f: impl FnOnce(&mut ModelFile)) -> Vec<u8> {
    let b = &seeds(Parser::Model)[1];
    let mut m = ModelFile::from_bytes(Path::new("seed"), b).unwrap();
    f(&mut m);
    m.to_bytes()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.push(p.clone());
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs `cmd` to the end, or kills it after `limit` and returns `None`
/// (a command waiting for good must fail the test, not hang it).
fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Option<std::process::Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // The pipes are drained by threads so a chatty child cannot block.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).ok();
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut b).ok();
        b
    });
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(std::process::Output {
                status,
                stdout: o.join().unwrap(),
                stderr: e.join().unwrap(),
            });
        }
        if start.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn every_bad_input_is_one_clear_line_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out").to_string_lossy().into_owned();
    let ds = toy(3, 3);
    let good_img = idx_images(&ds.images);
    let good_lab = idx_labels(&ds.labels);
    let good_data = idx_dir(
        root,
        "good",
        "t10k-labels-idx1-ubyte",
        &idx_labels(&toy(10, 2).labels),
    );
    let good_model = file(root, "good.lenet", &model_bytes(|_| {}));
    let train_on = |dir: &str| -> Vec<String> {
        ["train", "--data", dir, "--out", &out, "--device", "cpu"]
            .map(String::from)
            .to_vec()
    };
    let eval_with = |m: &str| -> Vec<String> {
        ["eval", "--model", m, "--data", &good_data]
            .map(String::from)
            .to_vec()
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name, args: Vec<String>, expect: &[&str]| {
        cases.push(Case {
            name,
            args,
            expect: expect.iter().map(|e| e.to_string()).collect(),
        })
    };

    // Data files.
    let mut b = good_img.clone();
    b[3] = 1;
    let d = idx_dir(root, "magic", "train-images-idx3-ubyte", &b);
    add(
        "idx bad magic",
        train_on(&d),
        &["train-images-idx3-ubyte", "bad IDX magic"],
    );
    let mut b = good_img.clone();
    b[11] = 32;
    let d = idx_dir(root, "size", "train-images-idx3-ubyte", &b);
    add("idx 32x28 images", train_on(&d), &["train-images", "32x28"]);
    let d = idx_dir(
        root,
        "trunc",
        "train-images-idx3-ubyte",
        &good_img[..good_img.len() - 5],
    );
    add(
        "idx truncated",
        train_on(&d),
        &["train-images", "truncated"],
    );
    let mut b = good_img.clone();
    b.extend_from_slice(b"junk");
    let d = idx_dir(root, "trail", "train-images-idx3-ubyte", &b);
    add(
        "idx trailing garbage",
        train_on(&d),
        &["train-images", "trailing"],
    );
    let mut b = good_lab.clone();
    b[9] = 10;
    let d = idx_dir(root, "label", "train-labels-idx1-ubyte", &b);
    add("idx label 10", train_on(&d), &["train-labels", "label 10"]);
    let d = idx_dir(
        root,
        "count",
        "train-labels-idx1-ubyte",
        &idx_labels(&[1, 2]),
    );
    add(
        "idx count mismatch",
        train_on(&d),
        &["train-labels", "2 labels"],
    );
    let gz = gzip(&good_img);
    let d = idx_dir(
        root,
        "gztrunc",
        "train-images-idx3-ubyte.gz",
        &gz[..gz.len() / 2],
    );
    add(
        "gzip truncated",
        train_on(&d),
        &["train-images-idx3-ubyte.gz", "gzip"],
    );
    // Gzip bomb: a valid header for 3 images, then 200 MB of zeros.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&good_img).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..200 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    let d = idx_dir(root, "bomb", "train-images-idx3-ubyte.gz", &bomb);
    add(
        "gzip bomb",
        train_on(&d),
        &["train-images-idx3-ubyte.gz", "more than the", "trailing"],
    );
    let mut b = good_img[..16].to_vec();
    b[4..8].copy_from_slice(&900_000u32.to_be_bytes());
    let d = idx_dir(root, "gzclaim", "train-images-idx3-ubyte.gz", &gzip(&b));
    add(
        "gzip claims too much",
        train_on(&d),
        &["train-images-idx3-ubyte.gz", "cannot hold"],
    );
    let mut b = good_img[..16].to_vec();
    b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let d = idx_dir(root, "many", "train-images-idx3-ubyte", &b);
    add(
        "idx claims 4e9 images",
        train_on(&d),
        &["train-images", "4294967295"],
    );
    let mut b = gzip(&good_img);
    b.extend_from_slice(b"garbage after the stream");
    let d = idx_dir(root, "gztrail", "train-images-idx3-ubyte.gz", &b);
    add(
        "gzip trailing garbage",
        train_on(&d),
        &["train-images-idx3-ubyte.gz", "gzip"],
    );
    let d = idx_dir(root, "empty", "train-images-idx3-ubyte", b"");
    add(
        "idx empty file",
        train_on(&d),
        &["train-images", "header promises"],
    );
    let d = idx_dir(root, "zero", "train-labels-idx1-ubyte", &idx_labels(&[]));
    add(
        "idx zero samples",
        train_on(&d),
        &["train-labels", "no samples"],
    );
    let text = csv(&toy(3, 4));
    let c = file(root, "hdr.csv", text.replacen("label", "lbl", 1).as_bytes());
    add("csv bad header", train_on(&c), &["hdr.csv", "header"]);
    let c = file(
        root,
        "lab.csv",
        text.replacen("\n0,", "\n12,", 1).as_bytes(),
    );
    add("csv label 12", train_on(&c), &["lab.csv", "label 12"]);
    let mut rows: Vec<String> = text.lines().map(String::from).collect();
    rows[1] = rows[1].replacen(",", ",256,", 1);
    let c = file(root, "px.csv", rows.join("\n").as_bytes());
    add("csv pixel 256", train_on(&c), &["px.csv", "256"]);
    let c = file(
        root,
        "short.csv",
        (text.lines().next().unwrap().to_string() + "\n1,2,3\n").as_bytes(),
    );
    add("csv short row", train_on(&c), &["short.csv", "fields"]);
    let c = file(root, "bin.csv", b"label,\xff\xfe\n");
    add("csv not utf-8", train_on(&c), &["bin.csv", "UTF-8"]);
    let one = file(root, "one.csv", csv(&toy(1, 5)).as_bytes());
    add(
        "eval empty test split",
        ["eval", "--model", &good_model, "--data", &one]
            .map(String::from)
            .to_vec(),
        &["one.csv", "empty"],
    );
    let missing = root.join("no-such-dir").to_string_lossy().into_owned();
    add(
        "--data missing",
        train_on(&missing),
        &["no-such-dir", "does not exist"],
    );
    let emptydir = root.join("emptydir");
    std::fs::create_dir(&emptydir).unwrap();
    add(
        "--data without dataset",
        train_on(emptydir.to_str().unwrap()),
        &["emptydir", "no Fashion-MNIST"],
    );

    // Model and checkpoint files.
    let m = file(root, "magic.lenet", b"NOTAMODEL-------");
    add("model bad magic", eval_with(&m), &["magic.lenet", "magic"]);
    let g = model_bytes(|_| {});
    let m = file(root, "trunc.lenet", &g[..g.len() - 9]);
    add(
        "model truncated",
        eval_with(&m),
        &["trunc.lenet", "truncated"],
    );
    let mut b = g.clone();
    b[HEADER_LEN + 40] ^= 4;
    let m = file(root, "crc.lenet", &b);
    add(
        "model flipped bit",
        eval_with(&m),
        &["crc.lenet", "checksum"],
    );
    add(
        "model /dev/zero",
        eval_with("/dev/zero"),
        &["/dev/zero", "bad magic"],
    );
    let m = file(root, "nan.lenet", &model_bytes(|m| m.params[5] = f32::NAN));
    add(
        "model NaN weight",
        eval_with(&m),
        &["nan.lenet", "parameter 5 is NaN"],
    );
    let m = file(root, "norm.lenet", &model_bytes(|m| m.meta.norm.std = 0.0));
    add(
        "model std 0",
        eval_with(&m),
        &["norm.lenet", "normalization"],
    );
    let resume = |p: &str| -> Vec<String> {
        ["train", "--resume", p, "--data", &good_data]
            .map(String::from)
            .to_vec()
    };
    let c = file(
        root,
        "epoch.lenet",
        &checkpoint(|m| m.checkpoint.as_mut().unwrap().epoch = u32::MAX),
    );
    add(
        "checkpoint epoch 0xFFFFFFFF",
        resume(&c),
        &["epoch.lenet", "epoch 4294967295"],
    );
    let c = file(
        root,
        "adam.lenet",
        &checkpoint(|m| m.checkpoint.as_mut().unwrap().optimizer.v[7] = f32::NAN),
    );
    add(
        "checkpoint NaN optimizer",
        resume(&c),
        &["adam.lenet", "NaN"],
    );
    let c = file(
        root,
        "kind.lenet",
        &checkpoint(|m| m.meta.act = Activation::Tanh),
    );
    add(
        "checkpoint settings vs header",
        resume(&c),
        &["kind.lenet", "header says"],
    );
    let c = file(
        root,
        "short.lenet",
        &checkpoint(|m| m.checkpoint.as_mut().unwrap().optimizer.m.truncate(3)),
    );
    add(
        "checkpoint short optimizer",
        resume(&c),
        &["short.lenet", "optimizer buffer length"],
    );
    let c = file(
        root,
        "net.lenet",
        &checkpoint(|m| {
            let c = m.checkpoint.as_mut().unwrap();
            assert!(c.json.contains("\"blocks\":5"), "{}", c.json);
            c.json = c.json.replace("\"blocks\":5", "\"blocks\":9");
        }),
    );
    add(
        "checkpoint settings with an option the network lacks",
        resume(&c),
        &["net.lenet", "net.blocks is 9", "no such option"],
    );
    add(
        "--resume with weights only",
        resume(&good_model),
        &["good.lenet", "not a checkpoint"],
    );
    let c = file(root, "ck.lenet", &seeds(Parser::Model)[1]);
    let mut a = resume(&c);
    a.extend(["--model", "lenet5", "--act", "tanh"].map(String::from));
    add(
        "--resume with --model",
        a,
        &["ck.lenet", "--model", "--act"],
    );

    // Import and export.
    let imported = root.join("imported.lenet").to_string_lossy().into_owned();
    let imp = |p: &str| ["import", p, "--out", &imported].map(String::from).to_vec();
    let st = file(
        root,
        "garbage.safetensors",
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
    );
    add(
        "safetensors garbage",
        imp(&st),
        &["garbage.safetensors", "safetensors"],
    );
    let plain = {
        // What safetensors.torch.save_file(net.state_dict()) writes: no metadata.
        let b = &seeds(Parser::Safetensors)[0];
        let m = lenet_host::export::from_safetensors(Path::new("s"), b, None, None).unwrap();
        let bytes: Vec<u8> = m.params.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut views = Vec::new();
        let mut at = 0;
        for (name, shape) in lenet_host::export::state_dict_layout(m.meta.arch) {
            let n = shape.iter().product::<usize>() * 4;
            views.push((
                name,
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape,
                    &bytes[at..at + n],
                )
                .unwrap(),
            ));
            at += n;
        }
        safetensors::serialize(views, None).unwrap()
    };
    let st = file(root, "plain.safetensors", &plain);
    add(
        "safetensors without metadata",
        imp(&st),
        &["plain.safetensors", "--act", "--normalize"],
    );
    let mut a = imp(&st);
    a.extend(["--act", "relu"].map(String::from));
    add(
        "safetensors without normalization",
        a,
        &["plain.safetensors", "--normalize"],
    );
    add(
        "import /dev/zero",
        imp("/dev/zero"),
        &["/dev/zero", "not a safetensors file"],
    );
    let st = file(root, "long.safetensors", &plain);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    add(
        "safetensors followed by a sparse 6 GiB",
        imp(&st),
        &["long.safetensors", "its header gives"],
    );
    let q = file(root, "bad.q8", b"LENETQ8 not really");
    let mut a = eval_with(&good_model);
    a.extend(["--int8", "--q8", &q].map(String::from));
    add("eval --q8 garbage", a, &["bad.q8"]);
    let q = file(root, "big.q8", b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&q)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    for (name, q) in [
        ("eval --q8 sparse 6 GiB", q.as_str()),
        ("eval --q8 /dev/zero", "/dev/zero"),
    ] {
        let mut a = eval_with(&good_model);
        a.extend(["--int8", "--q8", q].map(String::from));
        let limit = format!("{}-byte limit", lenet_host::int8::MAX_Q8_LEN);
        add(name, a, &[q, &limit]);
    }

    // Version 2 headers: nonsense the checksums do not catch.
    let v2 = |f: &dyn Fn(&mut Vec<u8>)| -> Vec<u8> {
        let arch = lenet_core::model::Arch::Cnn;
        let mut b = ModelFile {
            meta: ModelMeta {
                arch,
                act: Activation::Relu,
                norm: Normalization::STANDARD,
            },
            params: vec![0.01; arch.num_params()],
            checkpoint: None,
        }
        .to_bytes();
        f(&mut b);
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    };
    let m = file(root, "blocks.lenet", &v2(&|b| b[44] = 9));
    add(
        "cnn model with 9 VGG blocks",
        eval_with(&m),
        &["blocks.lenet", "VGG blocks (byte 44) is 9"],
    );
    let m = file(root, "reserved.lenet", &v2(&|b| b[57] = 1));
    add(
        "v2 reserved byte set",
        eval_with(&m),
        &["reserved.lenet", "reserved header byte 57"],
    );
    let m = file(
        root,
        "width.lenet",
        &v2(&|b| {
            b[12] = 4;
            b[44] = 2;
            b[46..48].copy_from_slice(&100u16.to_le_bytes());
        }),
    );
    add(
        "vgg model with width divisor 100",
        eval_with(&m),
        &["width.lenet", "width divisor 100"],
    );
    // vgg at 512x512 with 16384 hidden units (2.2e9 parameters), then a
    // sparse 6 GiB: refused from the header, nothing read.
    let m = file(
        root,
        "huge.lenet",
        &v2(&|b| {
            b[12] = 4;
            b[44] = 5;
            b[48..50].copy_from_slice(&512u16.to_le_bytes());
            b[52..56].copy_from_slice(&16384u32.to_le_bytes());
        })[..64],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    add(
        "model header claims 2.2e9 parameters, sparse 6 GiB",
        eval_with(&m),
        &["huge.lenet", "parameters, more than the"],
    );
    let g = model_bytes(|_| {});
    let m = file(root, "sparse.lenet", &g);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    add(
        "valid model followed by a sparse 6 GiB",
        eval_with(&m),
        &["sparse.lenet", "header says"],
    );

    // Heads learned on a device (eval --int8 --q8 T --head H).
    let q = {
        let p = model_bytes(|_| {});
        let mf = ModelFile::from_bytes(Path::new("m"), &p).unwrap();
        lenet_host::int8::quantize(
            lenet_core::quant::QuantArch::LeNet5Max,
            lenet_core::quant::QuantAct::Relu,
            &mf.params,
            &toy(4, 9).images,
            0.286,
            0.353,
        )
        .unwrap()
    };
    let q8_bytes = lenet_host::int8::to_bytes(&q);
    let q8 = file(root, "trunk.q8", &q8_bytes);
    let trunk_crc = u32::from_le_bytes(q8_bytes[q8_bytes.len() - 4..].try_into().unwrap());
    let head_file = |values: &dyn Fn(&mut lenet_core::head::Fc3Head)| -> Vec<u8> {
        use lenet_core::head::{Fc3Head, Head, write_head};
        let lenet_core::quant::QuantModel::LeNet5Max(t) = &*q else {
            unreachable!()
        };
        let mut h = Fc3Head::from_model(t);
        values(&mut h);
        let mut out = Vec::new();
        write_head(&h, trunk_crc, |b| {
            out.extend_from_slice(b);
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    };
    let with_head = |h: &str| -> Vec<String> {
        let mut a = eval_with(&good_model);
        a.extend(["--int8", "--q8", &q8, "--head", h].map(String::from));
        a
    };
    for (name, v, expect) in [
        ("nan.head", f32::NAN, "fc3.weight[5] is NaN"),
        ("inf.head", f32::INFINITY, "fc3.weight[5] is inf"),
        ("huge.head", 3e38, "fc3.weight[5] is 3e38"),
    ] {
        let h = file(root, name, &head_file(&|h| h.fc3.w[0][5] = v));
        add("head with a nonsense value", with_head(&h), &[name, expect]);
    }
    let mut b = head_file(&|_| {});
    b[12..16].copy_from_slice(&851u32.to_le_bytes());
    let n = b.len() - 4;
    let crc = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&crc.to_le_bytes());
    let h = file(root, "count.head", &b);
    add(
        "head with a wrong parameter count",
        with_head(&h),
        &["count.head", "parameter count", "851"],
    );
    add(
        "head /dev/zero",
        with_head("/dev/zero"),
        &["/dev/zero", "limit"],
    );
    let h = file(root, "big.head", b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&h)
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    add(
        "head sparse 6 GiB",
        with_head(&h),
        &["big.head", "limit", "6442450944"],
    );
    let wide = {
        let kind = ModelKind::LeNet5Wide;
        let mf = ModelFile {
            meta: ModelMeta {
                arch: kind.into(),
                act: Activation::Relu,
                norm: Normalization::STANDARD,
            },
            params: vec![0.01; kind.num_params()],
            checkpoint: None,
        };
        file(root, "wide.lenet", &mf.to_bytes())
    };
    let good_head = file(root, "good.head", &head_file(&|_| {}));
    let mut a = eval_with(&wide);
    a.extend(["--int8", "--q8", &q8, "--head", &good_head].map(String::from));
    add(
        "head and trunk of another model",
        a,
        &["trunk.q8", "LeNet5Max", "wide.lenet"],
    );

    // FIFOs with no writer where a regular file is needed: refused at
    // once, not a wait in open() for good.
    #[cfg(unix)]
    {
        let fifo = root.join("fifo").to_string_lossy().into_owned();
        let c = std::ffi::CString::new(fifo.as_str()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        add("--model FIFO", eval_with(&fifo), &["fifo", "FIFO"]);
        add(
            "predict image FIFO",
            ["predict", "--model", &good_model, &fifo]
                .map(String::from)
                .to_vec(),
            &["fifo", "FIFO"],
        );
        add("--head FIFO", with_head(&fifo), &["fifo", "FIFO"]);
        add(
            "--q8 FIFO",
            {
                let mut a = eval_with(&good_model);
                a.extend(["--int8", "--q8", &fifo].map(String::from));
                a
            },
            &["fifo", "FIFO"],
        );
        add(
            "import FIFO",
            ["import", &fifo, "--out", &imported]
                .map(String::from)
                .to_vec(),
            &["fifo", "FIFO"],
        );
    }

    // Images.
    let predict = |p: &str| {
        ["predict", "--model", &good_model, p]
            .map(String::from)
            .to_vec()
    };
    let im = file(root, "junk.png", b"\x89PNG\r\n\x1a\nnot really");
    add("predict corrupt png", predict(&im), &["junk.png", "decode"]);
    let huge = {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            b.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut c = kind.to_vec();
            c.extend_from_slice(data);
            b.extend_from_slice(&c);
            b.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
        };
        let mut ihdr = 20_000u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&20_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IEND", &[]);
        b
    };
    let im = file(root, "huge.png", &huge);
    add(
        "predict 20000x20000 png",
        predict(&im),
        &["huge.png", "limit"],
    );
    add(
        "predict missing image",
        predict(&root.join("nope.jpg").to_string_lossy()),
        &["nope.jpg"],
    );
    add(
        "predict /dev/zero",
        predict("/dev/zero"),
        &["/dev/zero", "limit"],
    );

    // Flags, checked before any data is read.
    let flag = |extra: &[&str]| -> Vec<String> {
        let mut v = train_on(&good_data);
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    add(
        "--batch-size 1e8",
        flag(&["--batch-size", "100000000"]),
        &["batch size 100000000"],
    );
    add(
        "--threads 100000",
        flag(&["--threads", "100000"]),
        &["threads 100000"],
    );
    add(
        "--momentum NaN",
        flag(&["--momentum", "NaN"]),
        &["momentum NaN"],
    );
    add("--lr -1", flag(&["--lr=-1"]), &["learning rate -1"]);
    add("--epochs 0", flag(&["--epochs", "0"]), &["epochs 0"]);
    add(
        "--val-split 1",
        flag(&["--val-split", "1"]),
        &["validation split 1"],
    );
    add(
        "bench --seconds 1e30",
        ["bench", "--seconds", "1e30"].map(String::from).to_vec(),
        &["--seconds"],
    );
    add(
        "bench --batch 0",
        ["bench", "--batch", "0"].map(String::from).to_vec(),
        &["--batch 0"],
    );
    add(
        "bench --batch 1e9",
        ["bench", "--batch", "1000000000"]
            .map(String::from)
            .to_vec(),
        &["--batch 1000000000"],
    );
    add(
        "bench --threads 100000",
        ["bench", "--threads", "100000", "--seconds", "0.1"]
            .map(String::from)
            .to_vec(),
        &["--threads 100000"],
    );
    let mut a = eval_with(&good_model);
    a.extend(["--int8", "--calibration", "0"].map(String::from));
    add("eval --calibration 0", a, &["--calibration"]);

    assert!(cases.len() >= 40, "{} cases", cases.len());
    let before = files_in(root);
    let mut passed = 0;
    for c in &cases {
        let t = std::time::Instant::now();
        let o = output_within(
            Command::new(env!("CARGO_BIN_EXE_host"))
                .args(&c.args)
                .env("LENET_FONT", "none")
                .env_remove("FASHION_MNIST_DIR"),
            std::time::Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("{}: still running after 20 s (killed)", c.name));
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or("");
        assert!(!o.status.success(), "{}: exit 0\n{err}", c.name);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {:?}\n{err}",
            c.name,
            o.status
        );
        assert!(!err.contains("panicked"), "{}: panic\n{err}", c.name);
        assert!(
            last.starts_with("error: "),
            "{}: last line `{last}`",
            c.name
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{}: one error line\n{err}",
            c.name
        );
        for e in &c.expect {
            assert!(
                last.contains(e.as_str()),
                "{}: `{e}` missing from `{last}`",
                c.name
            );
        }
        assert!(
            t.elapsed().as_secs() < 20,
            "{}: took {:?}",
            c.name,
            t.elapsed()
        );
        assert_eq!(files_in(root), before, "{}: files left behind", c.name);
        passed += 1;
    }
    eprintln!(
        "bad-input corpus: {passed} of {} cases rejected cleanly",
        cases.len()
    );
}

/// `--out` naming something that is not a regular file: a character
/// device, a symlink to one, `/dev/stdout` on a pipe, a FIFO without a
/// reader, a directory. Nothing but a regular file (or a missing one) is
/// ever replaced; devices and pipes are written through.
#[cfg(target_os = "linux")]
#[test]
fn out_never_replaces_what_is_not_a_regular_file() {
    use std::os::unix::fs::{FileTypeExt, symlink};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = file(root, "m.lenet", &model_bytes(|_| {}));
    let st = file(root, "m.safetensors", b"");
    std::fs::remove_file(&st).unwrap();
    let host = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("LENET_FONT", "none")
            .output()
            .unwrap()
    };
    // A safetensors export to write, and a file to import from.
    let o = host(&["export", "--model", &model, "--out", &st]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported = std::fs::read(&st).unwrap();
    let null_link = root.join("null");
    symlink("/dev/null", &null_link).unwrap();
    let null_link = null_link.to_string_lossy().into_owned();
    for out in ["/dev/null", null_link.as_str()] {
        for args in [
            vec!["export", "--model", &model, "--out", out],
            vec![
                "import",
                &st,
                "--out",
                out,
                "--act",
                "relu",
                "--normalize",
                "standard",
            ],
        ] {
            let o = host(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{args:?}: {err}");
            let m = std::fs::symlink_metadata("/dev/null").unwrap();
            assert!(
                m.file_type().is_char_device(),
                "{args:?} replaced /dev/null"
            );
        }
    }
    assert!(
        std::fs::symlink_metadata(&null_link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // /dev/stdout on a pipe: the bytes come out of the pipe.
    let o = host(&["export", "--model", &model, "--out", "/dev/stdout"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout
            .windows(exported.len())
            .any(|w| w == exported.as_slice()),
        "the export went to stdout ({} bytes there, {} exported)",
        o.stdout.len(),
        exported.len()
    );
    // /dev/stdout redirected to a regular file (`> f`, `>> f`): the file
    // holds exactly what the shell asked for, the export and nothing else
    // (the report goes to stderr), and /dev/stdout stays a symlink.
    for (redirect, before) in [(">", &b"old contents"[..]), (">>", &b"kept "[..])] {
        let f = root.join("redirected.safetensors");
        std::fs::write(&f, before).unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                r#""$0" export --model "$1" --out /dev/stdout {redirect} "$2""#
            ))
            .arg(env!("CARGO_BIN_EXE_host"))
            .arg(&model)
            .arg(&f)
            .env("LENET_FONT", "none")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut want = if redirect == ">>" {
            before.to_vec()
        } else {
            Vec::new()
        };
        want.extend_from_slice(&exported);
        assert!(
            std::fs::read(&f).unwrap() == want,
            "{redirect}: the redirected file is not the export"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("wrote /dev/stdout"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            std::fs::symlink_metadata("/dev/stdout")
                .unwrap()
                .file_type()
                .is_symlink()
        );
        std::fs::remove_file(&f).unwrap();
    }
    // A FIFO with no reader: an error at once, not a hang; the FIFO stays.
    let fifo = root.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t = std::time::Instant::now();
    let o = host(&["export", "--model", &model, "--out", fifo.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no reader") && err.contains("fifo"), "{err}");
    assert!(t.elapsed().as_secs() < 20);
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // A directory: refused, named.
    let d = root.join("adir");
    std::fs::create_dir(&d).unwrap();
    let o = host(&["export", "--model", &model, "--out", d.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    assert!(d.is_dir());
}

/// A second `host train` into a folder a running one holds is refused at
/// once, naming the folder and the running process's pid; the folder's
/// files are left alone.
#[cfg(unix)]
#[test]
fn a_second_train_into_the_same_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = idx_dir(
        root,
        "data",
        "t10k-labels-idx1-ubyte",
        &idx_labels(&toy(10, 2).labels),
    );
    let out = root.join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("model.lenet"), b"the running run's").unwrap();
    // This process stands for the running `host train`.
    let lock = lenet_host::fsutil::DirLock::acquire(&out).unwrap();
    let o = output_within(
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["train", "--data", &data, "--device", "cpu", "--epochs", "1"])
            .arg("--out")
            .arg(&out)
            .env("LENET_FONT", "none"),
        std::time::Duration::from_secs(60),
    )
    .expect("refused at once");
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap_or("");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        last.starts_with("error: ")
            && last.contains(out.to_str().unwrap())
            && last.contains(&format!("pid {}", std::process::id())),
        "{last}"
    );
    assert_eq!(
        std::fs::read(out.join("model.lenet")).unwrap(),
        b"the running run's"
    );
    drop(lock);
    // Released: the next run trains.
    let o = output_within(
        Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["train", "--data", &data, "--device", "cpu", "--epochs", "1"])
            .arg("--out")
            .arg(&out)
            .env("LENET_FONT", "none"),
        std::time::Duration::from_secs(120),
    )
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join(lenet_host::fsutil::DirLock::FILE).exists());
}
