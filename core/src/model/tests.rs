//! Tests of the models: exact sizes, gradients against finite differences,
//! and training that actually learns.

use super::*;
use crate::activation::Activation;
use crate::optim::{Adam, AdamState, Sgd, SgdState};
use std::boxed::Box;
use std::vec::Vec;

fn random_image(rng: &mut Rng) -> Image {
    let mut x: Image = [[[0.0; 28]; 28]; 1];
    for v in x.as_flattened_mut().as_flattened_mut() {
        *v = rng.next_f32();
    }
    x
}

/// Exact bytes of every buffer; the RAM table in the crate docs quotes
/// these numbers.
#[test]
fn struct_sizes_are_exact() {
    use core::mem::size_of;
    assert_eq!(size_of::<LeNet5Params>(), 246_824);
    assert_eq!(size_of::<LeNet5Activations>(), 35_512);
    assert_eq!(size_of::<AdamState<LeNet5Params>>(), 493_652);
    assert_eq!(size_of::<SgdState<LeNet5Params>>(), 246_828);
    assert_eq!(LeNet5::BACKWARD_SCRATCH_BYTES, 32_336);
    assert_eq!(size_of::<LeNet5MaxParams>(), 177_704);
    assert_eq!(size_of::<LeNet5MaxActivations>(), 28_632);
    assert_eq!(size_of::<AdamState<LeNet5MaxParams>>(), 355_412);
    assert_eq!(size_of::<SgdState<LeNet5MaxParams>>(), 177_708);
    assert_eq!(LeNet5Max::BACKWARD_SCRATCH_BYTES, 23_216);
    assert_eq!(size_of::<LeNet5WideParams>(), 343_288);
    assert_eq!(size_of::<LeNet5WideActivations>(), 65_944);
    assert_eq!(LeNet5Wide::BACKWARD_SCRATCH_BYTES, 57_136);
}

#[test]
fn parameters_follow_the_state_dict() {
    fn check<P: Parameters>(p: &P, shapes: &[&[usize]; 10], kind: ModelKind) {
        let lens: Vec<usize> = p.tensors().map(<[f32]>::len).collect();
        let want: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        assert_eq!(lens, want);
        assert_eq!(p.num_params(), kind.num_params());
        assert_eq!(shapes[4][1], kind.flat_features());
    }
    check(
        &LeNet5Params::zeroed(),
        &LeNet5Params::SHAPES,
        ModelKind::LeNet5,
    );
    check(
        &LeNet5MaxParams::zeroed(),
        &LeNet5MaxParams::SHAPES,
        ModelKind::LeNet5Max,
    );
    assert_eq!(ModelKind::LeNet5.num_params(), 61_706);
    check(
        &LeNet5WideParams::zeroed(),
        &LeNet5WideParams::SHAPES,
        ModelKind::LeNet5Wide,
    );
    assert_eq!(ModelKind::LeNet5Max.num_params(), 44_426);
    assert_eq!(ModelKind::LeNet5Wide.num_params(), 85_822);
    assert_eq!(LeNet5WideParams::SHAPES[2], &[32, 16, 5, 5]);
    for kind in ModelKind::ALL {
        let (_, n2) = kind.channels();
        let side = if kind.is_max_pool() { 4 } else { 5 };
        assert_eq!(kind.flat_features(), n2 * side * side);
    }
    assert_eq!(PARAM_NAMES.len(), LeNet5Params::SHAPES.len());
    // tensors_mut visits the same tensors as tensors: write 1, 2, ... and read back.
    let mut p = Box::new(LeNet5MaxParams::zeroed());
    for (i, t) in p.tensors_mut().enumerate() {
        t.fill(i as f32 + 1.0);
    }
    assert_eq!(p.conv1_w[5][0][4][4], 1.0);
    assert_eq!(p.conv2_b[15], 4.0);
    assert_eq!(p.fc1_w[119][255], 5.0);
    assert_eq!(p.fc3_b[9], 10.0);
}

#[test]
fn model_kind_names_and_ids() {
    for kind in ModelKind::ALL {
        assert_eq!(ModelKind::from_u8(kind as u8), Some(kind));
        assert_eq!(ModelKind::parse(kind.name()), Some(kind));
        assert_eq!(kind.name().parse::<ModelKind>(), Ok(kind));
        assert_eq!(std::format!("{kind}"), kind.name());
    }
    assert_eq!(ModelKind::LeNet5 as u8, 1);
    assert_eq!(ModelKind::LeNet5Max as u8, 2);
    assert_eq!(ModelKind::LeNet5Wide as u8, 3);
    assert_eq!(ModelKind::from_u8(0), None);
    assert_eq!(ModelKind::parse("lenet6"), None);
    assert_eq!(LeNet5::KIND, ModelKind::LeNet5);
    assert_eq!(LeNet5Max::KIND, ModelKind::LeNet5Max);
    assert_eq!(LeNet5Wide::KIND, ModelKind::LeNet5Wide);
    assert_eq!(ModelKind::LeNet5Wide.channels(), (16, 32));
}

#[test]
fn argmax_picks_first_maximum() {
    assert_eq!(argmax(&[1.0, 5.0, 5.0, -1.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 0.5, 0.7]), 2);
    assert_eq!(argmax(&[-3.0]), 0);
}

/// Compares `backward` with central differences of the cross entropy for
/// the largest-gradient entry and a few random entries of every tensor.
///
/// Max pooling makes the loss only piecewise smooth: a step of `h` can move
/// an argmax (top-2 gaps of 1e-4 occur in a 2x2 window) and bend the
/// difference quotient, so each entry may pass with any of four step sizes
/// (a wrong gradient fails all); the tolerance grows as `1e-6 / h` for the
/// f32 rounding of the loss. With
/// `min_signal`, the largest entry of every tensor must exceed it, so the
/// check compares real gradients rather than float noise (sigmoid networks
/// have vanishing first-layer gradients, about 1e-4 here).
///
/// The parameters are initialised from `seed`; `params` and `acts` are the
/// `zeroed` constructors of the network's buffers.
fn check_gradients<M: Model>(
    model: &M,
    params: fn() -> M::Params,
    acts: fn() -> M::Activations,
    seed: u64,
    min_signal: f32,
) {
    let (mut params, mut acts) = (Box::new(params()), Box::new(acts()));
    model.init(&mut params, &mut Rng::new(seed));
    let (params, acts) = (&mut *params, &mut *acts);
    let mut rng = Rng::new(seed);
    let x = random_image(&mut rng);
    let label = 3u8;
    let mut grads = Box::new(params.clone());
    grads.fill(0.0);
    accumulate_gradients(model, &mut *grads, acts, params, &x, label, 1.0);
    let grad_tensors: Vec<Vec<f32>> = grads.tensors().map(<[f32]>::to_vec).collect();
    let mut loss_at =
        |params: &M::Params| cross_entropy(model.forward(acts, params, &x), label as usize) as f64;
    for (ti, g) in grad_tensors.iter().enumerate() {
        let largest = (0..g.len())
            .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
            .unwrap();
        assert!(
            g[largest].abs() > min_signal,
            "{}: tensor {ti} max |grad| {}",
            M::KIND,
            g[largest]
        );
        let mut picks = std::vec![largest];
        picks.extend((0..3).map(|_| rng.below(g.len() as u32) as usize));
        for j in picks {
            let old = params.tensors().nth(ti).unwrap()[j];
            const STEPS: [f32; 4] = [1e-2, 3e-3, 1e-3, 3e-4];
            let mut numeric = [0.0f64; 4];
            for (num, h) in numeric.iter_mut().zip(STEPS) {
                params.tensors_mut().nth(ti).unwrap()[j] = old + h;
                let lp = loss_at(params);
                params.tensors_mut().nth(ti).unwrap()[j] = old - h;
                let lm = loss_at(params);
                params.tensors_mut().nth(ti).unwrap()[j] = old;
                *num = (lp - lm) / (2.0 * h as f64);
            }
            let ok = |(num, h): (f64, f32)| {
                (g[j] as f64 - num).abs() <= 2e-4 + 1e-6 / h as f64 + 2e-2 * num.abs()
            };
            assert!(
                numeric.into_iter().zip(STEPS).any(ok),
                "{}: tensor {ti} ({}) entry {j}: backward {} vs numeric {numeric:?}",
                M::KIND,
                PARAM_NAMES[ti],
                g[j]
            );
        }
    }
}

#[test]
fn lenet5_gradients_match_finite_differences() {
    for (act, seed, min_signal) in [(Activation::Sigmoid, 1, 1e-4), (Activation::Tanh, 2, 1e-2)] {
        let model = LeNet5 { act };
        let (params, acts) = (LeNet5Params::zeroed, LeNet5Activations::zeroed);
        check_gradients(&model, params, acts, seed, min_signal);
    }
}

#[test]
fn lenet5_max_gradients_match_finite_differences() {
    for (act, seed, min_signal) in [(Activation::Sigmoid, 3, 1e-4), (Activation::Tanh, 4, 1e-2)] {
        let model = LeNet5Max { act };
        let (params, acts) = (LeNet5MaxParams::zeroed, LeNet5MaxActivations::zeroed);
        check_gradients(&model, params, acts, seed, min_signal);
    }
}

#[test]
fn lenet5_wide_gradients_match_finite_differences() {
    let act = Activation::Tanh;
    let model = LeNet5Wide { act };
    let (params, acts) = (LeNet5WideParams::zeroed, LeNet5WideActivations::zeroed);
    check_gradients(&model, params, acts, 5, 1e-2);
}

/// A batch step's gradient is the mean of the per-sample gradients.
#[test]
fn batch_gradient_is_the_mean_of_samples() {
    let model = LeNet5Max {
        act: Activation::Relu,
    };
    let mut rng = Rng::new(11);
    let mut params = Box::new(LeNet5MaxParams::zeroed());
    model.init(&mut params, &mut rng);
    let mut acts = Box::new(LeNet5MaxActivations::zeroed());
    let (x0, x1) = (random_image(&mut rng), random_image(&mut rng));
    let mut g0 = Box::new(LeNet5MaxParams::zeroed());
    let mut g1 = Box::new(LeNet5MaxParams::zeroed());
    let mut both = Box::new(LeNet5MaxParams::zeroed());
    let l0 = accumulate_gradients(&model, &mut g0, &mut acts, &params, &x0, 2, 1.0);
    let l1 = accumulate_gradients(&model, &mut g1, &mut acts, &params, &x1, 7, 1.0);
    accumulate_gradients(&model, &mut both, &mut acts, &params, &x0, 2, 0.5);
    accumulate_gradients(&model, &mut both, &mut acts, &params, &x1, 7, 0.5);
    for ((a, b), m) in g0.tensors().zip(g1.tensors()).zip(both.tensors()) {
        for ((a, b), m) in a.iter().zip(b).zip(m) {
            assert!((0.5 * (a + b) - m).abs() <= 1e-6 + 1e-5 * m.abs());
        }
    }
    // A zero learning rate leaves the parameters alone and returns the mean loss.
    let before = params.clone();
    let opt = Sgd::new(0.0);
    let mut st = SgdState::new(LeNet5MaxParams::zeroed());
    let mut grads = Box::new(LeNet5MaxParams::zeroed());
    let loss = train_step_batch(
        &model,
        &mut params,
        &mut grads,
        &mut acts,
        &opt,
        &mut st,
        &[x0, x1],
        &[2, 7],
    );
    assert!((loss - 0.5 * (l0 + l1)).abs() < 1e-5);
    assert_eq!(params, before);
    assert_eq!(*grads, *both);
}

/// Trains on 8 random images with fixed labels (`params` and `acts` are the
/// `zeroed` constructors of its buffers): the loss must fall from above 2 to
/// below 0.05, far below ln 10 (memorising is all a network can do with noise).
fn overfit<M: Model>(model: M, params: fn() -> M::Params, acts: fn() -> M::Activations) {
    let (mut params, mut acts) = (Box::new(params()), Box::new(acts()));
    let mut rng = Rng::new(5);
    model.init(&mut params, &mut rng);
    let images: Vec<Image> = (0..8).map(|_| random_image(&mut rng)).collect();
    let labels: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    let mut grads = Box::new((*params).clone());
    grads.fill(0.0);
    let opt = Adam::new(5e-3);
    let mut state = Box::new(opt.new_state((*grads).clone()));
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..50 {
        last = train_step_batch(
            &model,
            &mut params,
            &mut grads,
            &mut acts,
            &opt,
            &mut state,
            &images,
            &labels,
        );
        first.get_or_insert(last);
    }
    let correct = images
        .iter()
        .zip(labels)
        .filter(|(x, l)| predict(&model, &mut acts, &params, x) == *l as usize)
        .count();
    assert_eq!(correct, 8, "{}: training set not memorised", M::KIND);
    let first = first.unwrap();
    std::println!("{}: {first} -> {last}", M::KIND);
    assert!(first > 2.0 && last < 0.05, "loss {first} -> {last}");
}

#[test]
fn lenet5_overfits_a_tiny_batch() {
    let model = LeNet5 {
        act: Activation::Relu,
    };
    overfit(model, LeNet5Params::zeroed, LeNet5Activations::zeroed);
}

#[test]
fn lenet5_max_overfits_a_tiny_batch() {
    let model = LeNet5Max {
        act: Activation::Relu,
    };
    overfit(model, LeNet5MaxParams::zeroed, LeNet5MaxActivations::zeroed);
}

/// The whole training state as plain locals (no heap), as on the
/// microcontroller; run on a thread with a stack big enough for them.
#[test]
fn training_step_without_heap() {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| {
            let model = LeNet5 {
                act: Activation::Sigmoid,
            };
            let mut params = LeNet5Params::zeroed();
            let mut grads = LeNet5Params::zeroed();
            let mut acts = LeNet5Activations::zeroed();
            let mut state = AdamState::from_zeros(LeNet5Params::zeroed(), LeNet5Params::zeroed());
            let opt = Adam::new(1e-2);
            let mut rng = Rng::new(9);
            model.init(&mut params, &mut rng);
            let x = random_image(&mut rng);
            let l0 = train_step_sample(
                &model,
                &mut params,
                &mut grads,
                &mut acts,
                &opt,
                &mut state,
                &x,
                4,
            );
            let mut l = l0;
            for _ in 0..10 {
                l = train_step_sample(
                    &model,
                    &mut params,
                    &mut grads,
                    &mut acts,
                    &opt,
                    &mut state,
                    &x,
                    4,
                );
            }
            assert_eq!(state.t, 11);
            assert!(l < 0.5 * l0, "loss {l0} -> {l}");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn checked_steps_refuse_bad_labels_without_touching_the_model() {
    let model = LeNet5 {
        act: Activation::Relu,
    };
    let mut params = Box::new(LeNet5Params::zeroed());
    model.init(&mut params, &mut Rng::new(1));
    let before = params.clone();
    let mut grads = Box::new(LeNet5Params::zeroed());
    let mut acts = Box::new(LeNet5Activations::zeroed());
    let opt = Sgd::new(0.1);
    let mut st = SgdState::new(LeNet5Params::zeroed());
    let x: Image = [[[0.5; 28]; 28]; 1];
    let imgs = [x, x];
    let mut step = |labels: &[u8]| {
        try_train_step_batch(
            &model,
            &mut params,
            &mut grads,
            &mut acts,
            &opt,
            &mut st,
            &imgs[..labels.len().min(2)],
            labels,
        )
    };
    assert_eq!(
        step(&[3, 10]),
        Err(StepError::Label {
            index: 1,
            label: 10
        })
    );
    assert_eq!(
        step(&[255]),
        Err(StepError::Label {
            index: 0,
            label: 255
        })
    );
    assert_eq!(step(&[]), Err(StepError::Empty));
    assert_eq!(
        step(&[1, 2, 3]),
        Err(StepError::Length {
            images: 2,
            labels: 3
        })
    );
    assert!(step(&[3, 9]).is_ok());
    assert!(*params != *before, "a valid batch steps");
    let after = params.clone();
    assert!(
        try_train_step_sample(
            &model,
            &mut params,
            &mut grads,
            &mut acts,
            &opt,
            &mut st,
            &x,
            10
        )
        .is_err()
    );
    assert!(*params == *after, "a refused step changes nothing");
    assert!(
        StepError::Label {
            index: 0,
            label: 10
        }
        .to_string()
        .contains("label 10")
    );
}
