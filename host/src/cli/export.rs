//! `host export`: safetensors for PyTorch, or int8 `.q8` for the firmware.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use super::args::DataArg;
use super::{load_data, load_model, reporter};
use crate::export::{export_safetensors, pytorch_snippet};
use crate::int8::{calibration_set, compare, quant_arch, quantize_model, write_q8};
use crate::modelfile::ModelFile;

/// `host export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Output file [default: the model path with extension .safetensors].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Export the int8-quantized model for the firmware (.q8) instead,
    /// calibrated on training images, and report float vs int8 test accuracy.
    #[arg(long)]
    pub int8: bool,
    /// Training images used to calibrate the int8 ranges.
    #[arg(long, default_value_t = crate::int8::DEFAULT_CALIBRATION_IMAGES, value_name = "N", requires = "int8")]
    pub calibration: usize,
    /// Calibrate on training images of the other classes only (0..=9,
    /// comma-separated): for a model trained with --exclude-classes, so the
    /// int8 ranges never see those classes either.
    #[arg(long, value_delimiter = ',', value_name = "CLASSES", requires = "int8",
          value_parser = clap::value_parser!(u8).range(0..10))]
    pub exclude_classes: Vec<u8>,
    /// Dataset location (for --int8 calibration and evaluation).
    #[command(flatten)]
    pub data: DataArg,
    /// Also print the PyTorch code that loads the export.
    #[arg(long)]
    pub print_pytorch: bool,
}

/// `host export`.
pub(super) fn run(a: ExportArgs) -> Result<()> {
    let (path, m) = load_model(&a.model)?;
    if a.int8 {
        return export_int8(&path, &m, a.out, a.calibration, &a.exclude_classes, &a.data);
    }
    let out = a.out.unwrap_or_else(|| path.with_extension("safetensors"));
    export_safetensors(&out, &m)?;
    let say = reporter(&out);
    say(format!(
        "wrote {} ({} parameters)",
        out.display(),
        m.params.len()
    ));
    if a.print_pytorch {
        say(pytorch_snippet(m.meta.arch, m.meta.act, m.meta.norm)
            .trim_end()
            .to_string());
    }
    Ok(())
}

/// `host export --int8`.
fn export_int8(
    path: &Path,
    m: &ModelFile,
    out: Option<PathBuf>,
    calibration: usize,
    exclude: &[u8],
    d: &DataArg,
) -> Result<()> {
    quant_arch(path, m)?;
    if calibration == 0 {
        bail!("--calibration must be at least 1 image");
    }
    let data = load_data(d)?;
    let train = calibration_set(&data.train, exclude)?;
    let n = calibration.min(train.len());
    let q = quantize_model(m, calibration, &train)?;
    let out = out.unwrap_or_else(|| path.with_extension("q8"));
    write_q8(&out, &q)?;
    let say = reporter(&out);
    say(format!(
        "wrote {} (int8, calibrated on {n} training images)",
        out.display()
    ));
    let c = compare(&q, &m.params, &data.test.images, &data.test.labels)?;
    say(format!(
        "test accuracy: float {:.2}%  int8 {:.2}%  (same prediction on {:.2}% of {} images)",
        100.0 * c.float.accuracy(),
        100.0 * c.int8.accuracy(),
        100.0 * c.agree as f64 / data.test.len().max(1) as f64,
        data.test.len()
    ));
    Ok(())
}
