//! Criterion benchmarks of lenet-core's reference kernels: corr2d at the
//! LeNet shapes and a larger one, both pools, and LeNet forward and one
//! training step per sample for both models. Throughput is printed as
//! elements (MACs for convolutions, input elements for pools, images for the
//! models) per second.
//!
//! Run: `cargo bench --bench core_ops`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lenet_core::activation::Activation;
use lenet_core::conv::{conv2d, conv2d_backward};
use lenet_core::init::Rng;
use lenet_core::model::{
    Image, LeNet5, LeNet5Activations, LeNet5Max, LeNet5MaxActivations, LeNet5MaxParams,
    LeNet5Params, Model, train_step_sample,
};
use lenet_core::optim::{Adam, AdamState};
use lenet_core::pool::{avg_pool2d, max_pool2d};
use lenet_core::{Padding, Stride, Window};

/// Deterministic pseudo-random fill in [-1, 1).
fn fill(xs: &mut [f32], mut seed: u32) {
    for x in xs {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *x = (seed >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
    }
}

fn bench_corr2d(c: &mut Criterion) {
    let mut g = c.benchmark_group("corr2d");

    // conv1 of classic LeNet: 1 -> 6, 28x28, 5x5, padding 2.
    let mut x = Box::new([[[0f32; 28]; 28]; 1]);
    let mut w = Box::new([[[[0f32; 5]; 5]; 1]; 6]);
    fill(x.as_flattened_mut().as_flattened_mut(), 1);
    fill(
        w.as_flattened_mut().as_flattened_mut().as_flattened_mut(),
        2,
    );
    let b = [0.1f32; 6];
    let mut y = Box::new([[[0f32; 28]; 28]; 6]);
    g.throughput(Throughput::Elements(6 * 28 * 28 * 25));
    g.bench_function("lenet_conv1_1x28x28_k5_p2_to6", |bn| {
        bn.iter(|| {
            conv2d(
                &mut y,
                black_box(&*x),
                &w,
                Some(&b),
                Padding::<2, 2>,
                Stride::<1, 1>,
            )
        })
    });
    let dy = y.clone();
    let mut dw = Box::new([[[[0f32; 5]; 5]; 1]; 6]);
    let mut db = [0f32; 6];
    g.bench_function("lenet_conv1_backward_weights", |bn| {
        bn.iter(|| {
            conv2d_backward(
                None,
                &mut dw,
                Some(&mut db),
                black_box(&*dy),
                &x,
                &w,
                Padding::<2, 2>,
                Stride::<1, 1>,
            )
        })
    });

    // conv2 of classic LeNet: 6 -> 16, 14x14, 5x5.
    let mut x2 = Box::new([[[0f32; 14]; 14]; 6]);
    let mut w2 = Box::new([[[[0f32; 5]; 5]; 6]; 16]);
    fill(x2.as_flattened_mut().as_flattened_mut(), 3);
    fill(
        w2.as_flattened_mut().as_flattened_mut().as_flattened_mut(),
        4,
    );
    let b2 = [0.1f32; 16];
    let mut y2 = Box::new([[[0f32; 10]; 10]; 16]);
    g.throughput(Throughput::Elements(16 * 10 * 10 * 6 * 25));
    g.bench_function("lenet_conv2_6x14x14_k5_to16", |bn| {
        bn.iter(|| {
            conv2d(
                &mut y2,
                black_box(&*x2),
                &w2,
                Some(&b2),
                Padding::<0, 0>,
                Stride::<1, 1>,
            )
        })
    });

    // A larger 3x3 layer with stride 2: 16 -> 32, 32x32.
    let mut x3 = Box::new([[[0f32; 32]; 32]; 16]);
    let mut w3 = Box::new([[[[0f32; 3]; 3]; 16]; 32]);
    fill(x3.as_flattened_mut().as_flattened_mut(), 5);
    fill(
        w3.as_flattened_mut().as_flattened_mut().as_flattened_mut(),
        6,
    );
    let mut y3 = Box::new([[[0f32; 16]; 16]; 32]);
    g.throughput(Throughput::Elements(32 * 16 * 16 * 16 * 9));
    g.bench_function("16x32x32_k3_p1_s2_to32", |bn| {
        bn.iter(|| {
            conv2d(
                &mut y3,
                black_box(&*x3),
                &w3,
                None,
                Padding::<1, 1>,
                Stride::<2, 2>,
            )
        })
    });
    g.finish();
}

fn bench_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let mut x = Box::new([[[0f32; 28]; 28]; 6]);
    fill(x.as_flattened_mut().as_flattened_mut(), 7);
    let mut y = Box::new([[[0f32; 14]; 14]; 6]);
    let mut idx = Box::new([[[0u16; 14]; 14]; 6]);
    g.throughput(Throughput::Elements(6 * 28 * 28));
    g.bench_function("avg_6x28x28_w2", |bn| {
        bn.iter(|| {
            avg_pool2d(
                &mut y,
                black_box(&*x),
                Window::<2, 2>,
                Padding::<0, 0>,
                Stride::<2, 2>,
            )
        })
    });
    g.bench_function("max_6x28x28_w2", |bn| {
        bn.iter(|| {
            max_pool2d(
                &mut y,
                &mut idx,
                black_box(&*x),
                Window::<2, 2>,
                Padding::<0, 0>,
                Stride::<2, 2>,
            )
        })
    });
    let mut y3 = Box::new([[[0f32; 14]; 14]; 6]);
    let mut idx3 = Box::new([[[0u16; 14]; 14]; 6]);
    g.bench_function("max_6x28x28_w3_p1_s2", |bn| {
        bn.iter(|| {
            max_pool2d(
                &mut y3,
                &mut idx3,
                black_box(&*x),
                Window::<3, 3>,
                Padding::<1, 1>,
                Stride::<2, 2>,
            )
        })
    });
    g.finish();
}

/// Forward of one image and one Adam training step on one sample, for a
/// model `M` whose structs are heap-allocated here (on the MCU they are
/// `static`s).
fn bench_model<M: Model>(
    c: &mut Criterion,
    name: &str,
    model: M,
    mut params: Box<M::Params>,
    mut acts: Box<M::Activations>,
) {
    let mut g = c.benchmark_group(name);
    let mut rng = Rng::new(42);
    model.init(&mut params, &mut rng);
    let mut x: Box<Image> = Box::new([[[0.0; 28]; 28]; 1]);
    fill(x.as_flattened_mut().as_flattened_mut(), 9);
    for v in x.as_flattened_mut().as_flattened_mut() {
        *v = v.abs();
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward", |bn| {
        bn.iter(|| *model.forward(&mut acts, &params, black_box(&x)))
    });
    let mut grads = params.clone();
    let opt = Adam::new(1e-3);
    let mut state = AdamState::new((*params).clone());
    g.bench_function("train_step_adam", |bn| {
        bn.iter(|| {
            train_step_sample(
                &model,
                &mut params,
                &mut grads,
                &mut acts,
                &opt,
                &mut state,
                black_box(&x),
                3,
            )
        })
    });
    g.finish();
}

fn bench_models(c: &mut Criterion) {
    bench_model(
        c,
        "lenet5_sigmoid",
        LeNet5 {
            act: Activation::Sigmoid,
        },
        Box::new(LeNet5Params::zeroed()),
        Box::new(LeNet5Activations::zeroed()),
    );
    bench_model(
        c,
        "lenet5_max_sigmoid",
        LeNet5Max {
            act: Activation::Sigmoid,
        },
        Box::new(LeNet5MaxParams::zeroed()),
        Box::new(LeNet5MaxActivations::zeroed()),
    );
}

criterion_group!(benches, bench_corr2d, bench_pool, bench_models);
criterion_main!(benches);
