//! int8 layers, the int8 LeNet-5 and its reference inference.
//!
//! Plain loops, no processor-specific tricks: this is the integer reference
//! that faster kernels are tested against bit for bit.

use super::{QParams, QuantAct, QuantArch, lut_index, requantize};
use crate::out_size;

/// int8 convolution (stride 1) with per-output-channel requantization.
#[derive(Clone, Debug, PartialEq)]
pub struct QConv2d<const CO: usize, const CI: usize, const K: usize> {
    /// Weights, symmetric per output channel. // (CO, CI, K, K)
    pub weight: [[[[i8; K]; K]; CI]; CO],
    /// Real value of one weight step per output channel (kept for
    /// inspection; inference uses only `multiplier`/`shift`). // (CO,)
    pub weight_scale: [f32; CO],
    /// Bias on scale `s_in * weight_scale[c]`. // (CO,)
    pub bias: [i32; CO],
    /// Q31 multiplier of `s_in * weight_scale[c] / s_out`. // (CO,)
    pub multiplier: [i32; CO],
    /// Shift of that factor (positive: left). // (CO,)
    pub shift: [i32; CO],
}

impl<const CO: usize, const CI: usize, const K: usize> QConv2d<CO, CI, K> {
    /// All zeros (multipliers 0: every output is the output zero point).
    pub const fn zeroed() -> Self {
        Self {
            weight: [[[[0; K]; K]; CI]; CO],
            weight_scale: [1.0; CO],
            bias: [0; CO],
            multiplier: [0; CO],
            shift: [0; CO],
        }
    }
}

/// int8 fully connected layer with per-output-channel requantization.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinear<const O: usize, const I: usize> {
    /// Weights, symmetric per output channel. // (O, I)
    pub weight: [[i8; I]; O],
    /// Real value of one weight step per output. // (O,)
    pub weight_scale: [f32; O],
    /// Bias on scale `s_in * weight_scale[o]`. // (O,)
    pub bias: [i32; O],
    /// Q31 multiplier of `s_in * weight_scale[o] / s_out`. // (O,)
    pub multiplier: [i32; O],
    /// Shift of that factor (positive: left). // (O,)
    pub shift: [i32; O],
}

impl<const O: usize, const I: usize> QLinear<O, I> {
    /// All zeros (multipliers 0: every output is the output zero point).
    pub const fn zeroed() -> Self {
        Self {
            weight: [[0; I]; O],
            weight_scale: [1.0; O],
            bias: [0; O],
            multiplier: [0; O],
            shift: [0; O],
        }
    }
}

/// A hidden activation: the quantization of its input (the layer output
/// before it) and of its output, and its lookup table.
#[derive(Clone, Debug, PartialEq)]
pub struct QAct {
    /// Quantization of the pre-activation (the layer's requantized output).
    pub pre: QParams,
    /// Quantization of the activation output (also of the pooled map).
    pub out: QParams,
    /// `out[lut_index(q)]` for each pre-activation `q`.
    pub lut: [i8; 256],
}

impl QAct {
    /// Unit quantization, identity table.
    pub const fn identity() -> Self {
        let mut lut = [0i8; 256];
        let mut i = 0;
        while i < 256 {
            lut[i] = (i as i32 - 128) as i8;
            i += 1;
        }
        Self {
            pre: QParams::unit(),
            out: QParams::unit(),
            lut,
        }
    }
}

/// An int8 LeNet-5. `FLAT` (the fc1 input length) selects the architecture:
/// 400 is [`QuantArch::LeNet5`], 256 is [`QuantArch::LeNet5Max`], 512 is
/// [`QuantArch::LeNet5Wide`]; `C1` and `C2` are the conv1 and conv2 output
/// channels (6 and 16, or 16 and 32 for the wide network). Use the aliases
/// [`QuantLeNet5`], [`QuantLeNet5Max`] and [`QuantLeNet5Wide`].
///
/// Every field is public and `Debug` prints valid Rust syntax for it (given
/// the types in scope), so a build script can turn a parsed `.q8` file into
/// a `static` initializer that lands in flash.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLeNet<const FLAT: usize, const C1: usize = 6, const C2: usize = 16> {
    /// Hidden activation.
    pub act: QuantAct,
    /// Input normalization mean of the float model.
    pub input_mean: f32,
    /// Input normalization standard deviation of the float model.
    pub input_std: f32,
    /// Quantization of the input `q = p - 128`.
    pub input: QParams,
    /// Conv(1, C1, 5). // weight (C1, 1, 5, 5)
    pub conv1: QConv2d<C1, 1, 5>,
    /// Activation after conv1.
    pub act1: QAct,
    /// Conv(C1, C2, 5). // weight (C2, C1, 5, 5)
    pub conv2: QConv2d<C2, C1, 5>,
    /// Activation after conv2.
    pub act2: QAct,
    /// Linear(FLAT, 120).
    pub fc1: QLinear<120, FLAT>,
    /// Activation after fc1.
    pub act3: QAct,
    /// Linear(120, 84).
    pub fc2: QLinear<84, 120>,
    /// Activation after fc2.
    pub act4: QAct,
    /// Linear(84, 10).
    pub fc3: QLinear<10, 84>,
    /// Quantization of the logits.
    pub logits: QParams,
}

/// Classic LeNet-5 in int8 (fc1 input 400).
pub type QuantLeNet5 = QuantLeNet<400>;
/// The d2l LeNet-5 variant in int8 (fc1 input 256).
pub type QuantLeNet5Max = QuantLeNet<256>;
/// The d2l LeNet-5 variant widened to 16 and 32 channels, in int8 (fc1
/// input 512).
pub type QuantLeNet5Wide = QuantLeNet<512, 16, 32>;

/// Working memory of one inference: 2816 bytes, sized for the largest
/// network (the classic LeNet-5 uses 1576 of them).
///
/// | field | bytes | holds |
/// |---|---|---|
/// | `a` | 2304 | pooled conv1 map: (6, 14, 14) = 1176 (d2l: (6, 12, 12) = 864; wide: (16, 12, 12) = 2304), then fc1 output (120) |
/// | `b` | 512 | pooled conv2 map: (16, 5, 5) = 400 (d2l: (16, 4, 4) = 256; wide: (32, 4, 4) = 512), then fc2 output (84) |
#[derive(Clone, Debug)]
pub struct Scratch {
    /// Pooled conv1 map, then fc1 output.
    pub a: [i8; 2304],
    /// Pooled conv2 map (the flattened features), then fc2 output.
    pub b: [i8; 512],
}

impl Scratch {
    /// Zeroed scratch (can be a `static`).
    pub const fn new() -> Self {
        Self {
            a: [0; 2304],
            b: [0; 512],
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Pooling after the convolution's activation (2x2 window, stride 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// Integer average, rounded half away from zero ([`avg_pool_round`]).
    Avg,
    /// Maximum.
    Max,
}

/// An element a convolution can read as int8: activations are used as they
/// are, raw `u8` pixels `p` become `p - 128`.
pub trait QInput: Copy {
    /// The int8 value, widened.
    fn q(self) -> i32;
}

impl QInput for i8 {
    #[inline]
    fn q(self) -> i32 {
        i32::from(self)
    }
}

impl QInput for u8 {
    #[inline]
    fn q(self) -> i32 {
        i32::from(self) - 128
    }
}

/// Integer average of `count` values summing to `sum`, rounded half away
/// from zero (TFLM's int8 `AveragePool`).
///
/// # Examples
///
/// ```
/// use lenet_core::quant::avg_pool_round;
/// assert_eq!(avg_pool_round(6, 4), 2); // 1.5 -> 2
/// assert_eq!(avg_pool_round(-6, 4), -2); // -1.5 -> -2
/// assert_eq!(avg_pool_round(-5, 4), -1); // -1.25 -> -1
/// ```
#[inline]
pub const fn avg_pool_round(sum: i32, count: i32) -> i32 {
    if sum > 0 {
        (sum + count / 2) / count
    } else {
        (sum - count / 2) / count
    }
}

/// Index of the largest value, the first one on ties (as `torch.argmax`).
pub fn argmax(logits: &[i8; 10]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// int32 accumulator of one convolution output `(co, oy, ox)` (stride 1,
/// padding `P` filled with the input zero point):
/// `bias[co] + sum_{ci,ky,kx} w[co][ci][ky][kx] * (x[ci][oy+ky-P][ox+kx-P] - x_zp)`,
/// wrapping on overflow.
///
/// `x` is the input map `(CI, H, W)` flattened.
///
/// # Panics
///
/// Panics if `x` is shorter than `CI * H * W`.
#[inline]
pub fn conv_acc<
    X: QInput,
    const CO: usize,
    const CI: usize,
    const K: usize,
    const H: usize,
    const W: usize,
    const P: usize,
>(
    x: &[X],
    conv: &QConv2d<CO, CI, K>,
    co: usize,
    oy: usize,
    ox: usize,
    x_zp: i32,
) -> i32 {
    let x = &x[..CI * H * W]; // (CI, H, W)
    let mut acc = conv.bias[co];
    for (ci, w_ci) in conv.weight[co].iter().enumerate() {
        for (ky, w_row) in w_ci.iter().enumerate() {
            // Padded rows hold x_zp and add nothing.
            let Some(iy) = (oy + ky).checked_sub(P).filter(|&iy| iy < H) else {
                continue;
            };
            let row = &x[(ci * H + iy) * W..][..W];
            for (kx, &w) in w_row.iter().enumerate() {
                let Some(ix) = (ox + kx).checked_sub(P).filter(|&ix| ix < W) else {
                    continue;
                };
                acc = acc.wrapping_add(i32::from(w).wrapping_mul(row[ix].q() - x_zp));
            }
        }
    }
    acc
}

/// Fused convolution (stride 1, padding `P`), requantization, activation
/// table and 2x2 pooling (stride 2, floor mode): computes the pooled map
/// `y` `(CO, PH, PW)` from `x` `(CI, H, W)` without storing the conv output.
///
/// Per pooled pixel: the four conv outputs `acc` of its window, each
/// `lut[requantize(acc, multiplier[co], shift[co], y_zp)]`, then their
/// average ([`avg_pool_round`]) or maximum.
///
/// # Panics
///
/// Panics if `x` is shorter than `CI * H * W` or `y` than `CO * PH * PW`.
#[allow(clippy::too_many_arguments)]
pub fn conv_act_pool<
    X: QInput,
    const CO: usize,
    const CI: usize,
    const K: usize,
    const H: usize,
    const W: usize,
    const P: usize,
    const PH: usize,
    const PW: usize,
>(
    y: &mut [i8],
    x: &[X],
    conv: &QConv2d<CO, CI, K>,
    x_zp: i32,
    y_zp: i32,
    lut: &[i8; 256],
    pool: PoolKind,
) {
    const {
        assert!(PH == out_size(H, K, P, 1) / 2 && PW == out_size(W, K, P, 1) / 2);
    }
    let y = &mut y[..CO * PH * PW]; // (CO, PH, PW)
    for co in 0..CO {
        let (m, s) = (conv.multiplier[co], conv.shift[co]);
        for py in 0..PH {
            for px in 0..PW {
                let mut sum = 0i32;
                let mut max = i32::MIN;
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let acc = conv_acc::<X, CO, CI, K, H, W, P>(
                        x,
                        conv,
                        co,
                        2 * py + dy,
                        2 * px + dx,
                        x_zp,
                    );
                    let a = i32::from(lut[lut_index(requantize(acc, m, s, y_zp))]);
                    sum += a;
                    max = max.max(a);
                }
                let v = match pool {
                    PoolKind::Avg => avg_pool_round(sum, 4),
                    PoolKind::Max => max,
                };
                y[(co * PH + py) * PW + px] = v as i8;
            }
        }
    }
}

/// Fully connected layer with requantization and an optional activation
/// table: `y[o] = lut[requantize(bias[o] + sum_i w[o][i] * (x[i] - x_zp))]`.
///
/// # Panics
///
/// Panics if `x` is shorter than `I` or `y` than `O`.
pub fn linear_act<const O: usize, const I: usize>(
    y: &mut [i8],
    x: &[i8],
    fc: &QLinear<O, I>,
    x_zp: i32,
    y_zp: i32,
    lut: Option<&[i8; 256]>,
) {
    let x = &x[..I]; // (I,)
    let y = &mut y[..O]; // (O,)
    for (o, y_o) in y.iter_mut().enumerate() {
        let mut acc = fc.bias[o];
        for (&w, &xi) in fc.weight[o].iter().zip(x) {
            acc = acc.wrapping_add(i32::from(w).wrapping_mul(i32::from(xi) - x_zp));
        }
        let q = requantize(acc, fc.multiplier[o], fc.shift[o], y_zp);
        *y_o = match lut {
            Some(lut) => lut[lut_index(q)],
            None => q,
        };
    }
}

impl<const FLAT: usize, const C1: usize, const C2: usize> QuantLeNet<FLAT, C1, C2> {
    /// Architecture selected by `FLAT` (and checked against `C1`, `C2`).
    pub const ARCH: QuantArch = match (FLAT, C1, C2) {
        (400, 6, 16) => QuantArch::LeNet5,
        (256, 6, 16) => QuantArch::LeNet5Max,
        (512, 16, 32) => QuantArch::LeNet5Wide,
        _ => panic!(
            "QuantLeNet: <FLAT, C1, C2> must be <400, 6, 16> (LeNet5), <256, 6, 16> (LeNet5Max) or <512, 16, 32> (LeNet5Wide)"
        ),
    };

    /// All-zero weights, unit quantization and identity tables (a
    /// placeholder to fill in place, e.g. a `static`).
    pub const fn zeroed() -> Self {
        Self {
            act: QuantAct::Relu,
            input_mean: 0.0,
            input_std: 1.0,
            input: QParams::unit(),
            conv1: QConv2d::zeroed(),
            act1: QAct::identity(),
            conv2: QConv2d::zeroed(),
            act2: QAct::identity(),
            fc1: QLinear::zeroed(),
            act3: QAct::identity(),
            fc2: QLinear::zeroed(),
            act4: QAct::identity(),
            fc3: QLinear::zeroed(),
            logits: QParams::unit(),
        }
    }

    /// int8 logits of a raw 28x28 image (row-major `u8` pixels; the int8
    /// input is `p - 128`). Integer-only; uses only `scratch` (2816 bytes)
    /// and the stack.
    pub fn infer(&self, scratch: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
        self.features(scratch, image);
        let Scratch { a, b } = scratch;
        // fc1: (FLAT,) in b -> (120,) in a.
        let (a2, a3, a4) = (&self.act2, &self.act3, &self.act4);
        linear_act(
            &mut a[..],
            &b[..],
            &self.fc1,
            a2.out.zero_point,
            a3.pre.zero_point,
            Some(&a3.lut),
        );
        // fc2: (120,) in a -> (84,) in b.
        linear_act(
            &mut b[..],
            &a[..],
            &self.fc2,
            a3.out.zero_point,
            a4.pre.zero_point,
            Some(&a4.lut),
        );
        // fc3: (84,) in b -> logits (10,).
        let mut logits = [0i8; 10];
        linear_act(
            &mut logits,
            &b[..],
            &self.fc3,
            a4.out.zero_point,
            self.logits.zero_point,
            None,
        );
        logits
    }

    /// Predicted class (argmax of [`Self::infer`], first on ties).
    pub fn predict(&self, scratch: &mut Scratch, image: &[u8; 784]) -> usize {
        argmax(&self.infer(scratch, image))
    }

    /// The two fused conv stages: image -> pooled conv1 map in `scratch.a`
    /// -> pooled conv2 map (the flattened features, `FLAT` values in
    /// PyTorch `flatten` order) in `scratch.b`.
    pub fn features(&self, scratch: &mut Scratch, image: &[u8; 784]) {
        let Scratch { a, b } = scratch;
        let (x_zp, a1, a2) = (self.input.zero_point, &self.act1, &self.act2);
        match Self::ARCH {
            QuantArch::LeNet5 => {
                // (1, 28, 28) -pad 2, conv 5-> (6, 28, 28) -avg-> (6, 14, 14)
                conv_act_pool::<u8, C1, 1, 5, 28, 28, 2, 14, 14>(
                    a,
                    image,
                    &self.conv1,
                    x_zp,
                    a1.pre.zero_point,
                    &a1.lut,
                    PoolKind::Avg,
                );
                // (6, 14, 14) -conv 5-> (16, 10, 10) -avg-> (16, 5, 5)
                conv_act_pool::<i8, C2, C1, 5, 14, 14, 0, 5, 5>(
                    b,
                    a,
                    &self.conv2,
                    a1.out.zero_point,
                    a2.pre.zero_point,
                    &a2.lut,
                    PoolKind::Avg,
                );
            }
            QuantArch::LeNet5Max | QuantArch::LeNet5Wide => {
                // (1, 28, 28) -conv 5-> (C1, 24, 24) -max-> (C1, 12, 12)
                conv_act_pool::<u8, C1, 1, 5, 28, 28, 0, 12, 12>(
                    a,
                    image,
                    &self.conv1,
                    x_zp,
                    a1.pre.zero_point,
                    &a1.lut,
                    PoolKind::Max,
                );
                // (C1, 12, 12) -conv 5-> (C2, 8, 8) -max-> (C2, 4, 4)
                conv_act_pool::<i8, C2, C1, 5, 12, 12, 0, 4, 4>(
                    b,
                    a,
                    &self.conv2,
                    a1.out.zero_point,
                    a2.pre.zero_point,
                    &a2.lut,
                    PoolKind::Max,
                );
            }
        }
    }
}
