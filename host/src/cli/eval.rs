//! `host eval`: float accuracy of a model, and optionally its int8 form's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::args::DataArg;
use super::{check_threads, load_data, load_model};
use crate::backend;
use crate::data;
use crate::eval::evaluate;
use crate::int8::{head_accuracy, quant_arch, quantize_model, read_head_file, read_q8_of};
use crate::modelfile::act_name;

/// `host eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Dataset location.
    #[command(flatten)]
    pub data: DataArg,
    /// Evaluate the training set instead of the test set.
    #[arg(long)]
    pub train_set: bool,
    /// Evaluate the first N samples only (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: usize,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also quantize the model to int8 (calibrated on training images) and
    /// report the int8 accuracy next to the float one.
    #[arg(long)]
    pub int8: bool,
    /// With --int8: evaluate this exported .q8 file instead of quantizing anew.
    #[arg(long, value_name = "FILE", requires = "int8")]
    pub q8: Option<PathBuf>,
    /// With --int8: training images used to calibrate the int8 ranges.
    #[arg(long, default_value_t = crate::int8::DEFAULT_CALIBRATION_IMAGES, value_name = "N", requires = "int8")]
    pub calibration: usize,
    /// With --q8: also evaluate the .q8 trunk with this head, learned on a
    /// device (the firmware's `learn` writes it), per class.
    #[arg(long, value_name = "FILE", requires = "q8")]
    pub head: Option<PathBuf>,
}

/// `host eval`.
pub(super) fn run(a: EvalArgs) -> Result<()> {
    check_threads(a.threads)?;
    if a.calibration == 0 {
        bail!("--calibration must be at least 1 image");
    }
    let (path, m) = load_model(&a.model)?;
    if a.int8 {
        quant_arch(&path, &m)?;
    }
    // The .q8 trunk and the head are read and checked before the data.
    let q8 = match &a.q8 {
        Some(f) => Some(read_q8_of(f, &path, &m)?),
        None => None,
    };
    let head = match (&q8, &a.q8, &a.head) {
        (Some(q), Some(f), Some(h)) => Some(read_head_file(q, f, h)?),
        _ => None,
    };
    let data = load_data(&a.data)?;
    let all = if a.train_set { &data.train } else { &data.test };
    let limited;
    let ds = if a.limit > 0 {
        limited = all.take(a.limit);
        &limited
    } else {
        all
    };
    if ds.is_empty() {
        bail!(
            "{}: the {} set is empty; nothing to evaluate",
            a.data
                .data
                .as_deref()
                .unwrap_or(Path::new("data"))
                .display(),
            if a.train_set { "training" } else { "test" }
        );
    }
    let mut t = backend::model_trainer(
        &m,
        a.threads,
        1000,
        data.train.len() + data.test.len(),
        "evaluation",
    )?;
    let r = evaluate(t.as_mut(), ds, m.meta.norm, 1000)?;
    println!(
        "{} ({} {}) on the {} set",
        path.display(),
        m.meta.arch,
        act_name(m.meta.act),
        if a.train_set { "training" } else { "test" }
    );
    print!("{}", r.render());
    if a.int8 {
        let q = match q8 {
            Some(q) => q,
            None => quantize_model(&m, a.calibration, &data.train)?,
        };
        let c = crate::int8::compare(&q, &m.params, &ds.images, &ds.labels)
            .with_context(|| path.display().to_string())?;
        println!(
            "int8 ({}): accuracy {:.2}%  (float {:.2}%, {:+.2} pp; same prediction on {:.2}%)",
            match &a.q8 {
                Some(f) => f.display().to_string(),
                None => format!(
                    "calibrated on {} training images",
                    a.calibration.min(data.train.len())
                ),
            },
            100.0 * c.int8.accuracy(),
            100.0 * c.float.accuracy(),
            100.0 * (c.int8.accuracy() - c.float.accuracy()),
            100.0 * c.agree as f64 / ds.len().max(1) as f64
        );
        if let (Some(h), Some(head)) = (&a.head, head) {
            let per_class = head_accuracy(&q, &head, h, ds)?;
            let pc = |r: usize, n: usize| 100.0 * r as f64 / n.max(1) as f64;
            println!(
                "int8 trunk + head ({}): accuracy {:.2}%",
                h.display(),
                pc(
                    per_class.iter().map(|c| c.correct).sum(),
                    per_class.iter().map(|c| c.total).sum()
                )
            );
            for (c, name) in per_class.iter().zip(data::CLASS_NAMES) {
                println!("  {name:>12}  {:6.2}%", pc(c.correct, c.total));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::data::Normalization;
    use crate::int8::quant_arch;
    use crate::modelfile::{ModelFile, ModelMeta};
    use lenet_core::model::ModelKind;
    use std::path::Path;

    #[test]
    fn every_model_kind_has_an_int8_architecture() {
        let mut m = ModelFile {
            meta: ModelMeta {
                arch: ModelKind::LeNet5Wide.into(),
                act: lenet_core::activation::Activation::Relu,
                norm: Normalization::STANDARD,
            },
            params: vec![0.0; ModelKind::LeNet5Wide.num_params()],
            checkpoint: None,
        };
        for kind in ModelKind::ALL {
            m.meta.arch = kind.into();
            assert!(quant_arch(Path::new("m"), &m).is_ok());
        }
        m.meta.arch = lenet_core::model::Arch::Cnn;
        let e = quant_arch(Path::new("m"), &m).unwrap_err().to_string();
        assert_eq!(
            e,
            "m: holds cnn; the int8 path is for the LeNet models only"
        );
    }
}
