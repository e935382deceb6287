//! Tests of calibration, export and int8 evaluation.

use super::*;
use lenet_core::quant::QuantError;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// SplitMix64 for test weights and images.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self, bound: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
    }
}

/// Random parameters in `state_dict` order: weights `U(-g sqrt(6/fan_in),
/// +...)`, biases `U(-0.1, 0.1)`.
fn random_params(arch: QuantArch, gain: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let flat = arch.flat();
    let (c1, c2) = arch.channels();
    let layers = [(c1, 25), (c2, 25 * c1), (120, flat), (84, 120), (10, 84)];
    let mut p = Vec::with_capacity(num_float_params(flat));
    for (out, fan_in) in layers {
        let bound = gain * (6.0 / fan_in as f32).sqrt();
        p.extend((0..out * fan_in).map(|_| rng.uniform(bound)));
        p.extend((0..out).map(|_| rng.uniform(0.1)));
    }
    assert_eq!(p.len(), num_float_params(flat));
    p
}

/// `n` synthetic images: one of 10 blob shapes plus noise; label = shape.
fn synthetic(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng(seed);
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 10) as i32;
        for y in 0..28i32 {
            for x in 0..28i32 {
                let inside = match c {
                    0 => (x - 14).abs() + (y - 14).abs() < 10,
                    1 => (x - 14).abs() < 3,
                    2 => (y - 14).abs() < 3,
                    3 => (x - y).abs() < 3,
                    4 => (x + y - 27).abs() < 3,
                    5 => (x - 14).pow(2) + (y - 14).pow(2) < 64,
                    6 => x < 14,
                    7 => y < 14,
                    8 => (x / 4 + y / 4) % 2 == 0,
                    _ => ((x - 14).pow(2) + (y - 14).pow(2) - 81).abs() < 20,
                };
                let base = if inside { 200.0 } else { 30.0 };
                images.push((base + rng.uniform(40.0)).clamp(0.0, 255.0) as u8);
            }
        }
        labels.push(c as u8);
    }
    (images, labels)
}

/// Read an IDX (gz) file, skipping its header.
fn idx(name: &str, header: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(Path::new(FASHION).join(name)).ok()?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .ok()?;
    Some(out.split_off(header))
}

fn all_combinations() -> impl Iterator<Item = (QuantArch, QuantAct)> {
    [
        QuantArch::LeNet5,
        QuantArch::LeNet5Max,
        QuantArch::LeNet5Wide,
    ]
    .into_iter()
    .flat_map(|a| [QuantAct::Sigmoid, QuantAct::Relu, QuantAct::Tanh].map(|act| (a, act)))
}

/// For random weights the int8 model predicts what the float model does on
/// nearly every image, for both architectures and all activations.
#[test]
fn int8_agrees_with_float_on_random_weights() {
    let (calib, _) = synthetic(300, 1);
    let (images, labels) = synthetic(500, 2);
    for (arch, act) in all_combinations() {
        // Sigmoid squashes small random pre-activations to about 0.5 and a
        // random net to one class; larger weights keep it discriminative
        // (more so in the wide net, whose conv2 sums 400 inputs).
        let gain = match (arch, act) {
            (QuantArch::LeNet5Wide, QuantAct::Sigmoid) => 8.0,
            (_, QuantAct::Sigmoid) => 4.0,
            _ => 1.5,
        };
        let params = random_params(arch, gain, 42);
        let model = quantize(arch, act, &params, &calib, 0.2860, 0.3530).unwrap();
        let c = compare(&model, &params, &images, &labels).unwrap();
        // The float model must not be (nearly) constant, or agreement
        // means nothing: its most common class stays under 90 %.
        let float = FloatLeNet {
            arch,
            act,
            params: &params,
            mean: 0.2860,
            std: 0.3530,
        };
        let mut counts = [0usize; 10];
        for img in images.chunks_exact(PIXELS) {
            counts[float.predict(img)] += 1;
        }
        let top = counts.iter().max().copied().unwrap_or(0);
        eprintln!("{arch:?} {act:?}: float class counts {counts:?}");
        assert!(
            top * 10 < 9 * labels.len(),
            "{arch:?} {act:?}: float predicts {counts:?}"
        );
        let agree = c.agree as f64 / labels.len() as f64;
        eprintln!("{arch:?} {act:?}: agreement {:.1} %", 100.0 * agree);
        assert!(
            agree >= 0.93,
            "{arch:?} {act:?}: int8 agrees with float on {:.1} %",
            100.0 * agree
        );
    }
}

/// Dequantized int8 logits stay within a few logit steps of the float ones.
#[test]
fn int8_logits_track_float_logits() {
    let (calib, _) = synthetic(200, 3);
    let (images, _) = synthetic(50, 4);
    for (arch, act) in all_combinations() {
        let params = random_params(arch, 1.5, 7);
        let model = quantize(arch, act, &params, &calib, 0.0, 1.0).unwrap();
        let float = FloatLeNet {
            arch,
            act,
            params: &params,
            mean: 0.0,
            std: 1.0,
        };
        let lq = model.logits();
        let mut scratch = Scratch::new();
        let mut worst = 0f32;
        for img in images.chunks_exact(PIXELS) {
            let f = float.forward(img, None);
            let q = model.infer(&mut scratch, img.try_into().unwrap());
            for (a, b) in f.iter().zip(q) {
                worst = worst.max((a - lq.dequantize(b)).abs() / lq.scale);
            }
        }
        eprintln!("{arch:?} {act:?}: worst logit error {worst:.2} steps");
        assert!(worst < 8.0, "{arch:?} {act:?}: logit error {worst} steps");
    }
}

/// The float pass used for calibration is the trained model: it matches
/// `lenet_core::model` (the training code's forward) on every logit.
#[test]
fn float_reference_matches_core_model() {
    use lenet_core::model::{
        Image, LeNet5, LeNet5Activations, LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams,
        LeNet5Params, LeNet5Wide, LeNet5WideActivations, LeNet5WideParams, Model,
    };
    use lenet_core::optim::Parameters;
    fn load<P: Parameters>(p: &mut P, flat: &[f32]) {
        let mut rest = flat;
        for t in p.tensors_mut() {
            let (head, tail) = rest.split_at(t.len());
            t.copy_from_slice(head);
            rest = tail;
        }
        assert!(rest.is_empty());
    }
    let (images, _) = synthetic(10, 12);
    let (mean, std) = (0.2860, 0.3530);
    for (arch, act) in all_combinations() {
        let params = random_params(arch, 1.5, 13);
        let float = FloatLeNet {
            arch,
            act,
            params: &params,
            mean,
            std,
        };
        for img in images.chunks_exact(PIXELS) {
            let mut x: Image = [[[0.0; 28]; 28]; 1];
            for (i, &p) in img.iter().enumerate() {
                x[0][i / 28][i % 28] = (f32::from(p) / 255.0 - mean) / std;
            }
            let core_logits = match arch {
                QuantArch::LeNet5 => {
                    let mut p = Box::new(LeNet5Params::zeroed());
                    load(&mut *p, &params);
                    let mut acts = Box::new(LeNet5Activations::zeroed());
                    *LeNet5 { act: act.into() }.forward(&mut acts, &p, &x)
                }
                QuantArch::LeNet5Max => {
                    let mut p = Box::new(LeNet5MaxParams::zeroed());
                    load(&mut *p, &params);
                    let mut acts = Box::new(LeNet5MaxActivations::zeroed());
                    *LeNet5Max { act: act.into() }.forward(&mut acts, &p, &x)
                }
                QuantArch::LeNet5Wide => {
                    let mut p = Box::new(LeNet5WideParams::zeroed());
                    load(&mut *p, &params);
                    let mut acts = Box::new(LeNet5WideActivations::zeroed());
                    *LeNet5Wide { act: act.into() }.forward(&mut acts, &p, &x)
                }
            };
            let ours = float.forward(img, None);
            for (a, b) in ours.iter().zip(core_logits) {
                assert!(
                    (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
                    "{arch:?} {act:?}: {ours:?} vs {core_logits:?}"
                );
            }
        }
    }
}

#[test]
fn calibration_covers_the_float_tensors() {
    let (calib, _) = synthetic(20, 5);
    let params = random_params(QuantArch::LeNet5, 1.0, 9);
    let float = FloatLeNet {
        arch: QuantArch::LeNet5,
        act: QuantAct::Tanh,
        params: &params,
        mean: 0.0,
        std: 1.0,
    };
    let r = calibrate(&float, &calib).unwrap();
    let mut serial = Ranges::empty();
    for img in calib.chunks_exact(PIXELS) {
        float.forward(img, Some(&mut serial));
    }
    assert_eq!(r, serial);
    assert!(r.conv1.0 < 0.0 && r.conv1.1 > 0.0 && r.logits.0 < r.logits.1);
}

#[test]
fn export_round_trips_and_uses_the_standard_crc() {
    let (calib, _) = synthetic(50, 6);
    let params = random_params(QuantArch::LeNet5Max, 1.0, 11);
    let model = quantize(
        QuantArch::LeNet5Max,
        QuantAct::Relu,
        &params,
        &calib,
        0.1,
        0.5,
    )
    .unwrap();
    let bytes = to_bytes(&model);
    let n = bytes.len() - 4;
    assert_eq!(crc32fast::hash(&bytes[..n]).to_le_bytes(), bytes[n..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.q8");
    write_q8(&path, &model).unwrap();
    let back = read_q8(&path).unwrap();
    assert_eq!(back, model);
    let mut bad = bytes.clone();
    bad[1000] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let err = read_q8(&path).unwrap_err();
    assert!(
        matches!(
            err.root_cause().downcast_ref(),
            Some(QuantError::ChecksumMismatch { .. })
        ),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("model.q8"), "{err:#}");
}

#[test]
fn bad_inputs_are_errors() {
    let params = random_params(QuantArch::LeNet5, 1.0, 1);
    let (calib, _) = synthetic(5, 1);
    assert!(
        quantize(
            QuantArch::LeNet5Max,
            QuantAct::Relu,
            &params,
            &calib,
            0.0,
            1.0
        )
        .is_err()
    );
    assert!(
        quantize(
            QuantArch::LeNet5,
            QuantAct::Relu,
            &params,
            &calib[..700],
            0.0,
            1.0
        )
        .is_err()
    );
    assert!(quantize(QuantArch::LeNet5, QuantAct::Relu, &params, &[], 0.0, 1.0).is_err());
    assert!(quantize(QuantArch::LeNet5, QuantAct::Relu, &params, &calib, 0.0, 0.0).is_err());
    let model = quantize(QuantArch::LeNet5, QuantAct::Relu, &params, &calib, 0.0, 1.0).unwrap();
    assert!(evaluate_int8(&model, &calib, &[0, 1]).is_err());
}

/// On real Fashion-MNIST test images (when installed), random-weight int8
/// and float predictions agree and the two accuracies are close.
#[test]
fn real_images_random_weights() {
    let (Some(train), Some(test), Some(labels)) = (
        idx("train-images-idx3-ubyte.gz", 16),
        idx("t10k-images-idx3-ubyte.gz", 16),
        idx("t10k-labels-idx1-ubyte.gz", 8),
    ) else {
        eprintln!("Fashion-MNIST not found in {FASHION}; skipping");
        return;
    };
    let calib = &train[..DEFAULT_CALIBRATION_IMAGES * PIXELS];
    let (test, labels) = (&test[..2000 * PIXELS], &labels[..2000]);
    let params = random_params(QuantArch::LeNet5, 1.5, 3);
    let model = quantize(QuantArch::LeNet5, QuantAct::Relu, &params, calib, 0.0, 1.0).unwrap();
    let c = compare(&model, &params, test, labels).unwrap();
    assert_eq!(c.int8, evaluate_int8(&model, test, labels).unwrap());
    assert!(c.agree * 100 >= 95 * labels.len(), "{c:?}");
}

/// Float vs int8 accuracy of a trained model on the full test set.
///
/// `LENET_INT8_PARAMS=file.f32:lenet5|lenet5max:sigmoid|relu|tanh` names a
/// flat little-endian `f32` file in `state_dict` order (trained on `p/255`).
#[test]
#[ignore = "needs a trained model: set LENET_INT8_PARAMS"]
fn trained_model_accuracy() {
    let spec = std::env::var("LENET_INT8_PARAMS").expect("LENET_INT8_PARAMS=file:arch:act");
    let parts: Vec<&str> = spec.split(':').collect();
    let arch = match parts[1] {
        "lenet5" => QuantArch::LeNet5,
        _ => QuantArch::LeNet5Max,
    };
    let act = match parts[2] {
        "sigmoid" => QuantAct::Sigmoid,
        "relu" => QuantAct::Relu,
        _ => QuantAct::Tanh,
    };
    let raw = std::fs::read(parts[0]).unwrap();
    let params: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let train = idx("train-images-idx3-ubyte.gz", 16).unwrap();
    let test = idx("t10k-images-idx3-ubyte.gz", 16).unwrap();
    let labels = idx("t10k-labels-idx1-ubyte.gz", 8).unwrap();
    let n: usize = std::env::var("LENET_INT8_CALIB")
        .map_or(DEFAULT_CALIBRATION_IMAGES, |v| v.parse().unwrap());
    let model = quantize(arch, act, &params, &train[..n * PIXELS], 0.0, 1.0).unwrap();
    let c = compare(&model, &params, &test, &labels).unwrap();
    let (f, q) = (100.0 * c.float.accuracy(), 100.0 * c.int8.accuracy());
    eprintln!(
        "{arch:?} {act:?} calib {n}: float {f:.2} %, int8 {q:.2} %, delta {:+.2} pp, agreement {:.2} %",
        q - f,
        100.0 * c.agree as f64 / c.float.total as f64
    );
    assert!((q - f).abs() <= 0.3, "int8 {q:.2} % vs float {f:.2} %");
}
