//! The classic LeNet-5 (PyTorch/d2l form): padding 2 on the first
//! convolution, average pooling, 400 flattened features.
//!
//! ```text
//! x      (1, 28, 28)
//! conv1  (6, 28, 28)   Conv2d(1, 6, 5, padding=2), act      -> c1
//! pool1  (6, 14, 14)   AvgPool2d(2, 2)                       -> p1
//! conv2  (16, 10, 10)  Conv2d(6, 16, 5), act                 -> c2
//! pool2  (16, 5, 5)    AvgPool2d(2, 2), Flatten to 400       -> p2
//! fc1    (120)         Linear(400, 120), act                 -> f1
//! fc2    (84)          Linear(120, 84), act                  -> f2
//! fc3    (10)          Linear(84, 10)                        -> logits
//! ```

use super::lenet_params::{init_lenet, lenet_parameters};
use super::{CLASSES, Image, Model, ModelKind, flat3, flat3_mut};
use crate::activation::Activation;
use crate::conv::{conv2d, conv2d_backward};
use crate::init::Rng;
use crate::linear::{linear, linear_backward};
use crate::pool::{avg_pool2d, avg_pool2d_backward};
use crate::shape::{Padding, Stride, Window};

/// The classic LeNet-5 with a choice of activation ([`Activation::Sigmoid`]
/// in the original).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeNet5 {
    /// Activation after both convolutions and the first two linear layers.
    pub act: Activation,
}

/// Parameters of [`LeNet5`] (61 706 scalars, 246 824 bytes), in PyTorch
/// layout; also used for its gradients and optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct LeNet5Params {
    /// `0.weight` (6, 1, 5, 5)
    pub conv1_w: [[[[f32; 5]; 5]; 1]; 6],
    /// `0.bias` (6)
    pub conv1_b: [f32; 6],
    /// `3.weight` (16, 6, 5, 5)
    pub conv2_w: [[[[f32; 5]; 5]; 6]; 16],
    /// `3.bias` (16)
    pub conv2_b: [f32; 16],
    /// `7.weight` (120, 400)
    pub fc1_w: [[f32; 400]; 120],
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

impl LeNet5Params {
    /// Number of scalars.
    pub const NUM_PARAMS: usize = core::mem::size_of::<LeNet5Params>() / 4;

    /// Shapes of the tensors, in [`PARAM_NAMES`](super::PARAM_NAMES) order.
    pub const SHAPES: [&'static [usize]; 10] = [
        &[6, 1, 5, 5],
        &[6],
        &[16, 6, 5, 5],
        &[16],
        &[120, 400],
        &[120],
        &[84, 120],
        &[84],
        &[10, 84],
        &[10],
    ];

    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        LeNet5Params {
            conv1_w: [[[[0.0; 5]; 5]; 1]; 6],
            conv1_b: [0.0; 6],
            conv2_w: [[[[0.0; 5]; 5]; 6]; 16],
            conv2_b: [0.0; 16],
            fc1_w: [[0.0; 400]; 120],
            fc1_b: [0.0; 120],
            fc2_w: [[0.0; 120]; 84],
            fc2_b: [0.0; 84],
            fc3_w: [[0.0; 84]; 10],
            fc3_b: [0.0; 10],
        }
    }
}

lenet_parameters!(impl for LeNet5Params);

/// What [`LeNet5`]'s forward keeps for backward (35 512 bytes). Layer
/// outputs are stored after the activation.
#[derive(Clone, Debug, PartialEq)]
pub struct LeNet5Activations {
    /// The input image (1, 28, 28), for the first convolution's weight gradient.
    pub input: Image,
    /// `act(conv1(x))` (6, 28, 28)
    pub c1: [[[f32; 28]; 28]; 6],
    /// `avgpool(c1)` (6, 14, 14)
    pub p1: [[[f32; 14]; 14]; 6],
    /// `act(conv2(p1))` (16, 10, 10)
    pub c2: [[[f32; 10]; 10]; 16],
    /// `avgpool(c2)` (16, 5, 5), flattened to 400 for fc1
    pub p2: [[[f32; 5]; 5]; 16],
    /// `act(fc1(p2))` (120)
    pub f1: [f32; 120],
    /// `act(fc2(f1))` (84)
    pub f2: [f32; 84],
    /// `fc3(f2)` (10)
    pub logits: [f32; CLASSES],
}

impl LeNet5Activations {
    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        LeNet5Activations {
            input: [[[0.0; 28]; 28]; 1],
            c1: [[[0.0; 28]; 28]; 6],
            p1: [[[0.0; 14]; 14]; 6],
            c2: [[[0.0; 10]; 10]; 16],
            p2: [[[0.0; 5]; 5]; 16],
            f1: [0.0; 120],
            f2: [0.0; 84],
            logits: [0.0; CLASSES],
        }
    }
}

/// Gradients with respect to the activations, used inside
/// [`LeNet5::backward`] (on the stack).
struct Scratch {
    c1: [[[f32; 28]; 28]; 6],  // (6, 28, 28)
    p1: [[[f32; 14]; 14]; 6],  // (6, 14, 14)
    c2: [[[f32; 10]; 10]; 16], // (16, 10, 10)
    p2: [[[f32; 5]; 5]; 16],   // (16, 5, 5)
    f1: [f32; 120],            // (120)
    f2: [f32; 84],             // (84)
}

impl Scratch {
    const fn zeroed() -> Self {
        Scratch {
            c1: [[[0.0; 28]; 28]; 6],
            p1: [[[0.0; 14]; 14]; 6],
            c2: [[[0.0; 10]; 10]; 16],
            p2: [[[0.0; 5]; 5]; 16],
            f1: [0.0; 120],
            f2: [0.0; 84],
        }
    }
}

impl LeNet5 {
    /// Bytes of stack scratch [`backward`](Model::backward) uses for the
    /// gradients with respect to the activations (32 336).
    pub const BACKWARD_SCRATCH_BYTES: usize = core::mem::size_of::<Scratch>();
}

const POOL: Window<2, 2> = Window;
const NO_PAD: Padding<0, 0> = Padding;
const ONE: Stride<1, 1> = Stride;
const TWO: Stride<2, 2> = Stride;

impl Model for LeNet5 {
    type Params = LeNet5Params;
    type Activations = LeNet5Activations;
    const KIND: ModelKind = ModelKind::LeNet5;

    fn forward<'a>(
        &self,
        a: &'a mut LeNet5Activations,
        p: &LeNet5Params,
        x: &Image,
    ) -> &'a [f32; CLASSES] {
        a.input = *x;
        conv2d(
            &mut a.c1,
            x,
            &p.conv1_w,
            Some(&p.conv1_b),
            Padding::<2, 2>,
            ONE,
        );
        self.act
            .forward_in_place(a.c1.as_flattened_mut().as_flattened_mut());
        avg_pool2d(&mut a.p1, &a.c1, POOL, NO_PAD, TWO);
        conv2d(&mut a.c2, &a.p1, &p.conv2_w, Some(&p.conv2_b), NO_PAD, ONE);
        self.act
            .forward_in_place(a.c2.as_flattened_mut().as_flattened_mut());
        avg_pool2d(&mut a.p2, &a.c2, POOL, NO_PAD, TWO);
        linear(
            &mut a.f1,
            flat3::<400, _, _, _>(&a.p2),
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
        g: &mut LeNet5Params,
        a: &LeNet5Activations,
        p: &LeNet5Params,
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
        let dp2 = flat3_mut::<400, _, _, _>(&mut d.p2);
        linear_backward(
            Some(dp2),
            &mut g.fc1_w,
            Some(&mut g.fc1_b),
            &d.f1,
            flat3(&a.p2),
            &p.fc1_w,
        );
        avg_pool2d_backward(&mut d.c2, &d.p2, POOL, NO_PAD, TWO);
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
        avg_pool2d_backward(&mut d.c1, &d.p1, POOL, NO_PAD, TWO);
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
            Padding::<2, 2>,
            ONE,
        );
    }

    fn init(&self, p: &mut LeNet5Params, rng: &mut Rng) {
        init_lenet(p, rng);
    }
}
