//! `host check`: a device against PyTorch's golden records.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::args::DeviceArg;

/// `host check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Compute device to check: cpu (default), cpu-reference, cuda or cuda-emu.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Folder of the golden files (lenet.bin, nets.bin) [default:
    /// $LENET_GOLDEN, golden/ beside the executable, ./tests/golden].
    #[arg(long, value_name = "DIR")]
    pub golden: Option<PathBuf>,
    /// Only the record groups whose name contains one of these words
    /// (comma-separated), e.g. `lenet/max,vgg`.
    #[arg(long, value_delimiter = ',', value_name = "WORDS")]
    pub only: Vec<String>,
    /// Compare only the logits, the first training step's loss and
    /// gradients and the first Adam step's loss: every kernel once, for
    /// slow tools such as compute-sanitizer.
    #[arg(long)]
    pub one_step: bool,
    /// On cuda-emu, check the full CNN too (about a minute there; by
    /// default only its logits of two images).
    #[arg(long)]
    pub full: bool,
}

/// `host check`.
pub(super) fn run(a: CheckArgs) -> Result<()> {
    let dir = match a.golden {
        Some(d) => d,
        None => crate::golden::default_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "no golden files found ($LENET_GOLDEN, golden/ beside the executable, ./tests/golden); \
                 give --golden DIR"
            )
        })?,
    };
    println!(
        "host check: device {} against PyTorch's golden records in {}",
        a.device.name(),
        dir.display()
    );
    let lines = crate::check::run(
        a.device.device(),
        &dir,
        &a.only,
        a.one_step,
        a.full,
        &mut |l| println!("{l}"),
    )
    .map_err(anyhow::Error::msg)?;
    let failed = lines.iter().filter(|l| l.result.is_err()).count();
    if lines.is_empty() {
        bail!("--only {}: no record group matches", a.only.join(","));
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", lines.len());
    }
    let na = lines
        .iter()
        .filter(|l| matches!(l.result, Ok(None)))
        .count();
    if na > 0 {
        println!(
            "all {} checks passed ({na} not applicable)",
            lines.len() - na
        );
    } else {
        println!("all {} checks passed", lines.len());
    }
    Ok(())
}
