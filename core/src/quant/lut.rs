//! Activation lookup tables: 256 int8 entries, computed once at
//! quantization time, so inference is integer-only.
//!
//! Entry `i` holds the output for input `q = i - 128` (use [`lut_index`]):
//! `out = clamp(round(f((q - zp_in) * s_in) / s_out) + zp_out, -128, 127)`,
//! rounding half away from zero, evaluated in `f64` with `libm` (the same
//! bits on every target). The output quantization of sigmoid and tanh is
//! fixed, as TFLite fixes it: [`SIGMOID_OUTPUT`] (scale 1/256, zero point
//! -128) and [`TANH_OUTPUT`] (scale 1/128, zero point 0). ReLU keeps its
//! input quantization and its table is the clamp at the zero point,
//! `max(q, zp)`.

use super::{QParams, QuantAct};

/// Output quantization of int8 sigmoid (TFLite `LOGISTIC`): `[0, 1)` on
/// scale 1/256, zero point -128.
pub const SIGMOID_OUTPUT: QParams = QParams {
    scale: 1.0 / 256.0,
    zero_point: -128,
};

/// Output quantization of int8 tanh (TFLite `TANH`): `[-1, 1)` on scale
/// 1/128, zero point 0.
pub const TANH_OUTPUT: QParams = QParams {
    scale: 1.0 / 128.0,
    zero_point: 0,
};

/// Table index of an int8 value: `q + 128`.
#[inline]
pub const fn lut_index(q: i8) -> usize {
    (q as i32 + 128) as usize
}

/// Output quantization of `act` for an input quantized with `input`.
pub const fn activation_output(act: QuantAct, input: QParams) -> QParams {
    match act {
        QuantAct::Sigmoid => SIGMOID_OUTPUT,
        QuantAct::Tanh => TANH_OUTPUT,
        QuantAct::Relu => input,
    }
}

/// Build the lookup table of `act` for an input quantized with `input`.
///
/// # Examples
///
/// ```
/// use lenet_core::quant::{activation_lut, lut_index, QParams, QuantAct};
/// let input = QParams { scale: 0.05, zero_point: 3 };
/// let lut = activation_lut(QuantAct::Sigmoid, input);
/// // q = zp is x = 0: sigmoid(0) = 0.5 = (0 - (-128)) / 256.
/// assert_eq!(lut[lut_index(3)], 0);
/// let relu = activation_lut(QuantAct::Relu, input);
/// assert_eq!(relu[lut_index(-50)], 3);
/// assert_eq!(relu[lut_index(50)], 50);
/// ```
pub fn activation_lut(act: QuantAct, input: QParams) -> [i8; 256] {
    let output = activation_output(act, input);
    let mut lut = [0i8; 256];
    for (i, entry) in lut.iter_mut().enumerate() {
        let q = i as i32 - 128;
        *entry = match act {
            QuantAct::Relu => q.max(input.zero_point).clamp(-128, 127) as i8,
            QuantAct::Sigmoid | QuantAct::Tanh => {
                let x = f64::from(q - input.zero_point) * f64::from(input.scale);
                let y = match act {
                    QuantAct::Sigmoid => 1.0 / (1.0 + libm::exp(-x)),
                    _ => libm::tanh(x),
                };
                let v = libm::round(y / f64::from(output.scale)) + f64::from(output.zero_point);
                v.clamp(-128.0, 127.0) as i8
            }
        };
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUTS: [QParams; 4] = [
        QParams {
            scale: 0.05,
            zero_point: 3,
        },
        QParams {
            scale: 0.0123,
            zero_point: -128,
        },
        QParams {
            scale: 0.1,
            zero_point: 127,
        },
        QParams {
            scale: 1.0 / 255.0,
            zero_point: 0,
        },
    ];

    /// Every entry is the int8 value nearest to the true activation (ties
    /// away from zero), or the clamp of it.
    #[test]
    fn sigmoid_and_tanh_tables_are_exact() {
        for input in INPUTS {
            for act in [QuantAct::Sigmoid, QuantAct::Tanh] {
                let out = activation_output(act, input);
                let lut = activation_lut(act, input);
                for q in -128i32..=127 {
                    let x = f64::from(q - input.zero_point) * f64::from(input.scale);
                    let y = match act {
                        QuantAct::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                        _ => x.tanh(),
                    };
                    let got = i32::from(lut[lut_index(q as i8)]);
                    let real = y / f64::from(out.scale) + f64::from(out.zero_point);
                    if (got == 127 && real >= 126.5) || (got == -128 && real <= -127.5) {
                        continue;
                    }
                    assert!(
                        (f64::from(got) - real).abs() <= 0.5 + 1e-9,
                        "{act:?} q={q} got {got} want {real}"
                    );
                    // Ties go away from zero of the scaled value.
                    let scaled = y / f64::from(out.scale);
                    if (scaled.fract().abs() - 0.5).abs() < 1e-12 {
                        assert_eq!(f64::from(got - out.zero_point), scaled.round());
                    }
                }
                // Monotone non-decreasing, as both functions are.
                assert!(lut.windows(2).all(|w| w[0] <= w[1]), "{act:?} not monotone");
            }
        }
    }

    #[test]
    fn sigmoid_table_hits_fixed_points() {
        // zp_in = 0, scale 1/16: q = 0 is sigmoid(0) = 0.5 -> 128 - 128 = 0.
        let lut = activation_lut(
            QuantAct::Sigmoid,
            QParams {
                scale: 1.0 / 16.0,
                zero_point: 0,
            },
        );
        assert_eq!(lut[lut_index(0)], 0);
        // x = 8: sigmoid = 0.99966 -> round(255.91) = 256 -> 128, clamped to 127.
        assert_eq!(lut[lut_index(127)], 127);
        // x = -8: 0.000335 * 256 = 0.086 -> 0 -> -128.
        assert_eq!(lut[lut_index(-128)], -128);
        let tanh = activation_lut(
            QuantAct::Tanh,
            QParams {
                scale: 1.0 / 16.0,
                zero_point: 0,
            },
        );
        assert_eq!(tanh[lut_index(0)], 0);
        assert_eq!(tanh[lut_index(127)], 127);
        assert_eq!(tanh[lut_index(-128)], -128);
        // tanh is odd, and rounding half away from zero keeps it odd.
        // (Only off the clamp: +1.0 is not representable, -1.0 is.)
        for q in 1..=127i8 {
            let (pos, neg) = (
                i32::from(tanh[lut_index(q)]),
                i32::from(tanh[lut_index(-q)]),
            );
            if pos < 127 {
                assert_eq!(pos, -neg, "q={q}");
            }
        }
    }

    #[test]
    fn relu_table_is_the_clamp_at_zero_point() {
        for input in INPUTS {
            let lut = activation_lut(QuantAct::Relu, input);
            for q in i8::MIN..=i8::MAX {
                let want = (i32::from(q)).max(input.zero_point).min(127) as i8;
                assert_eq!(lut[lut_index(q)], want);
            }
            assert_eq!(activation_output(QuantAct::Relu, input), input);
        }
    }
}
