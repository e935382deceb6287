//! Float model + calibrated ranges -> int8 model (run at quantization time).

use super::{
    QAct, QParams, QuantAct, QuantError, QuantLeNet, activation_lut, activation_output,
    quantize_multiplier,
};

/// Float range `(min, max)` of each pre-activation tensor seen during
/// calibration (the conv/linear outputs before the activation, the logits).
///
/// For ReLU the quantizer uses `(0, max)`, the range of the ReLU output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranges {
    /// conv1 output.
    pub conv1: (f32, f32),
    /// conv2 output.
    pub conv2: (f32, f32),
    /// fc1 output.
    pub fc1: (f32, f32),
    /// fc2 output.
    pub fc2: (f32, f32),
    /// fc3 output (logits).
    pub logits: (f32, f32),
}

impl Ranges {
    /// Empty ranges (`min = +inf`, `max = -inf`), to widen with
    /// [`Self::observe`].
    pub const fn empty() -> Self {
        let e = (f32::INFINITY, f32::NEG_INFINITY);
        Self {
            conv1: e,
            conv2: e,
            fc1: e,
            fc2: e,
            logits: e,
        }
    }

    /// Widen `range` to cover every value of `values`.
    pub fn observe(range: &mut (f32, f32), values: &[f32]) {
        for &v in values {
            range.0 = range.0.min(v);
            range.1 = range.1.max(v);
        }
    }

    /// Union of two sets of ranges.
    pub fn merge(self, other: Self) -> Self {
        let m = |a: (f32, f32), b: (f32, f32)| (a.0.min(b.0), a.1.max(b.1));
        Self {
            conv1: m(self.conv1, other.conv1),
            conv2: m(self.conv2, other.conv2),
            fc1: m(self.fc1, other.fc1),
            fc2: m(self.fc2, other.fc2),
            logits: m(self.logits, other.logits),
        }
    }
}

/// Number of float parameters of a LeNet-5 whose fc1 takes `flat` inputs
/// (512 is the wide network, 16 and 32 channels; otherwise 6 and 16).
pub const fn num_float_params(flat: usize) -> usize {
    let (c1, c2) = if flat == 512 { (16, 32) } else { (6, 16) };
    (c1 * 25 + c1) + (c2 * c1 * 25 + c2) + (120 * flat + 120) + (84 * 120 + 84) + (10 * 84 + 10)
}

/// Activation stage for a calibrated pre-activation range.
fn stage(act: QuantAct, range: (f32, f32)) -> QAct {
    let (min, max) = match act {
        QuantAct::Relu => (0.0, range.1),
        QuantAct::Sigmoid | QuantAct::Tanh => range,
    };
    let pre = QParams::from_min_max(min, max);
    QAct {
        pre,
        out: activation_output(act, pre),
        lut: activation_lut(act, pre),
    }
}

/// Quantize one layer: `w` is `(O, fan_in)` flattened, `b` is `(O,)`.
#[allow(clippy::too_many_arguments)]
fn layer(
    weight: &mut [i8],
    weight_scale: &mut [f32],
    bias: &mut [i32],
    multiplier: &mut [i32],
    shift: &mut [i32],
    w: &[f32],
    b: &[f32],
    s_in: f32,
    s_out: f32,
) -> Result<(), QuantError> {
    let fan_in = weight.len() / bias.len();
    for (o, (w_o, q_o)) in w
        .chunks_exact(fan_in)
        .zip(weight.chunks_exact_mut(fan_in))
        .enumerate()
    {
        if w_o.iter().any(|v| !v.is_finite()) || !b[o].is_finite() {
            return Err(QuantError::InvalidParameter {
                what: "non-finite float parameter",
            });
        }
        let max_abs = w_o.iter().fold(0f32, |m, v| m.max(v.abs()));
        let sw = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
        for (q, &v) in q_o.iter_mut().zip(w_o) {
            *q = libm::round(f64::from(v) / f64::from(sw)).clamp(-127.0, 127.0) as i8;
        }
        let s_acc = f64::from(s_in) * f64::from(sw);
        let bq = libm::round(f64::from(b[o]) / s_acc);
        bias[o] = bq.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
        weight_scale[o] = sw;
        let (m, s) =
            quantize_multiplier(s_acc / f64::from(s_out)).ok_or(QuantError::InvalidParameter {
                what: "requantization factor out of range",
            })?;
        multiplier[o] = m;
        shift[o] = s;
    }
    Ok(())
}

impl<const FLAT: usize, const C1: usize, const C2: usize> QuantLeNet<FLAT, C1, C2> {
    /// Quantize a float LeNet-5 in place (see the module docs for the
    /// scheme).
    ///
    /// `params` are the float parameters flat in PyTorch `state_dict` order
    /// (conv1 w, b, conv2 w, b, fc1 w, b, fc2 w, b, fc3 w, b);
    /// `ranges` the calibrated pre-activation ranges; `mean`/`std` the input
    /// normalization `x = (p / 255 - mean) / std` the float model was
    /// trained with.
    ///
    /// # Errors
    ///
    /// [`QuantError::SizeMismatch`] if `params` has the wrong length,
    /// [`QuantError::InvalidParameter`] for non-finite parameters, a bad
    /// `std`, or a requantization factor that no multiplier can represent.
    pub fn quantize_into(
        &mut self,
        act: QuantAct,
        params: &[f32],
        ranges: &Ranges,
        mean: f32,
        std: f32,
    ) -> Result<(), QuantError> {
        let expected = num_float_params(FLAT);
        if params.len() != expected {
            return Err(QuantError::SizeMismatch {
                expected,
                found: params.len(),
            });
        }
        if !(mean.is_finite() && std.is_finite() && std > 0.0) {
            return Err(QuantError::InvalidParameter {
                what: "input mean/std",
            });
        }
        let mut rest = params;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        };
        self.act = act;
        self.input_mean = mean;
        self.input_std = std;
        self.input = QParams::input(mean, std);
        self.act1 = stage(act, ranges.conv1);
        self.act2 = stage(act, ranges.conv2);
        self.act3 = stage(act, ranges.fc1);
        self.act4 = stage(act, ranges.fc2);
        self.logits = QParams::from_min_max(ranges.logits.0, ranges.logits.1);

        let c = &mut self.conv1;
        let (w, b) = (take(C1 * 25), take(C1));
        let qw = c
            .weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut();
        let (s_in, s_out) = (self.input.scale, self.act1.pre.scale);
        layer(
            qw,
            &mut c.weight_scale,
            &mut c.bias,
            &mut c.multiplier,
            &mut c.shift,
            w,
            b,
            s_in,
            s_out,
        )?;

        let c = &mut self.conv2;
        let (w, b) = (take(C2 * C1 * 25), take(C2));
        let qw = c
            .weight
            .as_flattened_mut()
            .as_flattened_mut()
            .as_flattened_mut();
        let (s_in, s_out) = (self.act1.out.scale, self.act2.pre.scale);
        layer(
            qw,
            &mut c.weight_scale,
            &mut c.bias,
            &mut c.multiplier,
            &mut c.shift,
            w,
            b,
            s_in,
            s_out,
        )?;

        let l = &mut self.fc1;
        let (w, b) = (take(120 * FLAT), take(120));
        let (s_in, s_out) = (self.act2.out.scale, self.act3.pre.scale);
        let qw = l.weight.as_flattened_mut();
        layer(
            qw,
            &mut l.weight_scale,
            &mut l.bias,
            &mut l.multiplier,
            &mut l.shift,
            w,
            b,
            s_in,
            s_out,
        )?;

        let l = &mut self.fc2;
        let (w, b) = (take(84 * 120), take(84));
        let (s_in, s_out) = (self.act3.out.scale, self.act4.pre.scale);
        let qw = l.weight.as_flattened_mut();
        layer(
            qw,
            &mut l.weight_scale,
            &mut l.bias,
            &mut l.multiplier,
            &mut l.shift,
            w,
            b,
            s_in,
            s_out,
        )?;

        let l = &mut self.fc3;
        let (w, b) = (take(10 * 84), take(10));
        let (s_in, s_out) = (self.act4.out.scale, self.logits.scale);
        let qw = l.weight.as_flattened_mut();
        layer(
            qw,
            &mut l.weight_scale,
            &mut l.bias,
            &mut l.multiplier,
            &mut l.shift,
            w,
            b,
            s_in,
            s_out,
        )?;
        Ok(())
    }
}
