//! `host train`: a new run from the command line's settings, or a resumed
//! one from a checkpoint's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::args::{
    ActArg, DataArg, DeviceArg, ModelArg, NetArgs, NormArg, OptimizerArg, ScheduleArg,
    act_or_default,
};
use super::load_data;
use crate::backend;
use crate::modelfile::act_name;
use crate::train::{TrainError, TrainSettings, resume_run, train};

/// `host train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset location.
    #[command(flatten)]
    pub data: DataArg,
    /// Network architecture.
    #[arg(long, value_enum, default_value = "lenet5")]
    pub model: ModelArg,
    /// Options of the larger networks.
    #[command(flatten)]
    pub net: NetArgs,
    /// Hidden-layer activation [default: sigmoid for the LeNets, relu for
    /// the others].
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerArg,
    /// Learning rate, the peak of the schedule [default: 5e-3 for the
    /// LeNets, 1e-3 for the others].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum (ignored by Adam).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Number of epochs (with --resume: total epochs to reach; default 30).
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Learning-rate schedule over the run (per optimizer step).
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// Epochs of linear learning-rate warm-up from --lr/10.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup_epochs: u32,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of initialization, shuffling, augmentation and splits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads [default: all cores; with --resume, the checkpoint's].
    /// A run is bit-reproducible for a given thread count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Augment: random shifts by up to --shift pixels and horizontal flips.
    #[arg(long)]
    pub augment: bool,
    /// Largest shift of --augment, in pixels (0: flips only).
    #[arg(long, default_value_t = 2, value_name = "PIXELS")]
    pub shift: u32,
    /// Input normalization (stored in the model file).
    #[arg(long, value_enum, default_value = "standard")]
    pub normalize: NormArg,
    /// Compute device. With cuda, LENET_CUDA_SYNC=1 waits for every kernel launch and names a failing kernel with its grid, block and arguments (slower; for debugging).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Output directory [default: runs/<model>-<act>, or the checkpoint's directory].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue from a checkpoint (its settings are used; --epochs may raise the total).
    #[arg(long, value_name = "CHECKPOINT")]
    pub resume: Option<PathBuf>,
    /// Train on the first N training images only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit_train: usize,
    /// Test on the first N test images only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit_test: usize,
    /// Leave these classes (0..=9, comma-separated) out of the training set;
    /// the model keeps ten outputs and is tested on every class.
    #[arg(long, value_delimiter = ',', value_name = "CLASSES",
          value_parser = clap::value_parser!(u8).range(0..10))]
    pub exclude_classes: Vec<u8>,
    /// The flags given on the command line (filled by [`parse_args`]), so
    /// `--resume` can refuse settings it would otherwise ignore.
    #[arg(skip)]
    pub explicit: Vec<String>,
}

/// Train flags that `--resume` honours; every other setting comes from the
/// checkpoint.
const RESUME_FLAGS: [&str; 7] = [
    "resume",
    "epochs",
    "threads",
    "out",
    "data",
    "split_seed",
    "device",
];

/// `host train`.
pub(super) fn run(a: TrainArgs) -> Result<()> {
    let (resume, settings) = match &a.resume {
        Some(p) => {
            let ignored: Vec<String> = a
                .explicit
                .iter()
                .filter(|f| !RESUME_FLAGS.contains(&f.as_str()))
                .map(|f| format!("--{}", f.replace('_', "-")))
                .collect();
            if !ignored.is_empty() {
                bail!(
                    "{}: a resumed run keeps the checkpoint's settings, so {} cannot be given with --resume \
                     (allowed: --epochs, --threads, --out, --data, --split-seed, --device)",
                    p.display(),
                    ignored.join(", ")
                );
            }
            let (f, s, notes) = resume_run(p, a.epochs, a.threads)?;
            eprintln!("resuming {} (settings from the checkpoint)", p.display());
            for n in notes {
                eprintln!("{n}");
            }
            (Some(f), s)
        }
        None => (None, new_settings(&a)?),
    };
    let cfg = settings.trainer_config(settings.threads)?;
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.parent().map(Path::to_owned).unwrap_or_default(),
        (None, None) => settings.default_out(),
    };
    let data = load_data(&a.data)?;
    let (mut trainer, note) = backend::training_trainer(
        a.device.device(),
        &cfg,
        settings.batch_size,
        data.train.len() + data.test.len(),
        settings.seed,
    )?;
    eprintln!("{note}");
    eprintln!(
        "model {} act {} optimizer {} lr {} ({}) batch {} epochs {} -> {}",
        settings.model,
        settings.act,
        settings.optimizer,
        settings.lr,
        settings.schedule,
        settings.batch_size,
        settings.epochs,
        out.display()
    );
    crate::interrupt::install().context("installing the Ctrl-C handler")?;
    let summary = train(
        trainer.as_mut(),
        &settings,
        &data,
        &out,
        resume.as_ref(),
        &mut |l| println!("{l}"),
    )
    .map_err(|e| match e {
        TrainError::Interrupted {
            checkpoint: Some(ref ck),
            ..
        } => anyhow::Error::new(Interrupted(format!(
            "{e}\nresume with: {}",
            resume_command(ck, &a)
        ))),
        TrainError::Interrupted { .. } => anyhow::Error::new(Interrupted(e.to_string())),
        e => e.into(),
    })?;
    println!(
        "test accuracy {:.2}%  model {}",
        100.0 * summary.test.accuracy,
        summary.model_path.display()
    );
    Ok(())
}

/// A run stopped by Ctrl-C or SIGTERM after saving its progress: `main`
/// exits with [`EXIT_INTERRUPTED`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// `s` quoted for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line that resumes checkpoint `ck` of the run started with `a`:
/// the data, device and thread count as given (the rest is in the
/// checkpoint).
fn resume_command(ck: &Path, a: &TrainArgs) -> String {
    let mut v = vec![
        "host".to_string(),
        "train".into(),
        "--resume".into(),
        shell_quote(&ck.to_string_lossy()),
    ];
    if let Some(d) = &a.data.data {
        v.push("--data".into());
        v.push(shell_quote(&d.to_string_lossy()));
    }
    if a.data.split_seed != 0 {
        v.push("--split-seed".into());
        v.push(a.data.split_seed.to_string());
    }
    if a.explicit.iter().any(|f| f == "device") {
        v.push("--device".into());
        v.push(a.device.name());
    }
    if let Some(t) = a.threads {
        v.push("--threads".into());
        v.push(t.to_string());
    }
    if let Some(e) = a.epochs.filter(|_| a.resume.is_some()) {
        v.push("--epochs".into());
        v.push(e.to_string());
    }
    v.join(" ")
}

/// The settings of a new run (not `--resume`) from the command line; what
/// it leaves out is the model's [`defaults`](lenet_core::model::Arch::defaults).
///
/// # Errors
/// A network option given to a model that does not have it.
pub fn new_settings(a: &TrainArgs) -> Result<TrainSettings> {
    let norm = a.normalize.norm();
    Ok(TrainSettings {
        model: a.model.name().into(),
        net: a.net.options(a.model)?,
        act: act_name(act_or_default(a.act, a.model)).into(),
        optimizer: match a.optimizer {
            OptimizerArg::Adam => "adam",
            OptimizerArg::Sgd => "sgd",
        }
        .into(),
        lr: a.lr.unwrap_or(a.model.defaults().lr),
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        epochs: a.epochs.unwrap_or(crate::train::DEFAULT_EPOCHS),
        batch_size: a.batch_size,
        seed: a.seed,
        val_split: a.val_split,
        augment: a.augment,
        shift: a.shift,
        norm_mean: norm.mean,
        norm_std: norm.std,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        threads: match a.threads {
            Some(t) if t > 0 => t,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        schedule: match a.schedule {
            ScheduleArg::Constant => "constant",
            ScheduleArg::Cosine => "cosine",
        }
        .into(),
        warmup_epochs: a.warmup_epochs,
        exclude_classes: a.exclude_classes.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command, parse_from};
    use super::*;
    use clap::Parser;

    /// `--resume` with flags it would ignore names exactly those flags
    /// (not the ids of flattened groups such as `NetArgs`).
    #[test]
    fn resume_refuses_flags_naming_the_real_ones() {
        let Command::Train(t) = parse_from([
            "host", "train", "--resume", "ck.lenet", "--blocks", "3", "--hidden", "64", "--data",
            "d", "--lr", "0.1",
        ])
        .unwrap()
        .command
        else {
            panic!("not train")
        };
        let mut got = t.explicit.clone();
        got.sort();
        assert_eq!(got, ["blocks", "data", "hidden", "lr", "resume"]);
        let e = run(t).unwrap_err().to_string();
        assert!(
            e.starts_with("ck.lenet: ")
                && e.contains("so --blocks, --hidden, --lr cannot be given with --resume"),
            "{e}"
        );
        assert!(!e.contains("NetArgs") && !e.contains("DataArg"), "{e}");
    }

    #[test]
    fn network_options_reach_the_settings_and_are_checked() {
        let parse = |args: &[&str]| {
            let v: Vec<&str> = ["host", "train"].iter().chain(args).copied().collect();
            let Command::Train(t) = Cli::try_parse_from(v).unwrap().command else {
                panic!("train")
            };
            new_settings(&t)
        };
        let s = parse(&[
            "--model",
            "vgg",
            "--blocks",
            "3",
            "--width-div",
            "4",
            "--input-size",
            "28",
        ])
        .unwrap();
        assert_eq!(
            s.arch().unwrap(),
            lenet_core::model::Arch::Vgg(lenet_core::model::VggConfig {
                blocks: 3,
                width_div: 4,
                size: 28,
                hidden: 4096
            })
        );
        // The notes' defaults for the larger networks: ReLU, Adam at 1e-3.
        assert_eq!((s.act.as_str(), s.lr), ("relu", 1e-3));
        let s = parse(&["--model", "cnn"]).unwrap();
        assert_eq!(s.arch().unwrap(), lenet_core::model::Arch::Cnn);
        let e = parse(&["--model", "cnn", "--hidden", "64"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--hidden is an option of vgg and alexnet, not of --model cnn"
        );
        let e = parse(&["--model", "alexnet", "--blocks", "2"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--blocks is an option of vgg, not of --model alexnet"
        );
        // Options that leave no network are refused before any data is read.
        let s = parse(&["--model", "alexnet", "--input-size", "40"]).unwrap();
        let e = s.trainer_config(1).unwrap_err().to_string();
        assert!(e.contains("not a valid network"), "{e}");
        let s = parse(&["--model", "vgg", "--width-div", "0"]).unwrap();
        assert!(s.trainer_config(1).is_err());
    }

    #[test]
    fn train_defaults_are_the_library_defaults() {
        let Command::Train(t) = Cli::try_parse_from(["host", "train"]).unwrap().command else {
            panic!("train")
        };
        let s = new_settings(&t).unwrap();
        assert_eq!(
            s,
            TrainSettings {
                threads: s.threads,
                ..TrainSettings::default()
            }
        );
    }
}
