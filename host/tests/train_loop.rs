//! End-to-end tests of the training loop with the reference trainer on a
//! small synthetic dataset: it learns, a resumed run equals an
//! uninterrupted one bit for bit, and the saved model survives a
//! safetensors round trip.

use std::path::Path;

mod common;

use common::RUN_FILES;
use lenet_host::backend::{cpu_trainer, inference_trainer, reference_trainer};
use lenet_host::data::{Splits, synth};
use lenet_host::eval::evaluate;
use lenet_host::export::{export_safetensors, import_safetensors};
use lenet_host::modelfile::ModelFile;
use lenet_host::train::{TrainSettings, files, resume_settings, train};

fn data() -> Splits {
    Splits {
        train: synth::toy(400, 11),
        test: synth::toy(200, 12),
    }
}

fn settings(epochs: u32) -> TrainSettings {
    TrainSettings {
        model: "lenet5".into(),
        act: "relu".into(),
        optimizer: "adam".into(),
        lr: 2e-3,
        epochs,
        batch_size: 32,
        seed: 5,
        augment: true,
        val_split: 0.1,
        // Constant, so that a run of 1 epoch extended to 3 equals a 3-epoch
        // run; the cosine schedule has its own resume test below.
        schedule: "constant".into(),
        ..TrainSettings::default()
    }
}

fn run(s: &TrainSettings, out: &Path, threads: usize) -> lenet_host::train::TrainSummary {
    let mut t = cpu_trainer(&s.trainer_config(threads).unwrap(), s.seed).unwrap();
    train(t.as_mut(), s, &data(), out, None, &mut |l| eprintln!("{l}")).unwrap()
}

#[test]
fn learns_the_toy_task_and_writes_every_output() {
    let d = tempfile::tempdir().unwrap();
    // No augmentation here: a 2-pixel shift turns one toy class into its
    // neighbour (the bars are 2 rows apart).
    let s = TrainSettings {
        augment: false,
        ..settings(3)
    };
    let sum = run(&s, d.path(), 0);
    // Ten classes: chance is 10 %. The bars are easy; 3 epochs must reach 90 %.
    let acc = sum.test.accuracy;
    assert!(acc > 0.9, "test accuracy {acc}");
    assert!(sum.history[2].train_loss < sum.history[0].train_loss);
    for f in RUN_FILES {
        assert!(d.path().join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(d.path().join(files::METRICS)).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");

    // The saved model reproduces the reported test accuracy.
    let m = ModelFile::load(&d.path().join(files::MODEL)).unwrap();
    assert_eq!(m.params, sum.params);
    let mut t = inference_trainer(m.meta.arch, m.meta.act, &m.params, 2).unwrap();
    let r = evaluate(t.as_mut(), &data().test, m.meta.norm, 64).unwrap();
    assert_eq!(r.accuracy, acc);

    // safetensors round trip is exact.
    let st = d.path().join("m.safetensors");
    export_safetensors(&st, &m).unwrap();
    assert_eq!(import_safetensors(&st, None, None).unwrap(), m);
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let full_dir = tempfile::tempdir().unwrap();
    let full = run(&settings(3), full_dir.path(), 2);

    let part_dir = tempfile::tempdir().unwrap();
    run(&settings(1), part_dir.path(), 2);
    let (ck, s) = resume_settings(&part_dir.path().join(files::CHECKPOINT), Some(3)).unwrap();
    assert_eq!(s, settings(3));
    // A fresh trainer with another init seed: everything must come from the checkpoint.
    let mut t = cpu_trainer(&s.trainer_config(2).unwrap(), 999).unwrap();
    let resumed = train(
        t.as_mut(),
        &s,
        &data(),
        part_dir.path(),
        Some(&ck),
        &mut |_| {},
    )
    .unwrap();

    assert_eq!(resumed.history.len(), 3);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&resumed.params),
        bits(&full.params),
        "parameters differ"
    );
    for (a, b) in resumed.history.iter().zip(&full.history) {
        assert_eq!(
            a.train_loss.to_bits(),
            b.train_loss.to_bits(),
            "epoch {}",
            a.epoch
        );
        assert_eq!(a.test_acc, b.test_acc);
    }
    let a = ModelFile::load(&part_dir.path().join(files::CHECKPOINT)).unwrap();
    let b = ModelFile::load(&full_dir.path().join(files::CHECKPOINT)).unwrap();
    assert_eq!(
        a.checkpoint.as_ref().unwrap().optimizer,
        b.checkpoint.as_ref().unwrap().optimizer
    );
    assert_eq!(
        a.checkpoint.unwrap().rng_state,
        b.checkpoint.unwrap().rng_state
    );
}

#[test]
fn sgd_and_the_max_pool_variant_train_too() {
    let d = tempfile::tempdir().unwrap();
    let s = TrainSettings {
        model: "lenet5-max".into(),
        optimizer: "sgd".into(),
        lr: 0.05,
        momentum: 0.9,
        val_split: 0.0,
        augment: false,
        ..settings(3)
    };
    let sum = run(&s, d.path(), 0);
    assert!(
        sum.test.accuracy > 0.8,
        "test accuracy {}",
        sum.test.accuracy
    );
}

#[test]
fn reference_trainer_is_independent_of_the_thread_count_and_agrees_with_the_fast_one() {
    let s = settings(1);
    let d = data();
    let x: Vec<f32> = d.train.images[..64 * 784]
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    let labels = &d.train.labels[..64];
    let mut a = reference_trainer(&s.trainer_config(1).unwrap(), 3).unwrap();
    let mut b = reference_trainer(&s.trainer_config(3).unwrap(), 3).unwrap();
    let mut fast = cpu_trainer(&s.trainer_config(2).unwrap(), 3).unwrap();
    assert_eq!(
        a.params().unwrap(),
        fast.params().unwrap(),
        "same initialization"
    );
    for _ in 0..3 {
        let la = a.train_batch(&x, labels).unwrap();
        let lb = b.train_batch(&x, labels).unwrap();
        let lf = fast.train_batch(&x, labels).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits());
        assert!(
            (la - lf).abs() <= 1e-4 * la.abs().max(1.0),
            "loss {la} vs fast {lf}"
        );
    }
    assert_eq!(a.params().unwrap(), b.params().unwrap());
    // The fast trainer sums in another order: equal within float tolerance.
    let (pa, pf) = (a.params().unwrap(), fast.params().unwrap());
    let worst = pa
        .iter()
        .zip(&pf)
        .map(|(r, f)| (r - f).abs() / (1e-3 + r.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-2, "worst relative parameter difference {worst}");
}

#[test]
fn a_run_killed_mid_epoch_resumes_bit_identically_under_a_schedule() {
    // Cosine schedule with warm-up: the learning rate depends on the global
    // step, which the resumed run must recover from the checkpoint.
    let s = TrainSettings {
        schedule: "cosine".into(),
        warmup_epochs: 1,
        ..settings(3)
    };
    let full_dir = tempfile::tempdir().unwrap();
    let full = run(&s, full_dir.path(), 2);

    // The same run, "killed" while logging epoch 2: epoch 1's checkpoint is
    // on disk, epoch 2's is not.
    let part_dir = tempfile::tempdir().unwrap();
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = cpu_trainer(&s.trainer_config(2).unwrap(), s.seed).unwrap();
        let _ = train(t.as_mut(), &s, &data(), part_dir.path(), None, &mut |l| {
            assert!(!l.starts_with("epoch   2"), "killed");
        });
    }));
    assert!(killed.is_err());
    let (ck, rs) = resume_settings(&part_dir.path().join(files::CHECKPOINT), None).unwrap();
    assert_eq!(ck.checkpoint.as_ref().unwrap().epoch, 1);
    assert_eq!(rs, s);
    let mut t = cpu_trainer(&rs.trainer_config(2).unwrap(), 999).unwrap();
    let resumed = train(
        t.as_mut(),
        &rs,
        &data(),
        part_dir.path(),
        Some(&ck),
        &mut |_| {},
    )
    .unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed.params), bits(&full.params));
    assert_eq!(resumed.history.len(), 3);
    // The schedule did something: cosine ends far below the constant rate.
    let constant = run(&settings(3), tempfile::tempdir().unwrap().path(), 2);
    assert_ne!(bits(&constant.params), bits(&full.params));
}
