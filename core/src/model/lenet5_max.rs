//! LeNet-5 with max pooling and no padding (the d2l variant): 256
//! flattened features.
//!
//! ```text
//! x      (1, 28, 28)
//! conv1  (6, 24, 24)   Conv2d(1, 6, 5), act                  -> c1
//! pool1  (6, 12, 12)   MaxPool2d(2, 2)                       -> p1, arg1
//! conv2  (16, 8, 8)    Conv2d(6, 16, 5), act                 -> c2
//! pool2  (16, 4, 4)    MaxPool2d(2, 2), Flatten to 256       -> p2, arg2
//! fc1    (120)         Linear(256, 120), act                 -> f1
//! fc2    (84)          Linear(120, 84), act                  -> f2
//! fc3    (10)          Linear(84, 10)                        -> logits
//! ```

use super::{CLASSES, Image, Model, ModelKind, flat3, flat3_mut, flat4, flat4_mut};
use crate::activation::Activation;
use crate::conv::{conv2d, conv2d_backward};
use crate::init::{Rng, bias_uniform, kaiming_uniform};
use crate::linear::{linear, linear_backward};
use crate::optim::Parameters;
use crate::pool::{max_pool2d, max_pool2d_backward};
use crate::shape::{Padding, Stride, Window};

/// LeNet-5 with max pooling and no padding, with a choice of activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeNet5Max {
    /// Activation after both convolutions and the first two linear layers.
    pub act: Activation,
}

/// Parameters of [`LeNet5Max`] (44 426 scalars, 177 704 bytes), in PyTorch
/// layout; also used for its gradients and optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct LeNet5MaxParams {
    /// `0.weight` (6, 1, 5, 5)
    pub conv1_w: [[[[f32; 5]; 5]; 1]; 6],
    /// `0.bias` (6)
    pub conv1_b: [f32; 6],
    /// `3.weight` (16, 6, 5, 5)
    pub conv2_w: [[[[f32; 5]; 5]; 6]; 16],
    /// `3.bias` (16)
    pub conv2_b: [f32; 16],
    /// `7.weight` (120, 256)
    pub fc1_w: [[f32; 256]; 120],
    /// `7.bias` (120)
    pub fc1_b: [f32; 120],
    /// `9.weight` (84, 120)
    pub fc2_w: [[f32; 120]; 84],
    /// `9.bias` (84)
    pub fc2_b: [f32; 84],
    /// `11.weight` (10, 84)
    pub fc3_w: [[f32; 84]; 10],
    /// `11.bias` (10)
    pub fc3_b: [f32; 10],
}

impl LeNet5MaxParams {
    /// Number of scalars.
    pub const NUM_PARAMS: usize = core::mem::size_of::<LeNet5MaxParams>() / 4;

    /// Shapes of the tensors, in [`PARAM_NAMES`](super::PARAM_NAMES) order.
    pub const SHAPES: [&'static [usize]; 10] = [
        &[6, 1, 5, 5],
        &[6],
        &[16, 6, 5, 5],
        &[16],
        &[120, 256],
        &[120],
        &[84, 120],
        &[84],
        &[10, 84],
        &[10],
    ];

    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        LeNet5MaxParams {
            conv1_w: [[[[0.0; 5]; 5]; 1]; 6],
            conv1_b: [0.0; 6],
            conv2_w: [[[[0.0; 5]; 5]; 6]; 16],
            conv2_b: [0.0; 16],
            fc1_w: [[0.0; 256]; 120],
            fc1_b: [0.0; 120],
            fc2_w: [[0.0; 120]; 84],
            fc2_b: [0.0; 84],
            fc3_w: [[0.0; 84]; 10],
            fc3_b: [0.0; 10],
        }
    }
}

impl Parameters for LeNet5MaxParams {
    fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        [
            flat4(&self.conv1_w),
            &self.conv1_b[..],
            flat4(&self.conv2_w),
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
            flat4_mut(&mut self.conv1_w),
            &mut self.conv1_b[..],
            flat4_mut(&mut self.conv2_w),
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

/// What [`LeNet5Max`]'s forward keeps for backward (28 632 bytes). Layer
/// outputs are stored after the activation; the max pools keep their argmax.
#[derive(Clone, Debug, PartialEq)]
pub struct LeNet5MaxActivations {
    /// The input image (1, 28, 28), for the first convolution's weight gradient.
    pub input: Image,
    /// `act(conv1(x))` (6, 24, 24)
    pub c1: [[[f32; 24]; 24]; 6],
    /// `maxpool(c1)` (6, 12, 12)
    pub p1: [[[f32; 12]; 12]; 6],
    /// argmax of pool1, flat index `row * 24 + col` into `c1` (6, 12, 12)
    pub arg1: [[[u16; 12]; 12]; 6],
    /// `act(conv2(p1))` (16, 8, 8)
    pub c2: [[[f32; 8]; 8]; 16],
    /// `maxpool(c2)` (16, 4, 4), flattened to 256 for fc1
    pub p2: [[[f32; 4]; 4]; 16],
    /// argmax of pool2, flat index `row * 8 + col` into `c2` (16, 4, 4)
    pub arg2: [[[u16; 4]; 4]; 16],
    /// `act(fc1(p2))` (120)
    pub f1: [f32; 120],
    /// `act(fc2(f1))` (84)
    pub f2: [f32; 84],
    /// `fc3(f2)` (10)
    pub logits: [f32; CLASSES],
}

impl LeNet5MaxActivations {
    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        LeNet5MaxActivations {
            input: [[[0.0; 28]; 28]; 1],
            c1: [[[0.0; 24]; 24]; 6],
            p1: [[[0.0; 12]; 12]; 6],
            arg1: [[[0; 12]; 12]; 6],
            c2: [[[0.0; 8]; 8]; 16],
            p2: [[[0.0; 4]; 4]; 16],
            arg2: [[[0; 4]; 4]; 16],
            f1: [0.0; 120],
            f2: [0.0; 84],
            logits: [0.0; CLASSES],
        }
    }
}

/// Gradients with respect to the activations, used inside
/// [`LeNet5Max::backward`] (on the stack).
struct Scratch {
    c1: [[[f32; 24]; 24]; 6], // (6, 24, 24)
    p1: [[[f32; 12]; 12]; 6], // (6, 12, 12)
    c2: [[[f32; 8]; 8]; 16],  // (16, 8, 8)
    p2: [[[f32; 4]; 4]; 16],  // (16, 4, 4)
    f1: [f32; 120],           // (120)
    f2: [f32; 84],            // (84)
}

impl Scratch {
    const fn zeroed() -> Self {
        Scratch {
            c1: [[[0.0; 24]; 24]; 6],
            p1: [[[0.0; 12]; 12]; 6],
            c2: [[[0.0; 8]; 8]; 16],
            p2: [[[0.0; 4]; 4]; 16],
            f1: [0.0; 120],
            f2: [0.0; 84],
        }
    }
}

impl LeNet5Max {
    /// Bytes of stack scratch [`backward`](Model::backward) uses for the
    /// gradients with respect to the activations (23 216).
    pub const BACKWARD_SCRATCH_BYTES: usize = core::mem::size_of::<Scratch>();
}

const POOL: Window<2, 2> = Window;
const NO_PAD: Padding<0, 0> = Padding;
const ONE: Stride<1, 1> = Stride;
const TWO: Stride<2, 2> = Stride;

impl Model for LeNet5Max {
    type Params = LeNet5MaxParams;
    type Activations = LeNet5MaxActivations;
    const KIND: ModelKind = ModelKind::LeNet5Max;

    fn forward<'a>(
        &self,
        a: &'a mut LeNet5MaxActivations,
        p: &LeNet5MaxParams,
        x: &Image,
    ) -> &'a [f32; CLASSES] {
        a.input = *x;
        conv2d(&mut a.c1, x, &p.conv1_w, Some(&p.conv1_b), NO_PAD, ONE);
        self.act
            .forward_in_place(a.c1.as_flattened_mut().as_flattened_mut());
        max_pool2d(&mut a.p1, &mut a.arg1, &a.c1, POOL, NO_PAD, TWO);
        conv2d(&mut a.c2, &a.p1, &p.conv2_w, Some(&p.conv2_b), NO_PAD, ONE);
        self.act
            .forward_in_place(a.c2.as_flattened_mut().as_flattened_mut());
        max_pool2d(&mut a.p2, &mut a.arg2, &a.c2, POOL, NO_PAD, TWO);
        linear(
            &mut a.f1,
            flat3::<256, _, _, _>(&a.p2),
            &p.fc1_w,
            Some(&p.fc1_b),
        );
        self.act.forward_in_place(&mut a.f1);
        linear(&mut a.f2, &a.f1, &p.fc2_w, Some(&p.fc2_b));
        self.act.forward_in_place(&mut a.f2);
        linear(&mut a.logits, &a.f2, &p.fc3_w, Some(&p.fc3_b));
        &a.logits
    }

    fn backward(
        &self,
        g: &mut LeNet5MaxParams,
        a: &LeNet5MaxActivations,
        p: &LeNet5MaxParams,
        dlogits: &[f32; CLASSES],
    ) {
        // d* = dL/d(activation); backward_in_place turns it into dL/d(pre-activation).
        let mut d = Scratch::zeroed();
        linear_backward(
            Some(&mut d.f2),
            &mut g.fc3_w,
            Some(&mut g.fc3_b),
            dlogits,
            &a.f2,
            &p.fc3_w,
        );
        self.act.backward_in_place(&mut d.f2, &a.f2);
        linear_backward(
            Some(&mut d.f1),
            &mut g.fc2_w,
            Some(&mut g.fc2_b),
            &d.f2,
            &a.f1,
            &p.fc2_w,
        );
        self.act.backward_in_place(&mut d.f1, &a.f1);
        let dp2 = flat3_mut::<256, _, _, _>(&mut d.p2);
        linear_backward(
            Some(dp2),
            &mut g.fc1_w,
            Some(&mut g.fc1_b),
            &d.f1,
            flat3(&a.p2),
            &p.fc1_w,
        );
        max_pool2d_backward(&mut d.c2, &d.p2, &a.arg2);
        self.act.backward_in_place(
            d.c2.as_flattened_mut().as_flattened_mut(),
            a.c2.as_flattened().as_flattened(),
        );
        conv2d_backward(
            Some(&mut d.p1),
            &mut g.conv2_w,
            Some(&mut g.conv2_b),
            &d.c2,
            &a.p1,
            &p.conv2_w,
            NO_PAD,
            ONE,
        );
        max_pool2d_backward(&mut d.c1, &d.p1, &a.arg1);
        self.act.backward_in_place(
            d.c1.as_flattened_mut().as_flattened_mut(),
            a.c1.as_flattened().as_flattened(),
        );
        conv2d_backward(
            None,
            &mut g.conv1_w,
            Some(&mut g.conv1_b),
            &d.c1,
            &a.input,
            &p.conv1_w,
            NO_PAD,
            ONE,
        );
    }

    fn init(&self, p: &mut LeNet5MaxParams, rng: &mut Rng) {
        // fan_in: CI * KH * KW for a convolution, I for a linear layer
        kaiming_uniform(flat4_mut(&mut p.conv1_w), 25, rng);
        bias_uniform(&mut p.conv1_b, 25, rng);
        kaiming_uniform(flat4_mut(&mut p.conv2_w), 6 * 25, rng);
        bias_uniform(&mut p.conv2_b, 6 * 25, rng);
        kaiming_uniform(p.fc1_w.as_flattened_mut(), 256, rng);
        bias_uniform(&mut p.fc1_b, 256, rng);
        kaiming_uniform(p.fc2_w.as_flattened_mut(), 120, rng);
        bias_uniform(&mut p.fc2_b, 120, rng);
        kaiming_uniform(p.fc3_w.as_flattened_mut(), 84, rng);
        bias_uniform(&mut p.fc3_b, 84, rng);
    }
}
