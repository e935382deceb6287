//! One entry point per parser of outside bytes, for the fuzz targets in
//! `fuzz/` and the smoke test that runs the same functions over seed
//! corpora and mutated inputs in the ordinary test suite.
//!
//! Each parser must, on any input, return an error naming the file in one
//! line, or a value that passes the same checks as a real file: never
//! panic, never allocate without bound.

use std::path::Path;

use crate::data::{IdxKind, parse_csv_bytes, parse_idx};
use crate::modelfile::ModelFile;

/// The parsers of outside bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parser {
    /// IDX images, gzip or raw.
    IdxImages,
    /// IDX labels, gzip or raw.
    IdxLabels,
    /// Kaggle CSV, gzip or raw.
    Csv,
    /// `.lenet` model or checkpoint file (and the checkpoint's contents).
    Model,
    /// `.q8` int8 model.
    Q8,
    /// safetensors import.
    Safetensors,
    /// `predict`'s image path (PNG or JPEG, with the size limits).
    Image,
    /// A head file learned on a device (`eval --head`), against a trunk.
    Head,
}

impl Parser {
    /// Every parser.
    pub const ALL: [Parser; 8] = [
        Parser::IdxImages,
        Parser::IdxLabels,
        Parser::Csv,
        Parser::Model,
        Parser::Q8,
        Parser::Safetensors,
        Parser::Image,
        Parser::Head,
    ];

    /// Short name (the fuzz target and corpus directory).
    pub fn name(self) -> &'static str {
        match self {
            Parser::IdxImages => "idx_images",
            Parser::IdxLabels => "idx_labels",
            Parser::Csv => "csv",
            Parser::Model => "model",
            Parser::Q8 => "q8",
            Parser::Safetensors => "safetensors",
            Parser::Image => "image",
            Parser::Head => "head",
        }
    }
}

/// `bytes` with the model file's header and payload checksums recomputed
/// (when it is long enough to have them), so mutations reach the checks
/// behind the checksums instead of stopping at them.
pub fn with_model_checksums(bytes: &[u8]) -> Vec<u8> {
    use crate::modelfile::{HEADER_LEN, HEADER_LEN_2, VERSION_2};
    let mut b = bytes.to_vec();
    let v2 = b.len() >= HEADER_LEN_2 && b[8..12] == VERSION_2.to_le_bytes();
    let h = if v2 { HEADER_LEN_2 } else { HEADER_LEN };
    if b.len() >= h {
        let payload = crc32fast::hash(&b[h..]);
        b[40..44].copy_from_slice(&payload.to_le_bytes());
        let header = crc32fast::hash(&b[..h - 4]);
        b[h - 4..h].copy_from_slice(&header.to_le_bytes());
    }
    b
}

/// The trunk CRC the head seeds carry.
const HEAD_TRUNK_CRC: u32 = 0x1234_5678;

/// `bytes` with a head file's trailing CRC recomputed (see
/// [`with_model_checksums`]).
fn with_head_checksum(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.len() >= 4 {
        let n = b.len() - 4;
        let c = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&c.to_le_bytes());
    }
    b
}

fn parse_head(bytes: &[u8]) -> Result<String, String> {
    use lenet_core::quant::{QuantLeNet5, QuantModel};
    let trunk = Box::new(QuantModel::LeNet5(QuantLeNet5::zeroed()));
    crate::int8::predict_with_head(&trunk, HEAD_TRUNK_CRC, bytes, &[])
        .map(|_| "head".to_string())
        .map_err(|e| format!("{FAKE_PATH}: {e:#}"))
}

/// The file name errors must carry.
pub const FAKE_PATH: &str = "input-under-test";

/// Runs `parser` on `bytes`. `Ok` holds a one-line summary of what was
/// accepted, `Err` the error message.
///
/// # Errors
/// The parser's error message.
///
/// # Panics
/// Only if an invariant is broken: an error that does not name the file or
/// spans several lines, or an accepted value that is not valid. The fuzz
/// targets rely on this to report such inputs.
pub fn parse(parser: Parser, bytes: &[u8]) -> Result<String, String> {
    let path = Path::new(FAKE_PATH);
    let r: Result<String, String> = match parser {
        Parser::IdxImages => parse_idx(path, bytes, IdxKind::Images)
            .map(|px| {
                assert!(!px.is_empty() && px.len() % crate::data::PIXELS == 0);
                format!("{} images", px.len() / crate::data::PIXELS)
            })
            .map_err(|e| e.to_string()),
        Parser::IdxLabels => parse_idx(path, bytes, IdxKind::Labels)
            .map(|l| {
                assert!(!l.is_empty() && l.iter().all(|&v| v < 10));
                format!("{} labels", l.len())
            })
            .map_err(|e| e.to_string()),
        Parser::Csv => parse_csv_bytes(path, bytes)
            .map(|d| {
                assert!(!d.is_empty() && d.images.len() == d.len() * crate::data::PIXELS);
                assert!(d.labels.iter().all(|&v| v < 10));
                format!("{} samples", d.len())
            })
            .map_err(|e| e.to_string()),
        Parser::Model => {
            // The checks behind the checksums too: the same bytes with the
            // checksums made right.
            let fixed = parse_model(path, &with_model_checksums(bytes));
            if let Err(msg) = &fixed {
                check_error(msg);
            }
            parse_model(path, bytes)
        }
        Parser::Q8 => crate::int8::from_bytes(bytes)
            .map(|_| "int8 model".to_string())
            .map_err(|e| format!("{FAKE_PATH}: {e:#}")),
        Parser::Safetensors => crate::export::from_safetensors(path, bytes, None, None)
            .map(|m| {
                assert!(m.params.iter().all(|v| v.is_finite()) && m.meta.norm.is_valid());
                format!("{} parameters", m.params.len())
            })
            .map_err(|e| e.to_string()),
        Parser::Image => crate::predict::image_from_bytes(path, bytes)
            .map(|px| {
                assert_eq!(px.len(), crate::data::PIXELS);
                "image".to_string()
            })
            .map_err(|e| e.to_string()),
        Parser::Head => {
            if let Err(msg) = parse_head(&with_head_checksum(bytes)) {
                check_error(&msg);
            }
            parse_head(bytes)
        }
    };
    if let Err(msg) = &r {
        check_error(msg);
    }
    r
}

fn check_error(msg: &str) {
    assert!(
        msg.contains(FAKE_PATH),
        "error does not name the file: {msg}"
    );
    assert!(!msg.contains('\n'), "error spans several lines: {msg}");
}

fn parse_model(path: &Path, bytes: &[u8]) -> Result<String, String> {
    let m = ModelFile::from_bytes(path, bytes).map_err(|e| e.to_string())?;
    assert!(m.params.iter().all(|v| v.is_finite()) && m.meta.norm.is_valid());
    match &m.checkpoint {
        Some(_) => crate::train::checkpoint_info(path, &m)
            .map(|i| format!("checkpoint, {} epochs", i.history.len()))
            .map_err(|e| e.to_string()),
        None => Ok(format!("model, {} parameters", m.params.len())),
    }
}

/// Small valid inputs for `parser`, generated (the same bytes every time):
/// the seed corpus of the fuzz targets and the smoke test.
pub fn seeds(parser: Parser) -> Vec<Vec<u8>> {
    use crate::backend::OptimizerState;
    use crate::data::synth::{csv, gzip, idx_images, idx_labels, toy};
    use crate::modelfile::{CheckpointState, ModelMeta};
    use crate::train::{CheckpointInfo, EpochMetrics, TrainSettings};
    use lenet_core::activation::Activation;
    use lenet_core::model::ModelKind;

    let ds = toy(3, 1);
    let params = |kind: ModelKind| -> Vec<f32> {
        let mut r = crate::rng::SplitMix64::new(7);
        (0..kind.num_params())
            .map(|_| r.next_f32() * 0.2 - 0.1)
            .collect()
    };
    match parser {
        Parser::IdxImages => {
            let b = idx_images(&ds.images);
            vec![
                gzip(&b),
                b,
                gzip(&idx_images(&ds.images[..crate::data::PIXELS])),
            ]
        }
        Parser::IdxLabels => {
            let b = idx_labels(&ds.labels);
            vec![gzip(&b), b]
        }
        Parser::Csv => {
            let t = csv(&toy(2, 2));
            vec![t.clone().into_bytes(), gzip(t.as_bytes())]
        }
        Parser::Model => {
            let kind = ModelKind::LeNet5Max;
            let meta = ModelMeta {
                arch: kind.into(),
                act: Activation::Relu,
                norm: crate::data::Normalization::STANDARD,
            };
            let p = params(kind);
            let weights = ModelFile {
                meta,
                params: p.clone(),
                checkpoint: None,
            };
            let settings = TrainSettings {
                model: "lenet5-max".into(),
                act: "relu".into(),
                epochs: 2,
                threads: 1,
                ..TrainSettings::default()
            };
            let m = EpochMetrics {
                epoch: 1,
                train_loss: 0.5,
                train_acc: 0.8,
                val_loss: f64::NAN,
                val_acc: f64::NAN,
                test_loss: 0.6,
                test_acc: 0.75,
                seconds: 1.0,
                images_per_sec: 100.0,
            };
            let info = CheckpointInfo {
                settings,
                history: vec![m],
                partial: None,
            };
            let ck = ModelFile {
                meta,
                params: p.clone(),
                checkpoint: Some(CheckpointState {
                    epoch: 1,
                    optimizer: OptimizerState {
                        step: 3,
                        m: vec![0.01; p.len()],
                        v: vec![0.001; p.len()],
                    },
                    rng_state: 42,
                    json: serde_json::to_string(&info).expect("serializable"),
                }),
            };
            // A version 2 file: the smallest VGG.
            let vgg = lenet_core::model::Arch::Vgg(lenet_core::model::VggConfig {
                blocks: 1,
                width_div: 64,
                size: 28,
                hidden: 2,
            });
            let mut r = crate::rng::SplitMix64::new(9);
            let v2 = ModelFile {
                meta: ModelMeta { arch: vgg, ..meta },
                params: (0..vgg.num_params())
                    .map(|_| r.next_f32() * 0.2 - 0.1)
                    .collect(),
                checkpoint: None,
            };
            vec![weights.to_bytes(), ck.to_bytes(), v2.to_bytes()]
        }
        Parser::Q8 => {
            let kind = ModelKind::LeNet5;
            let q = crate::int8::quantize(
                kind.try_into().expect("lenet5 has an int8 model"),
                Activation::Sigmoid.into(),
                &params(kind),
                &ds.images,
                0.2860,
                0.3530,
            )
            .expect("quantizes");
            vec![crate::int8::to_bytes(&q)]
        }
        Parser::Safetensors => {
            let kind = ModelKind::LeNet5;
            let m = ModelFile {
                meta: ModelMeta {
                    arch: kind.into(),
                    act: Activation::Tanh,
                    norm: crate::data::Normalization::UNIT,
                },
                params: params(kind),
                checkpoint: None,
            };
            vec![crate::export::to_safetensors(Path::new("seed"), &m).expect("serializes")]
        }
        Parser::Head => {
            use lenet_core::head::{Fc3Head, Fc23Head, Head, write_head};
            use lenet_core::optim::Parameters;
            use lenet_core::quant::QuantLeNet5;
            let trunk = QuantLeNet5::zeroed();
            let mut fc3 = Fc3Head::from_model(&trunk);
            let mut fc23 = Box::new(Fc23Head::from_model(&trunk));
            let mut r = crate::rng::SplitMix64::new(11);
            for t in fc3.tensors_mut().chain(fc23.tensors_mut()) {
                t.iter_mut().for_each(|v| *v = r.next_f32() - 0.5);
            }
            let file = |h: &dyn Fn(&mut Vec<u8>)| {
                let mut out = Vec::new();
                h(&mut out);
                out
            };
            vec![
                file(&|out| {
                    write_head(&fc3, HEAD_TRUNK_CRC, |b| {
                        out.extend_from_slice(b);
                        Ok::<_, ()>(())
                    })
                    .expect("in memory")
                }),
                file(&|out| {
                    write_head(&*fc23, HEAD_TRUNK_CRC, |b| {
                        out.extend_from_slice(b);
                        Ok::<_, ()>(())
                    })
                    .expect("in memory")
                }),
            ]
        }
        Parser::Image => {
            use image::{GrayImage, ImageFormat, Luma, RgbaImage};
            let mut out = Vec::new();
            let mut g = GrayImage::from_pixel(40, 24, Luma([250]));
            for x in 10..30 {
                for y in 5..20 {
                    g.put_pixel(x, y, Luma([(x * 9) as u8]));
                }
            }
            let rgba = RgbaImage::from_fn(16, 16, |x, y| {
                image::Rgba([x as u8 * 16, y as u8 * 16, 9, (x * y) as u8])
            });
            for (img, fmt) in [
                (image::DynamicImage::ImageLuma8(g.clone()), ImageFormat::Png),
                (image::DynamicImage::ImageLuma8(g), ImageFormat::Jpeg),
                (image::DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            ] {
                let mut b = std::io::Cursor::new(Vec::new());
                img.write_to(&mut b, fmt).expect("in-memory encode");
                out.push(b.into_inner());
            }
            out
        }
    }
}

/// A mutation of `seed` in the spirit of libFuzzer's: flipped bits, random
/// bytes, boundary values written over 4- and 8-byte fields (lengths and
/// counts), truncation, insertion, duplication.
pub fn mutate(rng: &mut crate::rng::SplitMix64, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = b.len() as u64;
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                b[i] = rng.next_u64() as u8;
            }
            2 if len >= 8 => {
                const EDGE: [u64; 8] =
                    [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];
                let v = EDGE[rng.below(8) as usize];
                let w = if rng.below(2) == 0 { 4 } else { 8 };
                let i = rng.below(len - w + 1) as usize;
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let bytes = if rng.below(2) == 0 {
                    &bytes[..w as usize]
                } else {
                    &bytes[8 - w as usize..]
                };
                b[i..i + w as usize].copy_from_slice(bytes);
            }
            3 if len > 0 => b.truncate(rng.below(len) as usize),
            4 => {
                let i = rng.below(len + 1) as usize;
                let n = 1 + rng.below(16) as usize;
                let fill: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(i..i, fill);
            }
            5 if len > 0 => {
                let a = rng.below(len) as usize;
                let n = (1 + rng.below(64) as usize).min(b.len() - a);
                let chunk = b[a..a + n].to_vec();
                let at = rng.below(b.len() as u64 + 1) as usize;
                b.splice(at..at, chunk);
            }
            _ => b.push(rng.next_u64() as u8),
        }
    }
    b
}
