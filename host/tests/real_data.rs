//! Checks on the real Fashion-MNIST when it is installed (Debian package
//! `dataset-fashion-mnist`, `$FASHION_MNIST_DIR` or `./data/fashion-mnist`).
//! Without it the test says so and checks nothing else.

use lenet_host::backend::cpu_trainer;
use lenet_host::data::{self, CLASSES};
use lenet_host::train::{TrainSettings, train};

#[test]
fn official_files_load_and_a_short_run_learns() {
    let src = match data::locate(None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: real Fashion-MNIST not installed: {e}");
            return;
        }
    };
    let d = data::load(&src, 0).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (60_000, 10_000), "{src}");
    assert_eq!(d.train.class_counts(), [6000; CLASSES]);
    assert_eq!(d.test.class_counts(), [1000; CLASSES]);

    // 4000 images, 3 epochs: far above the 10 % of chance (73 % when written).
    let s = TrainSettings {
        epochs: 3,
        lr: 2e-3,
        batch_size: 64,
        limit_train: 4000,
        limit_test: 2000,
        seed: 1,
        ..TrainSettings::default()
    };
    let out = tempfile::tempdir().unwrap();
    let mut t = cpu_trainer(&s.trainer_config(2).unwrap(), s.seed).unwrap();
    let sum = train(t.as_mut(), &s, &d, out.path(), None, &mut |l| {
        eprintln!("{l}")
    })
    .unwrap();
    assert!(
        sum.test.accuracy > 0.6,
        "test accuracy {}",
        sum.test.accuracy
    );
}
