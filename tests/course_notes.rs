//! The course notes' two-sample model, built by hand from lenet-core ops:
//!
//! ```text
//! x (1, 4, 4) -> Conv2d(1, 1, 3) -> (1, 2, 2) -> MaxPool2d(2) -> (1, 1, 1)
//!   -> ReLU -> Linear(1, 1) -> Sigmoid -> BCE against labels 0 and 1
//! ```
//!
//! trained with Adam (lr 1e-2). The inputs are `arange(16).reshape(4, 4) / 8`
//! and its transpose. The initial weights and PyTorch's loss before each
//! step come from `tests/golden/ops.bin` (`course/*`, written by
//! `tests/golden/gen_golden.py`). (The course's conv and pooling examples
//! live in the unit tests of `core/src/conv.rs` and `core/src/pool.rs`.)

mod common;

use common::{Golden, GoldenExt, RecordExt, assert_close, assert_record};
use lenet_core::activation::{relu, relu_backward, sigmoid, sigmoid_backward};
use lenet_core::conv::{conv2d, conv2d_backward};
use lenet_core::linear::{linear, linear_backward};
use lenet_core::loss::{binary_cross_entropy, binary_cross_entropy_backward};
use lenet_core::optim::{Adam, AdamState};
use lenet_core::pool::{max_pool2d, max_pool2d_backward};
use lenet_core::{Padding, Stride, Window};

/// All parameters in `state_dict` order, flattened: conv weight (9), conv
/// bias, linear weight, linear bias. Adam is element-wise, so one flat
/// array updates exactly as PyTorch's four tensors do.
type Params = [f32; 12];
const CONV_W: usize = 0;
const CONV_B: usize = 9;
const FC_W: usize = 10;
const FC_B: usize = 11;

type Input = [[[f32; 4]; 4]; 1]; // (C, H, W)

/// Everything the backward pass needs from one sample's forward pass.
struct Acts {
    x: Input,
    conv: [[[f32; 2]; 2]; 1], // (C, OH, OW)
    argmax: [[[u16; 1]; 1]; 1],
    pool: [f32; 1],
    relu: [f32; 1],
    z: [f32; 1],
    p: [f32; 1],
}

fn conv_w(p: &Params) -> [[[[f32; 3]; 3]; 1]; 1] {
    let mut w = [[[[0.0f32; 3]; 3]; 1]; 1];
    w.as_flattened_mut()
        .as_flattened_mut()
        .as_flattened_mut()
        .copy_from_slice(&p[CONV_W..CONV_B]);
    w
}

fn forward(p: &Params, x: &Input) -> Acts {
    let mut a = Acts {
        x: *x,
        conv: [[[0.0; 2]; 2]; 1],
        argmax: [[[0; 1]; 1]; 1],
        pool: [0.0],
        relu: [0.0],
        z: [0.0],
        p: [0.0],
    };
    let w = conv_w(p);
    conv2d(
        &mut a.conv,
        x,
        &w,
        Some(&[p[CONV_B]]),
        Padding::<0, 0>,
        Stride::<1, 1>,
    );
    let mut pooled = [[[0.0f32; 1]; 1]; 1];
    max_pool2d(
        &mut pooled,
        &mut a.argmax,
        &a.conv,
        Window::<2, 2>,
        Padding::<0, 0>,
        Stride::<2, 2>,
    );
    a.pool = [pooled[0][0][0]];
    relu(&mut a.relu, &a.pool);
    linear(&mut a.z, &a.relu, &[[p[FC_W]]], Some(&[p[FC_B]]));
    sigmoid(&mut a.p, &a.z);
    a
}

/// Adds one sample's gradient to `g`, given `dp = dL/dp` for that sample.
fn backward(g: &mut Params, p: &Params, a: &Acts, dp: f32) {
    let mut dz = [0.0f32];
    sigmoid_backward(&mut dz, &[dp], &a.p);
    let mut drelu = [0.0f32];
    let mut dfc_w = [[g[FC_W]]];
    let mut dfc_b = [g[FC_B]];
    linear_backward(
        Some(&mut drelu),
        &mut dfc_w,
        Some(&mut dfc_b),
        &dz,
        &a.relu,
        &[[p[FC_W]]],
    );
    g[FC_W] = dfc_w[0][0];
    g[FC_B] = dfc_b[0];
    let mut dpool = [0.0f32];
    relu_backward(&mut dpool, &drelu, &a.relu);
    let mut dconv = [[[0.0f32; 2]; 2]; 1];
    max_pool2d_backward(&mut dconv, &[[[dpool[0]]]], &a.argmax);
    let mut dw = conv_w(g);
    let mut db = [g[CONV_B]];
    conv2d_backward(
        None,
        &mut dw,
        Some(&mut db),
        &dconv,
        &a.x,
        &conv_w(p),
        Padding::<0, 0>,
        Stride::<1, 1>,
    );
    g[CONV_W..CONV_B].copy_from_slice(dw.as_flattened().as_flattened().as_flattened());
    g[CONV_B] = db[0];
}

/// The two inputs: `arange(16).reshape(4, 4) / 8` and its transpose.
fn inputs() -> [Input; 2] {
    let a: [[f32; 4]; 4] =
        core::array::from_fn(|r| core::array::from_fn(|c| (4 * r + c) as f32 / 8.0));
    let t: [[f32; 4]; 4] = core::array::from_fn(|r| core::array::from_fn(|c| a[c][r]));
    [[a], [t]]
}
const LABELS: [f32; 2] = [0.0, 1.0];

/// Mean BCE of both samples, and its gradient added to `g`.
fn loss_and_grad(g: &mut Params, p: &Params, xs: &[Input; 2]) -> f32 {
    let acts = xs.each_ref().map(|x| forward(p, x));
    let probs = [acts[0].p[0], acts[1].p[0]];
    let loss = binary_cross_entropy(&probs, &LABELS);
    let mut dp = [0.0f32; 2]; // includes the 1/2 of the mean
    binary_cross_entropy_backward(&mut dp, &probs, &LABELS, 1.0);
    for (a, &d) in acts.iter().zip(&dp) {
        backward(g, p, a, d);
    }
    loss
}

fn initial_params(g: &Golden) -> Params {
    let mut p = [0.0f32; 12];
    p[CONV_W..CONV_B].copy_from_slice(g.get("course/init/0.weight").shaped(&[1, 1, 3, 3]));
    p[CONV_B] = g.get("course/init/0.bias").scalar();
    p[FC_W] = g.get("course/init/4.weight").scalar();
    p[FC_B] = g.get("course/init/4.bias").scalar();
    p
}

/// Most steps the model may take to bring the loss under 0.01 (PyTorch
/// gets there before step 693 from these initial weights).
const MAX_STEPS: usize = 1000;

#[test]
fn two_sample_model_trains_like_pytorch() {
    let golden = Golden::load("ops.bin");
    let xs = inputs();
    let flat: Vec<f32> = xs.iter().flatten().flatten().flatten().copied().collect();
    assert_record(&flat, golden.get("course/x"), 0.0, 0.0);
    assert_record(&LABELS, golden.get("course/y"), 0.0, 0.0);

    let opt = Adam::new(1e-2);
    let mut params = initial_params(&golden);
    let mut state = AdamState::new([0.0f32; 12]);
    let mut losses = Vec::new();
    let mut reached = None;
    for step in 0..MAX_STEPS {
        let mut grads = [0.0f32; 12];
        let loss = loss_and_grad(&mut grads, &params, &xs);
        losses.push(loss);
        if loss < 0.01 && reached.is_none() {
            reached = Some(step);
        }
        opt.step(&mut params, &grads, &mut state);
    }
    let want = golden.get("course/losses");
    let n = want.data.len();
    let worst = assert_close(
        &format!("course/losses [{}]", want.source),
        &losses[..n],
        &want.data,
        1e-6,
        1e-4,
    );
    println!("course model: worst loss error {worst:?}, loss < 0.01 after {reached:?} steps");
    let reached = reached.unwrap_or_else(|| {
        panic!(
            "loss still {} after {MAX_STEPS} Adam steps",
            losses[MAX_STEPS - 1]
        )
    });
    println!("loss < 0.01 before step {reached} (PyTorch: 693)");
    // Both samples end up on the right side of 0.5.
    let p: Vec<f32> = xs.iter().map(|x| forward(&params, x).p[0]).collect();
    assert!(p[0] < 0.05 && p[1] > 0.95, "final probabilities {p:?}");
}

#[test]
fn hand_built_gradient_matches_finite_differences() {
    // The hand-wired backward above, checked independently of PyTorch.
    let golden = Golden::load("ops.bin");
    let xs = inputs();
    let p = initial_params(&golden);
    let mut g = [0.0f32; 12];
    loss_and_grad(&mut g, &p, &xs);
    let h = 1e-3f32;
    let mut numeric = [0.0f32; 12];
    for i in 0..12 {
        let (mut plus, mut minus) = (p, p);
        plus[i] += h;
        minus[i] -= h;
        let lp = loss_and_grad(&mut [0.0; 12], &plus, &xs);
        let lm = loss_and_grad(&mut [0.0; 12], &minus, &xs);
        numeric[i] = (lp - lm) / (2.0 * h);
    }
    assert_close(
        "course gradient vs central differences",
        &g,
        &numeric,
        2e-3,
        1e-2,
    );
}
