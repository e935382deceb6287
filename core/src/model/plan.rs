//! A network planned once: every layer of an [`Arch`] resolved against its
//! input, with its output shape, where its parameters lie in the one flat
//! parameter buffer (PyTorch `state_dict` order), their `state_dict`
//! names, and whether the loss's gradient with respect to its input is
//! needed. Every back end (the CPU engine, the CUDA schedule, the
//! reference, export and import) reads its offsets and shapes from here
//! instead of computing them.
//!
//! # Examples
//!
//! ```
//! use lenet_core::model::{Arch, ModelKind, Plan, Shape3};
//! let plan = Plan::new(Arch::LeNet(ModelKind::LeNet5)).unwrap();
//! assert_eq!(plan.num_params(), 61_706);
//! let c3 = &plan.layers()[3];
//! assert_eq!(c3.input, Shape3 { c: 6, h: 14, w: 14 });
//! assert_eq!(c3.output, Shape3 { c: 16, h: 10, w: 10 });
//! let p = c3.params.as_ref().unwrap();
//! assert_eq!((p.weight.start, p.weight.end, p.bias.end), (156, 2_556, 2_572));
//! // The first convolution's input is the image: no gradient needed.
//! assert!(!plan.layers()[0].needs_input_grad && c3.needs_input_grad);
//! let names: Vec<String> = plan.tensors().map(|t| t.name.to_string()).collect();
//! assert_eq!(names[..4], ["0.weight", "0.bias", "3.weight", "3.bias"]);
//! ```

use core::ops::Range;

use super::arch::{Arch, MAX_LAYERS};
use super::layers::{INPUT_SHAPE, Layer, Shape3, ShapeError};
use super::{CLASSES, VggConfig};

/// Where one layer's parameters lie in the flat buffer: the weight
/// (`[out][in][kh][kw]` or `[out][in]`), then the bias.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamRange {
    /// The weight's values.
    pub weight: Range<usize>,
    /// The bias's values, right after the weight.
    pub bias: Range<usize>,
    /// The weight's shape, PyTorch's (`[out, in, k, k]`; a linear layer's
    /// is `[out, in, 1, 1]`).
    pub weight_shape: [usize; 4],
}

impl ParamRange {
    /// Both tensors: `weight.start..bias.end`.
    pub fn all(&self) -> Range<usize> {
        self.weight.start..self.bias.end
    }
}

/// One layer of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedLayer {
    /// The layer.
    pub layer: Layer,
    /// Its index in [`Arch::layers`], which is its index in PyTorch's
    /// `nn.Sequential` (the names' prefix, the dropout mask's layer).
    pub index: usize,
    /// Shape of one image's input.
    pub input: Shape3,
    /// Shape of one image's output.
    pub output: Shape3,
    /// Its parameters, if it has any.
    pub params: Option<ParamRange>,
    /// Whether training needs the loss's gradient with respect to the
    /// input: some layer before this one has parameters.
    pub needs_input_grad: bool,
}

/// Which tensor of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// The weight.
    Weight,
    /// The bias.
    Bias,
}

/// A parameter tensor's PyTorch `state_dict` name, `"{layer}.weight"` or
/// `"{layer}.bias"`, written by its `Display` (no heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorName {
    /// Index of the layer in the `nn.Sequential`.
    pub layer: usize,
    /// Weight or bias.
    pub kind: TensorKind,
}

impl core::fmt::Display for TensorName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self.kind {
            TensorKind::Weight => "weight",
            TensorKind::Bias => "bias",
        };
        write!(f, "{}.{kind}", self.layer)
    }
}

/// One parameter tensor of a plan, in `state_dict` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// Its `state_dict` name.
    pub name: TensorName,
    /// PyTorch's shape: 4 dimensions for a convolution's weight, 2 for a
    /// linear layer's, 1 for a bias (the unused ones are 0).
    pub shape: [usize; 4],
    /// Number of dimensions of `shape` in use.
    pub dims: usize,
    /// Its values in the flat buffer.
    pub range: Range<usize>,
}

/// A network planned once (see the module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    arch: Arch,
    layers: heapless::Vec<PlannedLayer, MAX_LAYERS>,
    num_params: usize,
}

impl Plan {
    /// Plans `arch` on its 28x28 input.
    ///
    /// # Errors
    /// A layer that does not take its input, an empty feature map, a VGG
    /// with other than 1 to 5 blocks, or a network that does not end in
    /// 10 logits.
    pub fn new(arch: Arch) -> Result<Plan, ShapeError> {
        if let Arch::Vgg(VggConfig { blocks, .. }) = arch
            && !(1..=5).contains(&blocks)
        {
            return Err(ShapeError {
                input: INPUT_SHAPE,
                layer: Layer::Flatten,
            });
        }
        let mut layers = heapless::Vec::new();
        let mut s = INPUT_SHAPE;
        let mut off = 0;
        let mut grad = false;
        for (index, &layer) in arch.layers().iter().enumerate() {
            let output = layer.output_shape(s)?;
            if output.is_empty() {
                return Err(ShapeError { input: s, layer });
            }
            let params = layer.param_shapes().map(|(w, b)| {
                let nw = w[0] * w[1] * w[2] * w[3];
                ParamRange {
                    weight: off..off + nw,
                    bias: off + nw..off + nw + b,
                    weight_shape: w,
                }
            });
            let planned = PlannedLayer {
                layer,
                index,
                input: s,
                output,
                needs_input_grad: grad,
                params,
            };
            grad |= planned.params.is_some();
            off += layer.num_params();
            // (Arch::layers holds at most MAX_LAYERS layers.)
            let _ = layers.push(planned);
            s = output;
        }
        if s.len() != CLASSES {
            return Err(ShapeError {
                input: s,
                layer: Layer::Flatten,
            });
        }
        Ok(Plan {
            arch,
            layers,
            num_params: off,
        })
    }

    /// The network planned.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Every layer, in order.
    pub fn layers(&self) -> &[PlannedLayer] {
        &self.layers
    }

    /// Number of trainable scalars: the flat buffer's length.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Shape of the input of one image.
    pub fn input(&self) -> Shape3 {
        INPUT_SHAPE
    }

    /// Index of the first layer with parameters (where backward can
    /// stop), if any.
    pub fn first_param_layer(&self) -> Option<usize> {
        self.layers.iter().position(|l| l.params.is_some())
    }

    /// Every parameter tensor, in `state_dict` order.
    pub fn tensors(&self) -> impl Iterator<Item = Tensor> + '_ {
        self.layers.iter().flat_map(|l| {
            let mut pair: heapless::Vec<Tensor, 2> = heapless::Vec::new();
            if let Some(p) = &l.params {
                let w = p.weight_shape;
                let (shape, dims) = match l.layer {
                    Layer::Linear { .. } => ([w[0], w[1], 0, 0], 2),
                    _ => (w, 4),
                };
                let _ = pair.push(Tensor {
                    name: TensorName {
                        layer: l.index,
                        kind: TensorKind::Weight,
                    },
                    shape,
                    dims,
                    range: p.weight.clone(),
                });
                let _ = pair.push(Tensor {
                    name: TensorName {
                        layer: l.index,
                        kind: TensorKind::Bias,
                    },
                    shape: [p.bias.len(), 0, 0, 0],
                    dims: 1,
                    range: p.bias.clone(),
                });
            }
            pair
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlexNetConfig, ModelKind, PARAM_NAMES};

    fn every_arch() -> [Arch; 7] {
        [
            Arch::LeNet(ModelKind::LeNet5),
            Arch::LeNet(ModelKind::LeNet5Max),
            Arch::LeNet(ModelKind::LeNet5Wide),
            Arch::Cnn,
            Arch::Vgg(VggConfig::NOTES),
            Arch::Vgg(VggConfig {
                blocks: 2,
                width_div: 16,
                size: 32,
                hidden: 32,
            }),
            Arch::AlexNet(AlexNetConfig::NOTES),
        ]
    }

    /// The plan's ranges tile the flat buffer in list order, its shapes
    /// chain, and its count is the arch's.
    #[test]
    fn ranges_tile_the_buffer_and_shapes_chain() {
        for arch in every_arch() {
            let plan = Plan::new(arch).unwrap();
            assert_eq!(plan.num_params(), arch.num_params(), "{arch}");
            assert_eq!(plan.layers().len(), arch.layers().len());
            let mut end = 0;
            let mut s = INPUT_SHAPE;
            for (i, l) in plan.layers().iter().enumerate() {
                assert_eq!((l.index, l.layer), (i, arch.layers()[i]));
                assert_eq!(l.input, s);
                s = l.output;
                if let Some(p) = &l.params {
                    assert_eq!(p.weight.start, end, "{arch} layer {i}");
                    assert_eq!(p.bias.start, p.weight.end);
                    assert_eq!(p.all().len(), l.layer.num_params());
                    end = p.bias.end;
                }
            }
            assert_eq!(end, plan.num_params());
            assert_eq!(s.len(), CLASSES);
            let tensors: Vec<Tensor> = plan.tensors().collect();
            assert_eq!(tensors.iter().map(|t| t.range.len()).sum::<usize>(), end);
            for t in &tensors {
                let n: usize = t.shape[..t.dims].iter().product();
                assert_eq!(n, t.range.len(), "{}", t.name);
            }
        }
    }

    /// The LeNets' names are the `state_dict`'s of their structs.
    #[test]
    fn lenet_names_are_the_state_dict() {
        for k in ModelKind::ALL {
            let plan = Plan::new(Arch::LeNet(k)).unwrap();
            let names: Vec<String> = plan.tensors().map(|t| t.name.to_string()).collect();
            assert_eq!(names, PARAM_NAMES, "{k:?}");
        }
    }

    /// Only layers after the first with parameters need input gradients:
    /// not the first convolution, nor an upsampling of the input.
    #[test]
    fn input_gradients_start_after_the_first_parameters() {
        let plan = Plan::new(Arch::Vgg(VggConfig::NOTES)).unwrap();
        let flags: Vec<bool> = plan.layers().iter().map(|l| l.needs_input_grad).collect();
        assert_eq!(flags[..3], [false, false, true]);
        assert!(flags[2..].iter().all(|&g| g));
        assert_eq!(plan.first_param_layer(), Some(1));
    }

    /// What does not fit is refused, as by `Arch::check`.
    #[test]
    fn networks_that_do_not_fit_are_refused() {
        let deep = Arch::Vgg(VggConfig {
            blocks: 5,
            size: 28,
            ..VggConfig::NOTES
        });
        assert!(Plan::new(deep).is_err());
        let zero = Arch::Vgg(VggConfig {
            blocks: 0,
            ..VggConfig::NOTES
        });
        assert!(Plan::new(zero).is_err());
        let tiny = Arch::AlexNet(AlexNetConfig {
            size: 40,
            ..AlexNetConfig::NOTES
        });
        assert!(Plan::new(tiny).is_err());
    }
}
