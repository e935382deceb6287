//! Whole-model tests: the fused reference against a naive unfused int8
//! pipeline, and the `.q8` format (round trip and every rejection).

use super::*;

/// xorshift64 for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn i8(&mut self) -> i8 {
        (self.next() % 255) as i8
    }
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn qparams(&mut self) -> QParams {
        QParams {
            scale: (0.01 + 0.2 * self.unit()) as f32,
            zero_point: self.range(-128, 127),
        }
    }
}

fn fill_layer(
    rng: &mut Rng,
    w: &mut [i8],
    ws: &mut [f32],
    b: &mut [i32],
    m: &mut [i32],
    s: &mut [i32],
    fan_in: usize,
) {
    for v in w.iter_mut() {
        *v = rng.i8().max(-127);
    }
    for o in 0..b.len() {
        ws[o] = (0.001 + rng.unit() * 0.01) as f32;
        b[o] = rng.range(-3000, 3000);
        // Keep outputs spread over int8: about 1 / (64 sqrt(fan_in)).
        let real = (0.3 + rng.unit()) / (64.0 * (fan_in as f64).sqrt());
        let (mm, ss) = quantize_multiplier(real).unwrap();
        m[o] = mm;
        s[o] = ss;
    }
}

fn random_model<const FLAT: usize, const C1: usize, const C2: usize>(
    seed: u64,
    act: QuantAct,
) -> QuantLeNet<FLAT, C1, C2> {
    let mut rng = Rng(seed);
    let mut m = QuantLeNet::<FLAT, C1, C2>::zeroed();
    m.act = act;
    m.input_mean = 0.25;
    m.input_std = 0.5;
    m.input = QParams::input(m.input_mean, m.input_std);
    for a in [&mut m.act1, &mut m.act2, &mut m.act3, &mut m.act4] {
        a.pre = rng.qparams();
        a.out = activation_output(act, a.pre);
        a.lut = activation_lut(act, a.pre);
    }
    m.logits = rng.qparams();
    let c = &mut m.conv1;
    let w = c
        .weight
        .as_flattened_mut()
        .as_flattened_mut()
        .as_flattened_mut();
    fill_layer(
        &mut rng,
        w,
        &mut c.weight_scale,
        &mut c.bias,
        &mut c.multiplier,
        &mut c.shift,
        25,
    );
    let c = &mut m.conv2;
    let w = c
        .weight
        .as_flattened_mut()
        .as_flattened_mut()
        .as_flattened_mut();
    fill_layer(
        &mut rng,
        w,
        &mut c.weight_scale,
        &mut c.bias,
        &mut c.multiplier,
        &mut c.shift,
        25 * C1,
    );
    let l = &mut m.fc1;
    fill_layer(
        &mut rng,
        l.weight.as_flattened_mut(),
        &mut l.weight_scale,
        &mut l.bias,
        &mut l.multiplier,
        &mut l.shift,
        FLAT,
    );
    let l = &mut m.fc2;
    fill_layer(
        &mut rng,
        l.weight.as_flattened_mut(),
        &mut l.weight_scale,
        &mut l.bias,
        &mut l.multiplier,
        &mut l.shift,
        120,
    );
    let l = &mut m.fc3;
    fill_layer(
        &mut rng,
        l.weight.as_flattened_mut(),
        &mut l.weight_scale,
        &mut l.bias,
        &mut l.multiplier,
        &mut l.shift,
        84,
    );
    m
}

fn random_image(rng: &mut Rng) -> [u8; 784] {
    core::array::from_fn(|i| {
        // Blobs plus noise, so maps are not uniform.
        let (y, x) = ((i / 28) as i32, (i % 28) as i32);
        let v = if (y - 14).abs() + (x - 12).abs() < 9 {
            180
        } else {
            20
        };
        (v + rng.range(-20, 60)).clamp(0, 255) as u8
    })
}

/// Unfused int8 conv (stride 1, padding `p` with the input zero point) ->
/// requantize -> table, the whole map `(co, oh, ow)` at once.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[i32],
    (ci, h, w): (usize, usize, usize),
    weight: &[i8],
    bias: &[i32],
    mult: &[i32],
    shift: &[i32],
    k: usize,
    p: usize,
    x_zp: i32,
    y_zp: i32,
    lut: &[i8; 256],
) -> (Vec<i32>, usize, usize) {
    let co = bias.len();
    let (oh, ow) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
    // Explicitly padded input.
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let mut xp = vec![x_zp; ci * hp * wp];
    for c in 0..ci {
        for yy in 0..h {
            for xx in 0..w {
                xp[(c * hp + yy + p) * wp + xx + p] = x[(c * h + yy) * w + xx];
            }
        }
    }
    let mut y = vec![0; co * oh * ow];
    for o in 0..co {
        for yy in 0..oh {
            for xx in 0..ow {
                let mut acc = i64::from(bias[o]);
                for c in 0..ci {
                    for u in 0..k {
                        for v in 0..k {
                            let wv = weight[((o * ci + c) * k + u) * k + v];
                            acc += i64::from(wv)
                                * i64::from(xp[(c * hp + yy + u) * wp + xx + v] - x_zp);
                        }
                    }
                }
                let q = requantize(acc as i32, mult[o], shift[o], y_zp);
                y[(o * oh + yy) * ow + xx] = i32::from(lut[(i32::from(q) + 128) as usize]);
            }
        }
    }
    (y, oh, ow)
}

fn naive_pool(x: &[i32], (c, h, w): (usize, usize, usize), max: bool) -> Vec<i32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0; c * oh * ow];
    for ch in 0..c {
        for yy in 0..oh {
            for xx in 0..ow {
                let vals = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| x[(ch * h + 2 * yy + dy) * w + 2 * xx + dx]);
                y[(ch * oh + yy) * ow + xx] = if max {
                    *vals.iter().max().unwrap()
                } else {
                    // Round half away from zero, via f64.
                    let mean = f64::from(vals.iter().sum::<i32>()) / 4.0;
                    mean.round() as i32
                };
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn naive_linear(
    x: &[i32],
    weight: &[i8],
    bias: &[i32],
    mult: &[i32],
    shift: &[i32],
    x_zp: i32,
    y_zp: i32,
    lut: Option<&[i8; 256]>,
) -> Vec<i32> {
    let n = x.len();
    (0..bias.len())
        .map(|o| {
            let acc: i64 = i64::from(bias[o])
                + (0..n)
                    .map(|i| i64::from(weight[o * n + i]) * i64::from(x[i] - x_zp))
                    .sum::<i64>();
            let q = requantize(acc as i32, mult[o], shift[o], y_zp);
            i32::from(lut.map_or(q, |t| t[(i32::from(q) + 128) as usize]))
        })
        .collect()
}

fn naive_infer<const FLAT: usize, const C1: usize, const C2: usize>(
    m: &QuantLeNet<FLAT, C1, C2>,
    image: &[u8; 784],
) -> [i8; 10] {
    let (pad, max) = match QuantLeNet::<FLAT, C1, C2>::ARCH {
        QuantArch::LeNet5 => (2, false),
        QuantArch::LeNet5Max | QuantArch::LeNet5Wide => (0, true),
    };
    let x: Vec<i32> = image.iter().map(|&p| i32::from(p) - 128).collect();
    let c = &m.conv1;
    let w = c.weight.as_flattened().as_flattened().as_flattened();
    let (y, h, wd) = naive_conv(
        &x,
        (1, 28, 28),
        w,
        &c.bias,
        &c.multiplier,
        &c.shift,
        5,
        pad,
        m.input.zero_point,
        m.act1.pre.zero_point,
        &m.act1.lut,
    );
    let x = naive_pool(&y, (C1, h, wd), max);
    let c = &m.conv2;
    let w = c.weight.as_flattened().as_flattened().as_flattened();
    let (y, h2, w2) = naive_conv(
        &x,
        (C1, h / 2, wd / 2),
        w,
        &c.bias,
        &c.multiplier,
        &c.shift,
        5,
        0,
        m.act1.out.zero_point,
        m.act2.pre.zero_point,
        &m.act2.lut,
    );
    let x = naive_pool(&y, (C2, h2, w2), max);
    assert_eq!(x.len(), FLAT);
    let l = &m.fc1;
    let x = naive_linear(
        &x,
        l.weight.as_flattened(),
        &l.bias,
        &l.multiplier,
        &l.shift,
        m.act2.out.zero_point,
        m.act3.pre.zero_point,
        Some(&m.act3.lut),
    );
    let l = &m.fc2;
    let x = naive_linear(
        &x,
        l.weight.as_flattened(),
        &l.bias,
        &l.multiplier,
        &l.shift,
        m.act3.out.zero_point,
        m.act4.pre.zero_point,
        Some(&m.act4.lut),
    );
    let l = &m.fc3;
    let x = naive_linear(
        &x,
        l.weight.as_flattened(),
        &l.bias,
        &l.multiplier,
        &l.shift,
        m.act4.out.zero_point,
        m.logits.zero_point,
        None,
    );
    core::array::from_fn(|i| x[i] as i8)
}

fn check_against_naive<const FLAT: usize, const C1: usize, const C2: usize>(seed: u64) {
    for act in [QuantAct::Sigmoid, QuantAct::Relu, QuantAct::Tanh] {
        let m = random_model::<FLAT, C1, C2>(seed, act);
        let mut rng = Rng(seed ^ 0xabcdef);
        let mut scratch = Scratch::new();
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..20 {
            let img = random_image(&mut rng);
            let got = m.infer(&mut scratch, &img);
            assert_eq!(
                got,
                naive_infer(&m, &img),
                "{:?} {act:?}",
                QuantLeNet::<FLAT, C1, C2>::ARCH
            );
            distinct.insert(got);
        }
        // The data exercise the model: outputs differ between images.
        assert!(
            distinct.len() > 5,
            "{act:?}: only {} distinct outputs",
            distinct.len()
        );
    }
}

#[test]
fn fused_lenet5_equals_unfused_pipeline() {
    check_against_naive::<400, 6, 16>(0x5eed_0001);
}

#[test]
fn fused_lenet5max_equals_unfused_pipeline() {
    check_against_naive::<256, 6, 16>(0x5eed_0002);
}

#[test]
fn fused_lenet5wide_equals_unfused_pipeline() {
    check_against_naive::<512, 16, 32>(0x5eed_0003);
}

#[test]
fn scratch_is_small() {
    assert_eq!(core::mem::size_of::<Scratch>(), 2816);
}

fn model_bytes<const FLAT: usize, const C1: usize, const C2: usize>(
    m: &QuantLeNet<FLAT, C1, C2>,
) -> Vec<u8> {
    let mut buf = vec![0u8; encoded_len(QuantLeNet::<FLAT, C1, C2>::ARCH)];
    assert_eq!(m.write_bytes(&mut buf), Ok(buf.len()));
    buf
}

/// Rewrite the trailing CRC so a deliberate edit reaches the later checks.
fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn format_round_trips_every_architecture() {
    let m5 = random_model::<400, 6, 16>(7, QuantAct::Tanh);
    let bytes = model_bytes(&m5);
    assert_eq!(bytes.len(), 66_398);
    assert_eq!(&bytes[..4], b"LQ8M");
    let back = QuantLeNet5::from_bytes(&bytes).unwrap();
    assert_eq!(back, m5);
    assert_eq!(model_bytes(&back), bytes);
    let any = QuantModel::from_bytes(&bytes).unwrap();
    assert_eq!(any, QuantModel::LeNet5(m5));

    let mm = random_model::<256, 6, 16>(8, QuantAct::Relu);
    let bytes = model_bytes(&mm);
    assert_eq!(bytes.len(), 49_118);
    let any = QuantModel::from_bytes(&bytes).unwrap();
    assert_eq!(any.arch(), QuantArch::LeNet5Max);
    assert_eq!(any.act(), QuantAct::Relu);
    let mut again = vec![0u8; any.encoded_len()];
    assert_eq!(any.write_bytes(&mut again), Ok(bytes.len()));
    assert_eq!(again, bytes);
    assert_eq!(any, QuantModel::LeNet5Max(mm));

    let mut mw = Box::new(QuantLeNet5Wide::zeroed());
    *mw = random_model::<512, 16, 32>(10, QuantAct::Sigmoid);
    let bytes = model_bytes(&*mw);
    assert_eq!(bytes.len(), 90_904);
    let any = QuantModel::from_bytes(&bytes).unwrap();
    assert_eq!(any.arch(), QuantArch::LeNet5Wide);
    assert_eq!(any, QuantModel::LeNet5Wide(*mw));
}

#[test]
fn format_rejects_every_corruption() {
    let good = model_bytes(&random_model::<400, 6, 16>(9, QuantAct::Sigmoid));
    let parse = |b: &[u8]| QuantLeNet5::from_bytes(b).err();
    let edit = |f: &dyn Fn(&mut Vec<u8>), crc: bool| {
        let mut b = good.clone();
        f(&mut b);
        if crc {
            fix_crc(&mut b);
        }
        b
    };
    assert_eq!(parse(&good), None);
    assert_eq!(parse(&good[..10]), Some(QuantError::TooShort { len: 10 }));
    assert_eq!(parse(&[]), Some(QuantError::TooShort { len: 0 }));
    assert_eq!(
        parse(&edit(&|b| b[0] = b'X', false)),
        Some(QuantError::BadMagic { found: *b"XQ8M" })
    );
    assert_eq!(
        parse(&edit(&|b| b[4] = 2, false)),
        Some(QuantError::UnsupportedVersion { found: 2 })
    );
    // Truncated and padded files: the declared length no longer matches.
    assert_eq!(
        parse(&good[..good.len() - 1]),
        Some(QuantError::SizeMismatch {
            expected: good.len(),
            found: good.len() - 1
        })
    );
    assert_eq!(
        parse(&edit(&|b| b.push(0), false)),
        Some(QuantError::SizeMismatch {
            expected: good.len(),
            found: good.len() + 1
        })
    );
    // One flipped bit anywhere in the content, or in the CRC itself.
    for pos in [12, 40, 200, 5000, 60_000, good.len() - 5, good.len() - 1] {
        let bad = edit(&|b| b[pos] ^= 0x10, false);
        assert!(
            matches!(parse(&bad), Some(QuantError::ChecksumMismatch { .. })),
            "byte {pos}: {:?}",
            parse(&bad)
        );
    }
    assert_eq!(
        parse(&edit(&|b| b[6] = 7, true)),
        Some(QuantError::UnknownArch { found: 7 })
    );
    assert_eq!(
        parse(&edit(&|b| b[7] = 9, true)),
        Some(QuantError::UnknownActivation { found: 9 })
    );
    // A valid file of the other architecture.
    let other = model_bytes(&random_model::<256, 6, 16>(10, QuantAct::Sigmoid));
    assert_eq!(
        parse(&other),
        Some(QuantError::WrongArch {
            expected: QuantArch::LeNet5,
            found: QuantArch::LeNet5Max
        })
    );
    assert_eq!(
        QuantLeNet5Max::from_bytes(&good).err(),
        Some(QuantError::WrongArch {
            expected: QuantArch::LeNet5Max,
            found: QuantArch::LeNet5
        })
    );
    // Right architecture byte, wrong length for it (declared length agrees).
    let short = edit(
        &|b| {
            b.truncate(b.len() - 100);
            let n = b.len() as u32;
            b[8..12].copy_from_slice(&n.to_le_bytes());
        },
        true,
    );
    assert_eq!(
        parse(&short),
        Some(QuantError::SizeMismatch {
            expected: good.len(),
            found: good.len() - 100
        })
    );
    // conv1 padding field (shape 5, at 12 + 2*5) says 0.
    assert_eq!(
        parse(&edit(&|b| b[22] = 0, true)),
        Some(QuantError::ShapeMismatch {
            field: "conv1 padding",
            expected: 2,
            found: 0
        })
    );
    // Input scale 0 (first f32 after mean/std at 44).
    assert_eq!(
        parse(&edit(
            &|b| b[44..48].copy_from_slice(&0f32.to_le_bytes()),
            true
        )),
        Some(QuantError::InvalidParameter { what: "input" })
    );
    // Input std NaN (at 40).
    assert_eq!(
        parse(&edit(
            &|b| b[40..44].copy_from_slice(&f32::NAN.to_le_bytes()),
            true
        )),
        Some(QuantError::InvalidParameter {
            what: "input mean/std"
        })
    );
    // act2 pre zero point 300 (act params start at 52; act2 pre at 52 + 16).
    assert_eq!(
        parse(&edit(
            &|b| b[72..76].copy_from_slice(&300i32.to_le_bytes()),
            true
        )),
        Some(QuantError::InvalidParameter { what: "act2" })
    );
    // conv1 shift[0] = 31: conv1 starts at 124, weights 150, then 6 scales,
    // 6 biases, 6 multipliers.
    let shift0 = 124 + 150 + 3 * 6 * 4;
    assert_eq!(
        parse(&edit(
            &|b| b[shift0..shift0 + 4].copy_from_slice(&31i32.to_le_bytes()),
            true
        )),
        Some(QuantError::InvalidParameter { what: "conv1" })
    );
    // conv1 multiplier[0] negative.
    let mult0 = 124 + 150 + 2 * 6 * 4;
    assert_eq!(
        parse(&edit(
            &|b| b[mult0..mult0 + 4].copy_from_slice(&(-5i32).to_le_bytes()),
            true
        )),
        Some(QuantError::InvalidParameter { what: "conv1" })
    );
    // The generic parser reports the same errors.
    assert_eq!(
        QuantModel::from_bytes(&edit(&|b| b[6] = 7, true)).err(),
        Some(QuantError::UnknownArch { found: 7 })
    );
    // Writers check their buffer.
    let m = QuantLeNet5::from_bytes(&good).unwrap();
    assert_eq!(
        m.write_bytes(&mut [0u8; 100]),
        Err(QuantError::BufferTooSmall {
            needed: good.len(),
            len: 100
        })
    );
}

#[test]
fn errors_read_clearly() {
    let e = QuantError::ChecksumMismatch {
        stored: 1,
        computed: 2,
    };
    let s = e.to_string();
    assert!(s.contains("checksum") && s.contains("0x00000001"), "{s}");
    let s = QuantError::BadMagic { found: *b"abcd" }.to_string();
    assert!(s.contains("LQ8M"), "{s}");
}

#[test]
fn quantize_rejects_bad_inputs() {
    let mut m = QuantLeNet5::zeroed();
    let r = Ranges {
        conv1: (-1.0, 1.0),
        conv2: (-1.0, 1.0),
        fc1: (-1.0, 1.0),
        fc2: (-1.0, 1.0),
        logits: (-1.0, 1.0),
    };
    assert_eq!(
        m.quantize_into(QuantAct::Relu, &[0.0; 10], &r, 0.0, 1.0),
        Err(QuantError::SizeMismatch {
            expected: 61_706,
            found: 10
        })
    );
    let mut p = vec![0.01f32; num_float_params(400)];
    assert_eq!(
        m.quantize_into(QuantAct::Relu, &p, &r, 0.0, 0.0),
        Err(QuantError::InvalidParameter {
            what: "input mean/std"
        })
    );
    p[3] = f32::NAN;
    assert!(matches!(
        m.quantize_into(QuantAct::Relu, &p, &r, 0.0, 1.0),
        Err(QuantError::InvalidParameter { .. })
    ));
    assert_eq!(num_float_params(256), 44_426);
    assert_eq!(num_float_params(512), 85_822);
}
