//! What the LeNets' parameter structs ([`LeNet5Params`](super::LeNet5Params),
//! [`MaxNetParams`](super::MaxNetParams)) share: the same ten fields,
//! `conv1_w` to `fc3_b`, visited in [`PARAM_NAMES`](super::PARAM_NAMES)
//! order, and PyTorch's default initialisation of them.

use crate::init::{Rng, bias_uniform, kaiming_uniform};
use crate::optim::Parameters;

/// `impl Parameters` for a LeNet parameter struct (fields `conv1_w`,
/// `conv1_b`, `conv2_w`, `conv2_b`, `fc1_w` ... `fc3_b`): the ten tensors
/// flattened, in `state_dict` order. Written as the impl's head:
/// `lenet_parameters!(impl for Params)`, or
/// `lenet_parameters!(impl<const N: usize> for Params<N>)`.
macro_rules! lenet_parameters {
    (impl $(<$(const $g:ident: usize),*>)? for $ty:ty) => {
        impl$(<$(const $g: usize),*>)? $crate::optim::Parameters for $ty {
            fn tensors(&self) -> impl Iterator<Item = &[f32]> {
                [
                    $crate::model::flat4(&self.conv1_w),
                    &self.conv1_b[..],
                    $crate::model::flat4(&self.conv2_w),
                    &self.conv2_b[..],
                    self.fc1_w.as_flattened(),
                    &self.fc1_b[..],
                    self.fc2_w.as_flattened(),
                    &self.fc2_b[..],
                    self.fc3_w.as_flattened(),
                    &self.fc3_b[..],
                ]
                .into_iter()
            }

            fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
                [
                    $crate::model::flat4_mut(&mut self.conv1_w),
                    &mut self.conv1_b[..],
                    $crate::model::flat4_mut(&mut self.conv2_w),
                    &mut self.conv2_b[..],
                    self.fc1_w.as_flattened_mut(),
                    &mut self.fc1_b[..],
                    self.fc2_w.as_flattened_mut(),
                    &mut self.fc2_b[..],
                    self.fc3_w.as_flattened_mut(),
                    &mut self.fc3_b[..],
                ]
                .into_iter()
            }
        }
    };
}
pub(super) use lenet_parameters;

/// PyTorch's default initialisation of a LeNet's parameters, layer by
/// layer in `state_dict` order: the weight from
/// [`kaiming_uniform`], then the bias from [`bias_uniform`], both with the
/// layer's `fan_in` (`CI * KH * KW` for a convolution, `I` for a linear
/// layer: the weight's size over its output count, the bias's length).
pub(super) fn init_lenet<P: Parameters>(p: &mut P, rng: &mut Rng) {
    let mut tensors = p.tensors_mut();
    while let (Some(w), Some(b)) = (tensors.next(), tensors.next()) {
        let fan_in = w.len() / b.len();
        kaiming_uniform(w, fan_in, rng);
        bias_uniform(b, fan_in, rng);
    }
}
