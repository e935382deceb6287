//! LeNet-5 with max pooling and no padding (the d2l variant), generic over
//! the two convolutions' channel counts `N1` and `N2` (`FL = 16 * N2`
//! flattened features): [`LeNet5Max`] has the classic 6 and 16,
//! [`LeNet5Wide`] 16 and 32.
//!
//! ```text
//! x      (1, 28, 28)
//! conv1  (N1, 24, 24)  Conv2d(1, N1, 5), act                 -> c1
//! pool1  (N1, 12, 12)  MaxPool2d(2, 2)                       -> p1, arg1
//! conv2  (N2, 8, 8)    Conv2d(N1, N2, 5), act                -> c2
//! pool2  (N2, 4, 4)    MaxPool2d(2, 2), Flatten to FL        -> p2, arg2
//! fc1    (120)         Linear(FL, 120), act                  -> f1
//! fc2    (84)          Linear(120, 84), act                  -> f2
//! fc3    (10)          Linear(84, 10)                        -> logits
//! ```

use super::lenet_params::{init_lenet, lenet_parameters};
use super::{CLASSES, Image, Model, ModelKind, flat3, flat3_mut};
use crate::activation::Activation;
use crate::conv::{conv2d, conv2d_backward};
use crate::init::Rng;
use crate::linear::{linear, linear_backward};
use crate::pool::{max_pool2d, max_pool2d_backward};
use crate::shape::{Padding, Stride, Window};

/// LeNet-5 with max pooling, no padding and `N1`/`N2` convolution
/// channels (`FL = 16 * N2`), with a choice of activation. Use the aliases
/// [`LeNet5Max`] and [`LeNet5Wide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxNet<const N1: usize, const N2: usize, const FL: usize> {
    /// Activation after both convolutions and the first two linear layers.
    pub act: Activation,
}

/// The d2l LeNet-5: 6 and 16 channels, 256 flattened features.
pub type LeNet5Max = MaxNet<6, 16, 256>;
/// Parameters of [`LeNet5Max`] (44 426 scalars, 177 704 bytes).
pub type LeNet5MaxParams = MaxNetParams<6, 16, 256>;
/// Activations of [`LeNet5Max`] (28 632 bytes).
pub type LeNet5MaxActivations = MaxNetActivations<6, 16>;

/// The d2l LeNet-5 widened to 16 and 32 channels, 512 flattened features.
pub type LeNet5Wide = MaxNet<16, 32, 512>;
/// Parameters of [`LeNet5Wide`] (85 822 scalars, 343 288 bytes).
pub type LeNet5WideParams = MaxNetParams<16, 32, 512>;
/// Activations of [`LeNet5Wide`] (65 944 bytes).
pub type LeNet5WideActivations = MaxNetActivations<16, 32>;

/// Parameters of a [`MaxNet`], in PyTorch layout; also used for its
/// gradients and optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxNetParams<const N1: usize, const N2: usize, const FL: usize> {
    /// `0.weight` (N1, 1, 5, 5)
    pub conv1_w: [[[[f32; 5]; 5]; 1]; N1],
    /// `0.bias` (N1)
    pub conv1_b: [f32; N1],
    /// `3.weight` (N2, N1, 5, 5)
    pub conv2_w: [[[[f32; 5]; 5]; N1]; N2],
    /// `3.bias` (N2)
    pub conv2_b: [f32; N2],
    /// `7.weight` (120, FL)
    pub fc1_w: [[f32; FL]; 120],
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

impl<const N1: usize, const N2: usize, const FL: usize> MaxNetParams<N1, N2, FL> {
    /// Number of scalars.
    pub const NUM_PARAMS: usize = core::mem::size_of::<Self>() / 4;

    /// Shapes of the tensors, in [`PARAM_NAMES`](super::PARAM_NAMES) order.
    pub const SHAPES: [&'static [usize]; 10] = [
        &[N1, 1, 5, 5],
        &[N1],
        &[N2, N1, 5, 5],
        &[N2],
        &[120, FL],
        &[120],
        &[84, 120],
        &[84],
        &[10, 84],
        &[10],
    ];

    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        const { assert!(FL == 16 * N2) };
        MaxNetParams {
            conv1_w: [[[[0.0; 5]; 5]; 1]; N1],
            conv1_b: [0.0; N1],
            conv2_w: [[[[0.0; 5]; 5]; N1]; N2],
            conv2_b: [0.0; N2],
            fc1_w: [[0.0; FL]; 120],
            fc1_b: [0.0; 120],
            fc2_w: [[0.0; 120]; 84],
            fc2_b: [0.0; 84],
            fc3_w: [[0.0; 84]; 10],
            fc3_b: [0.0; 10],
        }
    }
}

lenet_parameters!(impl<const N1: usize, const N2: usize, const FL: usize> for MaxNetParams<N1, N2, FL>);

/// What a [`MaxNet`]'s forward keeps for backward. Layer outputs are stored
/// after the activation; the max pools keep their argmax.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxNetActivations<const N1: usize, const N2: usize> {
    /// The input image (1, 28, 28), for the first convolution's weight gradient.
    pub input: Image,
    /// `act(conv1(x))` (N1, 24, 24)
    pub c1: [[[f32; 24]; 24]; N1],
    /// `maxpool(c1)` (N1, 12, 12)
    pub p1: [[[f32; 12]; 12]; N1],
    /// argmax of pool1, flat index `row * 24 + col` into `c1` (N1, 12, 12)
    pub arg1: [[[u16; 12]; 12]; N1],
    /// `act(conv2(p1))` (N2, 8, 8)
    pub c2: [[[f32; 8]; 8]; N2],
    /// `maxpool(c2)` (N2, 4, 4), flattened to FL for fc1
    pub p2: [[[f32; 4]; 4]; N2],
    /// argmax of pool2, flat index `row * 8 + col` into `c2` (N2, 4, 4)
    pub arg2: [[[u16; 4]; 4]; N2],
    /// `act(fc1(p2))` (120)
    pub f1: [f32; 120],
    /// `act(fc2(f1))` (84)
    pub f2: [f32; 84],
    /// `fc3(f2)` (10)
    pub logits: [f32; CLASSES],
}

impl<const N1: usize, const N2: usize> MaxNetActivations<N1, N2> {
    /// All zeros (`const`, so it can initialise a `static`).
    pub const fn zeroed() -> Self {
        MaxNetActivations {
            input: [[[0.0; 28]; 28]; 1],
            c1: [[[0.0; 24]; 24]; N1],
            p1: [[[0.0; 12]; 12]; N1],
            arg1: [[[0; 12]; 12]; N1],
            c2: [[[0.0; 8]; 8]; N2],
            p2: [[[0.0; 4]; 4]; N2],
            arg2: [[[0; 4]; 4]; N2],
            f1: [0.0; 120],
            f2: [0.0; 84],
            logits: [0.0; CLASSES],
        }
    }
}

/// Gradients with respect to the activations, used inside
/// [`MaxNet::backward`] (on the stack).
struct Scratch<const N1: usize, const N2: usize> {
    c1: [[[f32; 24]; 24]; N1], // (N1, 24, 24)
    p1: [[[f32; 12]; 12]; N1], // (N1, 12, 12)
    c2: [[[f32; 8]; 8]; N2],   // (N2, 8, 8)
    p2: [[[f32; 4]; 4]; N2],   // (N2, 4, 4)
    f1: [f32; 120],            // (120)
    f2: [f32; 84],             // (84)
}

impl<const N1: usize, const N2: usize> Scratch<N1, N2> {
    const fn zeroed() -> Self {
        Scratch {
            c1: [[[0.0; 24]; 24]; N1],
            p1: [[[0.0; 12]; 12]; N1],
            c2: [[[0.0; 8]; 8]; N2],
            p2: [[[0.0; 4]; 4]; N2],
            f1: [0.0; 120],
            f2: [0.0; 84],
        }
    }
}

impl<const N1: usize, const N2: usize, const FL: usize> MaxNet<N1, N2, FL> {
    /// Bytes of stack scratch [`backward`](Model::backward) uses for the
    /// gradients with respect to the activations (23 216 for [`LeNet5Max`],
    /// 57 136 for [`LeNet5Wide`]).
    pub const BACKWARD_SCRATCH_BYTES: usize = core::mem::size_of::<Scratch<N1, N2>>();
}

const POOL: Window<2, 2> = Window;
const NO_PAD: Padding<0, 0> = Padding;
const ONE: Stride<1, 1> = Stride;
const TWO: Stride<2, 2> = Stride;

impl<const N1: usize, const N2: usize, const FL: usize> Model for MaxNet<N1, N2, FL> {
    type Params = MaxNetParams<N1, N2, FL>;
    type Activations = MaxNetActivations<N1, N2>;
    const KIND: ModelKind = ModelKind::max_pool(N1, N2);

    fn forward<'a>(
        &self,
        a: &'a mut MaxNetActivations<N1, N2>,
        p: &MaxNetParams<N1, N2, FL>,
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
            flat3::<FL, _, _, _>(&a.p2),
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
        g: &mut MaxNetParams<N1, N2, FL>,
        a: &MaxNetActivations<N1, N2>,
        p: &MaxNetParams<N1, N2, FL>,
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
        let dp2 = flat3_mut::<FL, _, _, _>(&mut d.p2);
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

    fn init(&self, p: &mut MaxNetParams<N1, N2, FL>, rng: &mut Rng) {
        init_lenet(p, rng);
    }
}
