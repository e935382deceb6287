//! Networks as data: each model as the list of layers of its PyTorch
//! `nn.Sequential`, with their sizes.
//!
//! Back ends that are not written per model (the CUDA trainer and its
//! emulated device) build their schedule, buffers and parameter offsets from
//! this list; parameter names are `"{index}.weight"` and `"{index}.bias"` of
//! the layers that have parameters, in list order, which is the PyTorch
//! `state_dict` order ([`PARAM_NAMES`](super::PARAM_NAMES) for the LeNet
//! models).
//!
//! # Examples
//!
//! ```
//! use lenet_core::model::{Layer, ModelKind, Shape3};
//! let layers = ModelKind::LeNet5.layers();
//! assert_eq!(layers[0], Layer::Conv2d { in_channels: 1, out_channels: 6, kernel: 5, padding: 2, stride: 1 });
//! // Every shape follows from the input's: (1, 28, 28) -> ... -> 10 logits.
//! let mut s = Shape3 { c: 1, h: 28, w: 28 };
//! for l in layers {
//!     s = l.output_shape(s).unwrap();
//! }
//! assert_eq!(s, Shape3 { c: 10, h: 1, w: 1 });
//! ```

use super::ModelKind;

/// One layer of a network, PyTorch semantics (weights `[out][in][kh][kw]`
/// and `[out][in]`, zero padding, pooling in floor mode).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Layer {
    /// `nn.Conv2d(in_channels, out_channels, kernel, stride, padding)`,
    /// square kernel, with bias.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
        /// Zero padding on every side.
        padding: usize,
        /// Stride in both directions.
        stride: usize,
    },
    /// The model's hidden activation (sigmoid, ReLU or tanh), elementwise.
    Act,
    /// `nn.AvgPool2d(kernel, stride)`, no padding.
    AvgPool2d {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `nn.MaxPool2d(kernel, stride)`, no padding.
    MaxPool2d {
        /// Window side.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// `nn.Flatten()`: `(C, H, W)` to `C * H * W` features, row-major.
    Flatten,
    /// `nn.Linear(in_features, out_features)`, with bias.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// `nn.Dropout(p)`: in training each value is zeroed with probability
    /// `p` and the others are multiplied by `1 / (1 - p)`; the identity in
    /// inference. The mask is [`crate::dropout::mask`] (seeded, the same on
    /// every back end), not PyTorch's generator.
    Dropout {
        /// Probability of zeroing, in `[0, 1)`.
        p: f32,
    },
    /// `nn.Upsample(size=(h, w), mode="bilinear", align_corners=False)`,
    /// which is what torchvision's `Resize((h, w))` computes on a tensor
    /// when it enlarges (see [`crate::resize`]).
    Upsample {
        /// Output rows.
        h: usize,
        /// Output columns.
        w: usize,
    },
}

/// A feature map's shape `(C, H, W)`; a vector of `n` features is
/// `(n, 1, 1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape3 {
    /// Channels (or features).
    pub c: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl Shape3 {
    /// Number of values, `c * h * w`.
    pub const fn len(self) -> usize {
        self.c * self.h * self.w
    }

    /// Whether the shape holds no value.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Why a layer cannot take an input of some shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShapeError {
    /// The input shape.
    pub input: Shape3,
    /// The layer.
    pub layer: Layer,
}

impl core::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "layer {:?} cannot take an input of shape ({}, {}, {})",
            self.layer, self.input.c, self.input.h, self.input.w
        )
    }
}

impl core::error::Error for ShapeError {}

/// Output side of a window of `k` at stride `s` with padding `p` over `n`
/// (floor mode), or `None` if the window does not fit.
const fn window_out(n: usize, k: usize, p: usize, s: usize) -> Option<usize> {
    if s == 0 || k == 0 || n + 2 * p < k {
        None
    } else {
        Some((n + 2 * p - k) / s + 1)
    }
}

impl Layer {
    /// The output shape for input shape `x`.
    ///
    /// # Errors
    /// The layer does not fit the input (channels, features or a window
    /// larger than the padded input).
    pub const fn output_shape(self, x: Shape3) -> Result<Shape3, ShapeError> {
        let bad = Err(ShapeError {
            input: x,
            layer: self,
        });
        match self {
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                padding,
                stride,
            } => {
                if x.c != in_channels {
                    return bad;
                }
                match (
                    window_out(x.h, kernel, padding, stride),
                    window_out(x.w, kernel, padding, stride),
                ) {
                    (Some(h), Some(w)) => Ok(Shape3 {
                        c: out_channels,
                        h,
                        w,
                    }),
                    _ => bad,
                }
            }
            Layer::Act => Ok(x),
            Layer::Dropout { p } => {
                if p >= 0.0 && p < 1.0 {
                    Ok(x)
                } else {
                    bad
                }
            }
            Layer::Upsample { h, w } => {
                if h == 0 || w == 0 || x.h == 0 || x.w == 0 {
                    bad
                } else {
                    Ok(Shape3 { c: x.c, h, w })
                }
            }
            Layer::AvgPool2d { kernel, stride } | Layer::MaxPool2d { kernel, stride } => {
                match (
                    window_out(x.h, kernel, 0, stride),
                    window_out(x.w, kernel, 0, stride),
                ) {
                    (Some(h), Some(w)) => Ok(Shape3 { c: x.c, h, w }),
                    _ => bad,
                }
            }
            Layer::Flatten => Ok(Shape3 {
                c: x.len(),
                h: 1,
                w: 1,
            }),
            Layer::Linear {
                in_features,
                out_features,
            } => {
                if x.len() != in_features {
                    return bad;
                }
                Ok(Shape3 {
                    c: out_features,
                    h: 1,
                    w: 1,
                })
            }
        }
    }

    /// Shapes of the weight and bias tensors, if the layer has parameters:
    /// `([out, in, k, k], out)` or `([out, in, 1, 1], out)` for a linear
    /// layer (read its weight as `[out][in]`).
    pub const fn param_shapes(self) -> Option<([usize; 4], usize)> {
        match self {
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                ..
            } => Some(([out_channels, in_channels, kernel, kernel], out_channels)),
            Layer::Linear {
                in_features,
                out_features,
            } => Some(([out_features, in_features, 1, 1], out_features)),
            _ => None,
        }
    }

    /// Number of trainable scalars (weights and bias).
    pub const fn num_params(self) -> usize {
        match self.param_shapes() {
            Some((w, b)) => w[0] * w[1] * w[2] * w[3] + b,
            None => 0,
        }
    }
}

/// The input of every model: one 28x28 channel.
pub const INPUT_SHAPE: Shape3 = Shape3 { c: 1, h: 28, w: 28 };

const fn lenet(n1: usize, n2: usize, padding: usize, pool: Layer, flat: usize) -> [Layer; 12] {
    [
        Layer::Conv2d {
            in_channels: 1,
            out_channels: n1,
            kernel: 5,
            padding,
            stride: 1,
        },
        Layer::Act,
        pool,
        Layer::Conv2d {
            in_channels: n1,
            out_channels: n2,
            kernel: 5,
            padding: 0,
            stride: 1,
        },
        Layer::Act,
        pool,
        Layer::Flatten,
        Layer::Linear {
            in_features: flat,
            out_features: 120,
        },
        Layer::Act,
        Layer::Linear {
            in_features: 120,
            out_features: 84,
        },
        Layer::Act,
        Layer::Linear {
            in_features: 84,
            out_features: 10,
        },
    ]
}

const AVG2: Layer = Layer::AvgPool2d {
    kernel: 2,
    stride: 2,
};
const MAX2: Layer = Layer::MaxPool2d {
    kernel: 2,
    stride: 2,
};
static LENET5: [Layer; 12] = lenet(6, 16, 2, AVG2, 400);
static LENET5_MAX: [Layer; 12] = lenet(6, 16, 0, MAX2, 256);
static LENET5_WIDE: [Layer; 12] = lenet(16, 32, 0, MAX2, 512);

impl ModelKind {
    /// The model as the layer list of its PyTorch `nn.Sequential`.
    pub fn layers(self) -> &'static [Layer] {
        match self {
            ModelKind::LeNet5 => &LENET5,
            ModelKind::LeNet5Max => &LENET5_MAX,
            ModelKind::LeNet5Wide => &LENET5_WIDE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PARAM_NAMES;

    /// The layer lists restate nothing: their parameter names, shapes and
    /// counts, and the flattened size, agree with the structs of each kind.
    #[test]
    fn layer_lists_agree_with_the_param_structs() {
        for kind in ModelKind::ALL {
            let mut s = INPUT_SHAPE;
            let mut names = [""; 10];
            let mut shapes: [[usize; 4]; 10] = [[0; 4]; 10];
            let mut j = 0;
            let mut total = 0;
            for (i, l) in kind.layers().iter().enumerate() {
                if *l == Layer::Flatten {
                    assert_eq!(s.len(), kind.flat_features(), "{kind}");
                }
                s = l.output_shape(s).unwrap();
                if let Some((w, b)) = l.param_shapes() {
                    let (wn, bn) = (PARAM_NAMES[j], PARAM_NAMES[j + 1]);
                    assert_eq!(wn.split('.').next().unwrap(), i.to_string().as_str());
                    assert_eq!(bn, &*std::format!("{i}.bias"));
                    names[j] = wn;
                    shapes[j] = w;
                    shapes[j + 1] = [b, 1, 1, 1];
                    j += 2;
                    total += l.num_params();
                }
            }
            assert_eq!(s, Shape3 { c: 10, h: 1, w: 1 }, "{kind}");
            assert_eq!(j, 10);
            assert_eq!(total, kind.num_params(), "{kind}");
            for (k, want) in kind.shapes().iter().enumerate() {
                let got: usize = shapes[k].iter().product();
                assert_eq!(got, want.iter().product::<usize>(), "{kind} tensor {k}");
                assert_eq!(shapes[k][0], want[0], "{kind} tensor {k}");
            }
        }
    }

    #[test]
    fn shapes_reject_what_does_not_fit() {
        let conv = Layer::Conv2d {
            in_channels: 3,
            out_channels: 4,
            kernel: 3,
            padding: 1,
            stride: 2,
        };
        let x = Shape3 { c: 3, h: 7, w: 8 };
        assert_eq!(conv.output_shape(x), Ok(Shape3 { c: 4, h: 4, w: 4 }));
        assert!(conv.output_shape(Shape3 { c: 2, ..x }).is_err());
        let pool = Layer::MaxPool2d {
            kernel: 3,
            stride: 2,
        };
        assert_eq!(
            pool.output_shape(Shape3 { c: 1, h: 13, w: 13 }),
            Ok(Shape3 { c: 1, h: 6, w: 6 })
        );
        assert!(pool.output_shape(Shape3 { c: 1, h: 2, w: 5 }).is_err());
    }
}
