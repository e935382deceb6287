//! The training loop: drives any [`Trainer`] through epochs of shuffled
//! mini-batches, evaluates, and writes everything next to the model:
//!
//! - `model.lenet`: weights after the last completed epoch,
//! - `checkpoint.lenet`: weights + optimizer + RNG state + history (`--resume`),
//! - `metrics.csv`: one row per epoch,
//! - `loss.png`, `accuracy.png`: train vs test curves,
//! - `confusion.png`: confusion matrix of the test set after the last epoch.
//!
//! Every file is written to a temporary sibling, fsynced and renamed (see
//! [`write_atomic`]), checkpoint first, so an interrupted run leaves whole
//! files; a resumed run that has nothing left to train rewrites the model,
//! metrics and plots from its checkpoint, so they always match it. The shuffling
//! and augmentation RNG is saved in the checkpoint, so a resumed run is
//! bit-identical to an uninterrupted one (given a deterministic trainer).
//!
//! `train_loss` is the mean of the batch losses during the epoch (before each
//! step, as PyTorch loops usually report it); `train_acc` is measured after
//! the epoch on a fixed subset of at most [`TRAIN_EVAL_SAMPLES`] training
//! images, so it costs a forward pass only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lenet_core::model::{Arch, NetOption};
use serde::{Deserialize, Serialize};

use crate::backend::{Augment, EpochPlan, OptimizerConfig, Trainer, TrainerConfig, TrainerError};
use crate::data::{CLASSES, Dataset, Normalization, Splits};
use crate::eval::{EvalReport, evaluate};
use crate::fsutil::write_atomic;
use crate::interrupt;
use crate::modelfile::{
    CheckpointState, ModelFile, ModelFileError, ModelMeta, NetOptions, arch_from, parse_act,
};
use crate::plots::{Series, plot_confusion, plot_curves};
use crate::progress::{Progress, Unit};
use crate::rng::SplitMix64;

/// Training-set images scored for `train_acc` after each epoch.
pub const TRAIN_EVAL_SAMPLES: usize = 10_000;
/// Batch size of evaluation passes.
pub const EVAL_BATCH: usize = 1000;

/// Everything that defines a run; saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// `lenet5`, `lenet5-max`, `lenet5-wide`, `cnn`, `vgg` or `alexnet`.
    pub model: String,
    /// Options of `vgg` and `alexnet` (absent from older checkpoints).
    #[serde(default)]
    pub net: NetOptions,
    /// `sigmoid`, `relu` or `tanh`.
    pub act: String,
    /// `adam` or `sgd`.
    pub optimizer: String,
    /// Learning rate.
    pub lr: f32,
    /// SGD momentum (ignored by Adam).
    pub momentum: f32,
    /// L2 penalty.
    pub weight_decay: f32,
    /// Total epochs.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed of weight init, shuffling, augmentation and splits.
    pub seed: u64,
    /// Fraction of the training set held out for validation (0 = none).
    pub val_split: f64,
    /// Random shifts by up to `shift` pixels and horizontal flips.
    pub augment: bool,
    /// Largest random shift of `augment`, in pixels (0: flips only).
    #[serde(default = "default_shift")]
    pub shift: u32,
    /// Input normalization mean.
    pub norm_mean: f32,
    /// Input normalization std.
    pub norm_std: f32,
    /// Use only the first N training images (0 = all).
    pub limit_train: usize,
    /// Use only the first N test images (0 = all).
    pub limit_test: usize,
    /// Worker threads of the CPU trainer (0 = all cores). The fast trainer
    /// is bit-reproducible for a given thread count, so `--resume` reuses it.
    #[serde(default)]
    pub threads: usize,
    /// Learning-rate schedule over the whole run: `constant` or `cosine`.
    #[serde(default = "constant_schedule")]
    pub schedule: String,
    /// Epochs of linear warm-up from `lr / 10` before the schedule starts.
    #[serde(default)]
    pub warmup_epochs: u32,
    /// Classes (`0..10`) left out of the training set (and so of the
    /// validation split); the model keeps all ten outputs and the test set
    /// keeps every class.
    #[serde(default)]
    pub exclude_classes: Vec<u8>,
}

fn default_shift() -> u32 {
    2
}

fn constant_schedule() -> String {
    "constant".into()
}

/// The learning rate at optimizer step `step` of `total` steps, for
/// schedule `schedule` (`constant` or `cosine`) with `warmup` warm-up steps.
///
/// `cosine` decays from `lr` to `lr / 100` along half a cosine period,
/// `lr_t = lr_min + (lr - lr_min) * (1 + cos(pi * t / T)) / 2`, where `t`
/// counts the steps after warm-up. Warm-up rises linearly from `lr / 10`.
/// It depends on the step index only, so a resumed run follows the same
/// curve as an uninterrupted one.
pub fn scheduled_lr(schedule: &str, lr: f32, step: u64, total: u64, warmup: u64) -> f32 {
    if step < warmup {
        let f = (step + 1) as f64 / warmup as f64;
        return (f64::from(lr) * (0.1 + 0.9 * f)) as f32;
    }
    match schedule {
        "cosine" => {
            let span = total.saturating_sub(warmup).max(1);
            let t = ((step - warmup) as f64 / span as f64).min(1.0);
            let lo = f64::from(lr) / 100.0;
            (lo + (f64::from(lr) - lo) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
        }
        _ => lr,
    }
}

/// Epochs of a new run when not given.
pub const DEFAULT_EPOCHS: u32 = 30;

/// Largest accepted `epochs`.
pub const MAX_EPOCHS: u32 = 100_000;
/// Largest accepted mini-batch. The training loop allocates a batch's
/// inputs up front (3 KB per image), so an unchecked size aborted on
/// allocation; a batch of 8192 trains in under 80 MB (`host bench --batch
/// 8192`, peak RSS 64 MB for `lenet5`, 72 MB for `lenet5-wide`).
pub const MAX_BATCH: usize = 8192;
/// Largest accepted worker-thread count.
pub const MAX_THREADS: usize = 1024;

/// The default recipe (also `host train`'s defaults): the classic LeNet-5
/// with sigmoid and average pooling as in the course notes, inputs
/// standardized with the training set's mean and std, Adam at 5e-3 on
/// batches of 128 with a cosine decay to 5e-5 over 30 epochs, no
/// augmentation (random shifts and flips make this small sigmoid network
/// underfit).
impl Default for TrainSettings {
    fn default() -> Self {
        let norm = Normalization::STANDARD;
        let arch = Arch::LeNet(lenet_core::model::ModelKind::LeNet5);
        let d = arch.defaults();
        Self {
            model: arch.name().into(),
            net: NetOptions::default(),
            act: crate::modelfile::act_name(d.act).into(),
            optimizer: "adam".into(),
            lr: d.lr,
            momentum: 0.9,
            weight_decay: 0.0,
            epochs: DEFAULT_EPOCHS,
            batch_size: 128,
            seed: 0,
            val_split: 0.0,
            augment: false,
            shift: default_shift(),
            norm_mean: norm.mean,
            norm_std: norm.std,
            limit_train: 0,
            limit_test: 0,
            threads: 0,
            schedule: "cosine".into(),
            warmup_epochs: 0,
            exclude_classes: Vec::new(),
        }
    }
}

/// Invalid settings or a failed run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Settings(String),
    /// Model or checkpoint file trouble.
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    /// Writing metrics or plots failed.
    #[error("{path}: {msg}")]
    Output {
        /// The file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
    /// The compute back end failed.
    #[error(transparent)]
    Trainer(#[from] TrainerError),
    /// A checkpoint's contents disagree with themselves.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        msg: String,
    },
    /// Another run is writing the output folder.
    #[error(
        "{}: another `host train`{} is writing to this folder (lock file {}); wait for it to finish or give another --out",
        dir.display(),
        pid.map_or_else(String::new, |p| format!(" (pid {p})")),
        crate::fsutil::DirLock::FILE
    )]
    Busy {
        /// The output folder.
        dir: PathBuf,
        /// The running process, as its lock file says.
        pid: Option<u32>,
    },
    /// Ctrl-C (SIGINT) or SIGTERM stopped the run at a step boundary;
    /// `checkpoint` holds everything up to that step (none when the
    /// run stopped before its first step).
    #[error(
        "interrupted at step {step} of epoch {epoch}{}",
        checkpoint.as_ref().map_or_else(
            || "; nothing to keep yet".to_string(),
            |c| format!("; progress saved in {}", c.display())
        )
    )]
    Interrupted {
        /// The checkpoint to resume from.
        checkpoint: Option<PathBuf>,
        /// The epoch being trained (1-based).
        epoch: u32,
        /// Steps of that epoch done.
        step: u64,
    },
    /// The loss became NaN or infinite.
    #[error("epoch {epoch}: loss is {loss}; the run diverged (try a lower learning rate)")]
    Diverged {
        /// The epoch.
        epoch: u32,
        /// The loss.
        loss: f32,
    },
}

impl TrainSettings {
    /// Where a new run writes when not told: `runs/<model>-<act>`.
    pub fn default_out(&self) -> PathBuf {
        PathBuf::from(format!("runs/{}-{}", self.model, self.act))
    }

    /// Input normalization.
    pub fn norm(&self) -> Normalization {
        Normalization {
            mean: self.norm_mean,
            std: self.norm_std,
        }
    }

    /// The network these settings train.
    ///
    /// # Errors
    /// [`TrainError::Settings`]: an unknown model or bad options.
    pub fn arch(&self) -> Result<Arch, TrainError> {
        arch_from(&self.model, self.net).map_err(TrainError::Settings)
    }

    /// Checks ranges and converts to the back-end configuration.
    ///
    /// # Errors
    /// [`TrainError::Settings`] naming the bad value.
    pub fn trainer_config(&self, threads: usize) -> Result<TrainerConfig, TrainError> {
        let bad = |m: String| Err(TrainError::Settings(m));
        let arch = self.arch()?;
        let act = parse_act(&self.act)
            .ok_or_else(|| TrainError::Settings(format!("activation `{}`", self.act)))?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate {} must be > 0", self.lr));
        }
        if self.lr > 10.0 {
            return bad(format!("learning rate {} must be at most 10", self.lr));
        }
        if !(self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay)) {
            return bad(format!(
                "weight decay {} must be in [0, 1]",
                self.weight_decay
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad(format!("momentum {} must be in [0, 1)", self.momentum));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return bad(format!(
                "epochs {} must be in 1..={MAX_EPOCHS}",
                self.epochs
            ));
        }
        if threads > MAX_THREADS || self.threads > MAX_THREADS {
            return bad(format!(
                "threads {} must be at most {MAX_THREADS}",
                threads.max(self.threads)
            ));
        }
        if self.shift > 8 {
            return bad(format!("shift {} must be at most 8 pixels", self.shift));
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            return bad(format!(
                "batch size {} must be in 1..={MAX_BATCH}",
                self.batch_size
            ));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return bad(format!(
                "validation split {} must be in [0, 1)",
                self.val_split
            ));
        }
        if !matches!(self.schedule.as_str(), "constant" | "cosine") {
            return bad(format!(
                "learning-rate schedule `{}` (constant or cosine)",
                self.schedule
            ));
        }
        if let Some(&c) = self
            .exclude_classes
            .iter()
            .find(|&&c| usize::from(c) >= CLASSES)
        {
            return bad(format!("excluded class {c} must be in 0..{CLASSES}"));
        }
        if (0..CLASSES).all(|c| self.exclude_classes.contains(&(c as u8))) {
            return bad("every class is excluded".into());
        }
        if self.warmup_epochs > self.epochs {
            return bad(format!(
                "{} warm-up epochs exceed the {} epochs",
                self.warmup_epochs, self.epochs
            ));
        }
        if !self.norm().is_valid() {
            return bad(format!(
                "normalization mean {} / std {} (the mean must be finite, the std in (0, 1000])",
                self.norm_mean, self.norm_std
            ));
        }
        let optimizer = match self.optimizer.as_str() {
            "adam" => OptimizerConfig::Adam {
                lr: self.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
            "sgd" => OptimizerConfig::Sgd {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
            },
            o => return bad(format!("optimizer `{o}`")),
        };
        Ok(TrainerConfig {
            arch,
            act,
            optimizer,
            threads,
            dropout_seed: self.seed,
        })
    }
}

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: u32,
    /// Mean batch loss during the epoch.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_loss: f64,
    /// Accuracy on the training subset after the epoch.
    #[serde(deserialize_with = "null_as_nan")]
    pub train_acc: f64,
    /// Validation loss (NaN without a validation split).
    #[serde(deserialize_with = "null_as_nan")]
    pub val_loss: f64,
    /// Validation accuracy (NaN without a validation split).
    #[serde(deserialize_with = "null_as_nan")]
    pub val_acc: f64,
    /// Test loss.
    #[serde(deserialize_with = "null_as_nan")]
    pub test_loss: f64,
    /// Test accuracy.
    #[serde(deserialize_with = "null_as_nan")]
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch's training steps.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// What a checkpoint's JSON holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The run's settings.
    pub settings: TrainSettings,
    /// Metrics of the completed epochs.
    pub history: Vec<EpochMetrics>,
    /// The steps done of the next epoch, when the run was interrupted
    /// inside it (absent from an epoch's checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
}

/// The first steps of an epoch, saved when Ctrl-C stops a run inside it.
/// The checkpoint's RNG state is the one before the epoch's shuffle, so
/// the resumed run draws the same order and continues at step `steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Steps done.
    pub steps: u64,
    /// Their losses (for the epoch's mean).
    pub losses: Vec<f32>,
    /// Wall-clock seconds they took.
    pub seconds: f64,
}

/// Output file names inside the output directory.
pub mod files {
    /// Final weights.
    pub const MODEL: &str = "model.lenet";
    /// Resumable checkpoint.
    pub const CHECKPOINT: &str = "checkpoint.lenet";
    /// Metrics table.
    pub const METRICS: &str = "metrics.csv";
    /// Loss curves.
    pub const LOSS_PNG: &str = "loss.png";
    /// Accuracy curves.
    pub const ACCURACY_PNG: &str = "accuracy.png";
    /// Confusion matrix.
    pub const CONFUSION_PNG: &str = "confusion.png";

    /// The model file `p` names: `p` itself, or [`MODEL`] in it when `p`
    /// is a training output directory.
    pub fn model_path(p: &std::path::Path) -> std::path::PathBuf {
        if p.is_dir() {
            p.join(MODEL)
        } else {
            p.to_owned()
        }
    }
}

/// Result of [`train`].
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// One entry per epoch (including resumed ones).
    pub history: Vec<EpochMetrics>,
    /// Test evaluation after the last epoch.
    pub test: EvalReport,
    /// Final parameters.
    pub params: Vec<f32>,
    /// Where `model.lenet` went.
    pub model_path: PathBuf,
}

/// Shifts by up to `shift` pixels in each direction (zero fill) and flips
/// horizontally with probability 1/2, drawing from `rng` ([`Augment`]).
pub fn augment(img: &mut [u8], shift: u32, rng: &mut SplitMix64) {
    let src = img.to_vec();
    Augment::draw(shift, rng).apply(img, &src);
}

/// Leaves out `exclude_classes`, splits off the validation set and applies
/// the limits: `(train, val, test)`.
pub fn prepare_data(s: &TrainSettings, data: &Splits) -> (Dataset, Option<Dataset>, Dataset) {
    // Classes left out first, then the first `limit_train` of what is left.
    let kept;
    let train = if s.exclude_classes.is_empty() {
        &data.train
    } else {
        let keep: Vec<usize> = (0..data.train.len())
            .filter(|&i| !s.exclude_classes.contains(&data.train.labels[i]))
            .collect();
        kept = data.train.select(&keep);
        &kept
    };
    let train = if s.limit_train > 0 {
        train.take(s.limit_train)
    } else {
        train.clone()
    };
    let test = if s.limit_test > 0 {
        data.test.take(s.limit_test)
    } else {
        data.test.clone()
    };
    if s.val_split > 0.0 {
        let (t, v) = train.split(s.val_split, s.seed ^ 0x5EED_0F5A_11DA_7A00);
        (t, Some(v), test)
    } else {
        (train, None, test)
    }
}

fn out_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Output {
        path: path.to_owned(),
        msg: e.to_string(),
    }
}

/// The metrics table as CSV text.
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let mut s = String::from(
        "epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,seconds,images_per_sec\n",
    );
    let f = |v: f64| {
        if v.is_nan() {
            String::new()
        } else {
            format!("{v:.6}")
        }
    };
    for m in history {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{:.3},{:.1}",
            m.epoch,
            f(m.train_loss),
            f(m.train_acc),
            f(m.val_loss),
            f(m.val_acc),
            f(m.test_loss),
            f(m.test_acc),
            m.seconds,
            m.images_per_sec
        );
    }
    s
}

/// Writes `metrics.csv`, `loss.png` and `accuracy.png` into `dir`.
///
/// # Errors
/// Writing failed.
pub fn write_reports(dir: &Path, history: &[EpochMetrics]) -> Result<(), TrainError> {
    let p = dir.join(files::METRICS);
    write_atomic(&p, metrics_csv(history).as_bytes()).map_err(|e| out_err(&p, e))?;
    let series = |name: &str, f: &dyn Fn(&EpochMetrics) -> f64| Series {
        name: name.to_string(),
        points: history
            .iter()
            .map(|m| (f64::from(m.epoch), f(m)))
            .filter(|p| p.1.is_finite())
            .collect(),
    };
    let has_val = history.iter().any(|m| m.val_loss.is_finite());
    let mut loss = vec![
        series("train", &|m| m.train_loss),
        series("test", &|m| m.test_loss),
    ];
    let mut acc = vec![
        series("train", &|m| m.train_acc),
        series("test", &|m| m.test_acc),
    ];
    if has_val {
        loss.push(series("validation", &|m| m.val_loss));
        acc.push(series("validation", &|m| m.val_acc));
    }
    let p = dir.join(files::LOSS_PNG);
    plot_curves(&p, "Loss", "cross-entropy", &loss).map_err(|e| out_err(&p, e))?;
    let p = dir.join(files::ACCURACY_PNG);
    plot_curves(&p, "Accuracy", "accuracy", &acc).map_err(|e| out_err(&p, e))?;
    Ok(())
}

/// Trains `trainer` (already initialized, or to be restored from `resume`)
/// for the epochs left, writing the files listed in the module docs into
/// `out_dir`. `log` receives one line per epoch.
///
/// On resume, `settings` must be the checkpoint's (see [`resume_settings`]),
/// except `epochs`, which may be raised to train further.
///
/// # Errors
/// Bad settings, a diverged loss, or failed writes.
pub fn train(
    trainer: &mut dyn Trainer,
    settings: &TrainSettings,
    data: &Splits,
    out_dir: &Path,
    resume: Option<&ModelFile>,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary, TrainError> {
    let cfg = settings.trainer_config(0)?;
    std::fs::create_dir_all(out_dir).map_err(|e| out_err(out_dir, e))?;
    // Two runs writing one folder would interleave their files; the lock is
    // held until this function returns.
    let _lock = crate::fsutil::DirLock::acquire(out_dir).map_err(|e| match e {
        crate::fsutil::LockError::Busy { pid } => TrainError::Busy {
            dir: out_dir.to_owned(),
            pid,
        },
        crate::fsutil::LockError::Io(e) => out_err(&out_dir.join(crate::fsutil::DirLock::FILE), e),
    })?;
    let norm = settings.norm();
    let meta = ModelMeta {
        arch: cfg.arch,
        act: cfg.act,
        norm,
    };
    let (train, val, test) = prepare_data(settings, data);
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::Settings("empty training or test set".into()));
    }
    let train_eval = train.take(TRAIN_EVAL_SAMPLES);

    let mut rng = SplitMix64::new(settings.seed);
    let mut history = Vec::new();
    let mut start_epoch = 0;
    let mut partial: Option<PartialEpoch> = None;
    if let Some(ck) = resume {
        let state = ck
            .checkpoint
            .as_ref()
            .ok_or_else(|| TrainError::Settings("resume file is not a checkpoint".into()))?;
        let info = checkpoint_info(Path::new("checkpoint"), ck)?;
        if info.settings.model != settings.model
            || info.settings.act != settings.act
            || info.settings.optimizer != settings.optimizer
            || info.settings.norm() != settings.norm()
        {
            return Err(TrainError::Settings(
                "resume settings differ from the checkpoint's model, activation, optimizer or normalization"
                    .into(),
            ));
        }
        let batches = train.len().div_ceil(settings.batch_size) as u64;
        let extra = info.partial.as_ref().map_or(0, |p| p.steps);
        if state.optimizer.step != u64::from(state.epoch) * batches + extra || extra >= batches {
            return Err(TrainError::Settings(format!(
                "the checkpoint took {} optimizer steps in {} epochs and {extra} steps, but this data set gives {batches} batches per epoch: \
                 resume with the run's data (same --data and limits)",
                state.optimizer.step, state.epoch
            )));
        }
        trainer.load(&ck.params, &state.optimizer)?;
        rng.state = state.rng_state;
        start_epoch = state.epoch;
        history = info.history;
        history.truncate(start_epoch as usize);
        match &info.partial {
            Some(p) => log(&format!(
                "resumed at step {} of epoch {}",
                p.steps,
                start_epoch + 1
            )),
            None => log(&format!("resumed after epoch {start_epoch}")),
        }
        partial = info.partial;
    }

    let n = train.len();
    let bs = settings.batch_size;
    let mut last_test = None;
    let ck_path = out_dir.join(files::CHECKPOINT);
    for epoch in start_epoch + 1..=settings.epochs {
        let rng_before = rng.state;
        let done = partial.take();
        let skip = done.as_ref().map_or(0, |p| p.steps as usize);
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let aug = settings.augment.then(|| {
            order
                .iter()
                .map(|_| Augment::draw(settings.shift, &mut rng))
                .collect()
        });
        let batches = n.div_ceil(bs);
        let lrs: Vec<f32> = (0..batches)
            .map(|b| {
                let step = u64::from(epoch - 1) * batches as u64 + b as u64;
                scheduled_lr(
                    &settings.schedule,
                    settings.lr,
                    step,
                    u64::from(settings.epochs) * batches as u64,
                    u64::from(settings.warmup_epochs) * batches as u64,
                )
            })
            .collect();
        // A resumed partial epoch continues at step `skip` of the same plan.
        let plan = EpochPlan {
            data: &train,
            norm,
            order: order.split_off(skip * bs),
            aug: aug.map(|mut a: Vec<Augment>| a.split_off(skip * bs)),
            batch_size: bs,
            lrs: lrs[skip..].to_vec(),
        };
        let t0 = Instant::now();
        let mut bar = Progress::new(
            &format!("epoch {epoch}/{}", settings.epochs),
            Some(batches as u64),
            Unit::Items,
        );
        bar.inc(skip as u64);
        let mut losses = done.as_ref().map_or_else(Vec::new, |p| p.losses.clone());
        let mut step_done = || {
            bar.inc(1);
            interrupt::step_done();
        };
        losses.extend(trainer.train_epoch(&plan, &mut step_done)?);
        let seconds = done.as_ref().map_or(0.0, |p| p.seconds) + t0.elapsed().as_secs_f64();
        if losses.len() < batches {
            bar.clear();
            if let Some((_, &loss)) = losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
                return Err(TrainError::Diverged { epoch, loss });
            }
            let info = CheckpointInfo {
                settings: settings.clone(),
                history: history.clone(),
                partial: Some(PartialEpoch {
                    steps: losses.len() as u64,
                    losses,
                    seconds,
                }),
            };
            let step = info.partial.as_ref().map_or(0, |p| p.steps);
            ModelFile {
                meta,
                params: trainer.params()?,
                checkpoint: Some(CheckpointState {
                    epoch: epoch - 1,
                    optimizer: trainer.optimizer_state()?,
                    rng_state: rng_before,
                    json: serde_json::to_string(&info)
                        .map_err(|e| TrainError::Settings(e.to_string()))?,
                }),
            }
            .save(&ck_path)?;
            return Err(TrainError::Interrupted {
                checkpoint: Some(ck_path),
                epoch,
                step,
            });
        }
        let mut loss_sum = 0.0f64;
        for (b, &loss) in losses.iter().enumerate() {
            if !loss.is_finite() {
                bar.clear();
                return Err(TrainError::Diverged { epoch, loss });
            }
            loss_sum += f64::from(loss) * (n - b * bs).min(bs) as f64;
        }
        bar.clear();
        let tr = evaluate(trainer, &train_eval, norm, EVAL_BATCH)?;
        let va = match &val {
            Some(v) => Some(evaluate(trainer, v, norm, EVAL_BATCH)?),
            None => None,
        };
        let te = evaluate(trainer, &test, norm, EVAL_BATCH)?;
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / n as f64,
            train_acc: tr.accuracy,
            val_loss: va.as_ref().map_or(f64::NAN, |r| r.loss),
            val_acc: va.as_ref().map_or(f64::NAN, |r| r.accuracy),
            test_loss: te.loss,
            test_acc: te.accuracy,
            seconds,
            images_per_sec: n as f64 / seconds.max(1e-9),
        };
        let val_txt = if m.val_loss.is_nan() {
            String::new()
        } else {
            format!("  val loss {:.4} acc {:.2}%", m.val_loss, 100.0 * m.val_acc)
        };
        log(&format!(
            "epoch {epoch:>3}  train loss {:.4} acc {:.2}%{val_txt}  test loss {:.4} acc {:.2}%  {:.1}s ({:.0} img/s)",
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.seconds,
            m.images_per_sec
        ));
        history.push(m);

        let params = trainer.params()?;
        let info = CheckpointInfo {
            settings: settings.clone(),
            history: history.clone(),
            partial: None,
        };
        let ck = ModelFile {
            meta,
            params: params.clone(),
            checkpoint: Some(CheckpointState {
                epoch,
                optimizer: trainer.optimizer_state()?,
                rng_state: rng.state,
                json: serde_json::to_string(&info)
                    .map_err(|e| TrainError::Settings(e.to_string()))?,
            }),
        };
        ck.save(&out_dir.join(files::CHECKPOINT))?;
        ModelFile {
            meta,
            params,
            checkpoint: None,
        }
        .save(&out_dir.join(files::MODEL))?;
        write_reports(out_dir, &history)?;
        last_test = Some(te);
        if interrupt::requested() && epoch < settings.epochs {
            return Err(TrainError::Interrupted {
                checkpoint: Some(ck_path),
                epoch: epoch + 1,
                step: 0,
            });
        }
    }
    let model_path = out_dir.join(files::MODEL);
    let test_report = match last_test {
        Some(t) => t,
        None => {
            // Nothing left to train: the run was finished, or killed after
            // its last checkpoint but before the files that follow it were
            // written. Rewrite them from the checkpoint, so the model,
            // metrics and plots always match it.
            ModelFile {
                meta,
                params: trainer.params()?,
                checkpoint: None,
            }
            .save(&model_path)?;
            write_reports(out_dir, &history)?;
            evaluate(trainer, &test, norm, EVAL_BATCH)?
        }
    };
    let p = out_dir.join(files::CONFUSION_PNG);
    plot_confusion(&p, "Confusion matrix (test set)", &test_report.confusion)
        .map_err(|e| out_err(&p, e))?;
    Ok(TrainSummary {
        history,
        test: test_report,
        params: trainer.params()?,
        model_path,
    })
}

/// Reads a checkpoint and returns it with its settings, `epochs` replaced by
/// `epochs` when given.
///
/// # Errors
/// Unreadable or non-checkpoint file.
pub fn resume_settings(
    path: &Path,
    epochs: Option<u32>,
) -> Result<(ModelFile, TrainSettings), TrainError> {
    let f = ModelFile::load(path)?;
    let info = checkpoint_info(path, &f)?;
    let mut s = info.settings;
    if let Some(e) = epochs {
        s.epochs = e;
    }
    Ok((f, s))
}

/// A resumed run: the checkpoint at `path` and its settings, with the
/// total `epochs` and the `threads` replaced when given, and a note for
/// each replacement that makes the run differ from an uninterrupted one.
///
/// # Errors
/// Unreadable or non-checkpoint file.
pub fn resume_run(
    path: &Path,
    epochs: Option<u32>,
    threads: Option<usize>,
) -> Result<(ModelFile, TrainSettings, Vec<String>), TrainError> {
    let (f, mut s) = resume_settings(path, None)?;
    let mut notes = Vec::new();
    if let Some(e) = epochs.filter(|&e| e != s.epochs) {
        if s.schedule != "constant" {
            notes.push(format!(
                "note: {e} epochs instead of {}: the {} schedule is stretched from here on, \
                 so the run differs from an uninterrupted {}-epoch one",
                s.epochs, s.schedule, s.epochs
            ));
        }
        s.epochs = e;
    }
    if let Some(t) = threads.filter(|&t| t != s.threads) {
        notes.push(format!(
            "note: {t} threads instead of the checkpoint's {}: not bit-identical to an uninterrupted run",
            s.threads
        ));
        s.threads = t;
    }
    Ok((f, s, notes))
}

/// The checkpoint section of `f` (read from `path`) with its JSON parsed,
/// after checking that everything in it agrees: the settings are valid and
/// name the model, activation and normalization of the header; the epoch is
/// within the run and its history; the optimizer buffers fit the optimizer
/// and hold finite values.
///
/// # Errors
/// [`TrainError::Checkpoint`] naming the file and the first disagreement.
pub fn checkpoint_info(path: &Path, f: &ModelFile) -> Result<CheckpointInfo, TrainError> {
    let bad = |msg: String| TrainError::Checkpoint {
        path: path.to_owned(),
        msg,
    };
    let state = f
        .checkpoint
        .as_ref()
        .ok_or_else(|| ModelFileError::NotACheckpoint {
            path: path.to_owned(),
        })?;
    let info: CheckpointInfo =
        serde_json::from_str(&state.json).map_err(|e| bad(format!("checkpoint JSON: {e}")))?;
    let s = &info.settings;
    let cfg = s
        .trainer_config(s.threads)
        .map_err(|e| bad(format!("settings: {e}")))?;
    // Options the network does not have hold their defaults, as a new
    // run writes them.
    let d = crate::modelfile::NetOptions::default();
    let family = cfg.arch.family();
    let mut unused = NetOption::ALL
        .into_iter()
        .filter(|&o| !family.takes(o))
        .map(|o| (o.name(), s.net.get(o), d.get(o)));
    if let Some((name, v, want)) = unused.find(|(_, v, want)| v != want) {
        return Err(bad(format!(
            "settings: net.{name} is {v}, but {} has no such option ({want} expected)",
            s.model
        )));
    }
    if cfg.arch != f.meta.arch || cfg.act != f.meta.act || s.norm() != f.meta.norm {
        return Err(bad(format!(
            "settings say {} {} {}, the header says {} {} {}",
            s.model,
            s.act,
            s.norm(),
            f.meta.arch,
            crate::modelfile::act_name(f.meta.act),
            f.meta.norm
        )));
    }
    match &info.partial {
        None if state.epoch == 0 || state.epoch > s.epochs => {
            return Err(bad(format!(
                "epoch {} is outside the run's 1..={} epochs",
                state.epoch, s.epochs
            )));
        }
        Some(_) if state.epoch >= s.epochs => {
            return Err(bad(format!(
                "an interrupted epoch after epoch {} is outside the run's {} epochs",
                state.epoch, s.epochs
            )));
        }
        Some(p) if p.steps == 0 || p.losses.len() as u64 != p.steps => {
            return Err(bad(format!(
                "an interrupted epoch of {} steps with {} losses",
                p.steps,
                p.losses.len()
            )));
        }
        Some(p) if p.losses.iter().any(|l| !l.is_finite()) || !p.seconds.is_finite() => {
            return Err(bad(
                "an interrupted epoch with a loss that is not finite".into()
            ));
        }
        _ => {}
    }
    if info.history.len() < state.epoch as usize {
        return Err(bad(format!(
            "epoch {} but a history of {} epochs",
            state.epoch,
            info.history.len()
        )));
    }
    let o = &state.optimizer;
    let n = f.params.len();
    let fits = match cfg.optimizer {
        crate::backend::OptimizerConfig::Adam { .. } => o.m.len() == n && o.v.len() == n,
        crate::backend::OptimizerConfig::Sgd { .. } => {
            (o.m.is_empty() || o.m.len() == n) && o.v.is_empty()
        }
    };
    if !fits {
        return Err(bad(format!(
            "optimizer state ({} + {} values) does not fit {} on {n} parameters",
            o.m.len(),
            o.v.len(),
            s.optimizer
        )));
    }
    for (name, buf) in [("first moment", &o.m), ("second moment", &o.v)] {
        if let Some((i, v)) = buf.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!("optimizer {name} [{i}] is {v}")));
        }
    }
    if let Some((i, v)) = o.v.iter().enumerate().find(|(_, v)| **v < 0.0) {
        return Err(bad(format!(
            "optimizer second moment [{i}] is negative ({v})"
        )));
    }
    if o.step == 0 {
        return Err(bad("optimizer step 0 after a completed step".into()));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{PIXELS, SIDE};

    /// The checkpoint's JSON is read back and written again on every
    /// resume: each float must survive that exactly, or the resumed
    /// checkpoint differs from an uninterrupted run's in a last digit.
    #[test]
    fn checkpoint_json_floats_round_trip_exactly() {
        let mut rng = crate::rng::SplitMix64::new(7);
        let mut history = Vec::new();
        for epoch in 1..=2000 {
            let mut x = || {
                let bits = rng.next_u64();
                // Losses and accuracies: [0, 4), every mantissa bit used.
                (bits >> 11) as f64 / (1u64 << 53) as f64 * 4.0
            };
            history.push(EpochMetrics {
                epoch,
                train_loss: x(),
                train_acc: x(),
                val_loss: f64::NAN,
                val_acc: x(),
                test_loss: x(),
                test_acc: x(),
                seconds: x() * 1e3,
                images_per_sec: x() * 1e5,
            });
        }
        let info = CheckpointInfo {
            settings: crate::cli::new_settings(&match crate::cli::parse_from(["host", "train"])
                .unwrap()
                .command
            {
                crate::cli::Command::Train(t) => t,
                _ => unreachable!(),
            })
            .unwrap(),
            history,
            partial: None,
        };
        let json = serde_json::to_string(&info).unwrap();
        let back: CheckpointInfo = serde_json::from_str(&json).unwrap();
        for (a, b) in info.history.iter().zip(&back.history) {
            for (x, y) in [
                (a.train_loss, b.train_loss),
                (a.train_acc, b.train_acc),
                (a.val_acc, b.val_acc),
                (a.test_loss, b.test_loss),
                (a.test_acc, b.test_acc),
                (a.seconds, b.seconds),
                (a.images_per_sec, b.images_per_sec),
            ] {
                assert_eq!(x.to_bits(), y.to_bits(), "{x:?} read back as {y:?}");
            }
        }
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn excluded_classes_leave_the_training_set_only() {
        let labels: Vec<u8> = (0..40).map(|i| (i % 10) as u8).collect();
        let ds = Dataset {
            images: labels.iter().flat_map(|&l| [l; PIXELS]).collect(),
            labels,
        };
        let data = Splits {
            train: ds.clone(),
            test: ds,
        };
        let s = TrainSettings {
            exclude_classes: vec![5, 8],
            limit_train: 20,
            ..TrainSettings::default()
        };
        let (train, val, test) = prepare_data(&s, &data);
        assert!(val.is_none());
        assert_eq!(train.len(), 20);
        assert!(train.labels.iter().all(|&l| l != 5 && l != 8));
        assert!(
            train
                .images
                .chunks_exact(PIXELS)
                .zip(&train.labels)
                .all(|(im, &l)| im[0] == l)
        );
        assert_eq!(test.len(), 40);
        let all = TrainSettings {
            exclude_classes: (0..10).collect(),
            ..TrainSettings::default()
        };
        assert!(all.trainer_config(1).is_err());
        let bad = TrainSettings {
            exclude_classes: vec![10],
            ..TrainSettings::default()
        };
        assert!(bad.trainer_config(1).is_err());
    }

    #[test]
    fn augment_shifts_and_flips_within_bounds() {
        let mut rng = SplitMix64::new(3);
        let mut base = vec![0u8; PIXELS];
        base[14 * SIDE + 14] = 255;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut img = base.clone();
            augment(&mut img, 2, &mut rng);
            let on: Vec<usize> = img
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == 255)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(on.len(), 1, "one bright pixel stays one bright pixel");
            let (y, x) = (on[0] / SIDE, on[0] % SIDE);
            assert!(
                (12..=16).contains(&y) && (11..=16).contains(&x),
                "({y},{x})"
            );
            seen.insert(on[0]);
        }
        assert!(seen.len() > 10, "augmentation varies: {}", seen.len());
        // Shift 0: flips only.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut img = base.clone();
            augment(&mut img, 0, &mut rng);
            seen.insert(img.iter().position(|v| *v == 255).unwrap());
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn schedules_follow_their_formulas() {
        for step in [0, 10, 99] {
            assert_eq!(scheduled_lr("constant", 0.01, step, 100, 0), 0.01);
        }
        let c = |step| scheduled_lr("cosine", 0.01, step, 100, 0);
        assert!((c(0) - 0.01).abs() < 1e-9);
        assert!((c(50) - 0.00505).abs() < 1e-7, "{}", c(50));
        assert!((c(100) - 0.0001).abs() < 1e-9);
        assert!((1..100).all(|t| c(t) < c(t - 1)), "decreasing");
        // Warm-up rises linearly from lr/10 to lr, then the cosine starts.
        let w = |step| scheduled_lr("cosine", 0.01, step, 110, 10);
        assert!((w(0) - 0.0019).abs() < 1e-7, "{}", w(0));
        assert!((w(9) - 0.01).abs() < 1e-9);
        assert!((w(10) - 0.01).abs() < 1e-9);
        assert!((1..10).all(|t| w(t) > w(t - 1)), "increasing");
    }

    #[test]
    fn settings_validation() {
        let s = TrainSettings::default();
        assert!(s.trainer_config(1).is_ok());
        for bad in [
            TrainSettings {
                lr: 0.0,
                ..s.clone()
            },
            TrainSettings {
                batch_size: 0,
                ..s.clone()
            },
            TrainSettings {
                val_split: 1.0,
                ..s.clone()
            },
            TrainSettings {
                model: "resnet".into(),
                ..s.clone()
            },
            TrainSettings {
                optimizer: "lbfgs".into(),
                ..s.clone()
            },
            TrainSettings {
                norm_std: 0.0,
                ..s.clone()
            },
            TrainSettings {
                schedule: "step".into(),
                ..s.clone()
            },
            TrainSettings {
                warmup_epochs: s.epochs + 1,
                ..s.clone()
            },
            TrainSettings {
                shift: 9,
                ..s.clone()
            },
        ] {
            assert!(
                matches!(bad.trainer_config(1), Err(TrainError::Settings(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn csv_has_a_row_per_epoch_and_blank_missing_values() {
        let m = EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_acc: 0.8,
            val_loss: f64::NAN,
            val_acc: f64::NAN,
            test_loss: 0.6,
            test_acc: 0.75,
            seconds: 1.0,
            images_per_sec: 100.0,
        };
        let csv = metrics_csv(&[m.clone(), EpochMetrics { epoch: 2, ..m }]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("1,0.500000,0.800000,,,0.600000"),
            "{}",
            lines[1]
        );
    }
}
