//! `host import`: PyTorch safetensors weights into a model file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::args::{ActArg, NormArg};
use super::reporter;
use crate::export::import_safetensors;
use crate::modelfile::act_name;

/// `host import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// safetensors file with a LeNet-5 state_dict.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,
    /// Output model file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Activation; required when the file does not record it (a plain
    /// PyTorch state_dict does not), overrides the file's otherwise.
    #[arg(long, value_enum)]
    pub act: Option<ActArg>,
    /// Input normalization; required when the file does not record it,
    /// overrides the file's otherwise.
    #[arg(long, value_enum)]
    pub normalize: Option<NormArg>,
}

/// `host import`.
pub(super) fn run(a: ImportArgs) -> Result<()> {
    let m = import_safetensors(
        &a.input,
        a.act.map(ActArg::act),
        a.normalize.map(NormArg::norm),
    )?;
    m.save(&a.out)?;
    let from = |flag: bool, name: &str| {
        if flag {
            format!("from {name}")
        } else {
            "from the file's metadata".to_string()
        }
    };
    reporter(&a.out)(format!(
        "wrote {} ({}, {} parameters; activation {} {}; input normalization {} {})",
        a.out.display(),
        m.meta.arch,
        m.params.len(),
        act_name(m.meta.act),
        from(a.act.is_some(), "--act"),
        m.meta.norm,
        from(a.normalize.is_some(), "--normalize"),
    ));
    Ok(())
}
