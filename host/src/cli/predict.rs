//! `host predict`: the class of image files or test-set samples.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use super::args::DataArg;
use super::{load_data, load_model};
use crate::backend;
use crate::predict::{load_image, predict};

/// `host predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file (.lenet) or a training output directory.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Image files (PNG or JPEG, any size; light backgrounds are inverted).
    #[arg(value_name = "IMAGE", required_unless_present = "index")]
    pub images: Vec<PathBuf>,
    /// Classify test-set sample N instead (repeatable).
    #[arg(long, value_name = "N", conflicts_with = "images")]
    pub index: Vec<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Dataset location (for --index).
    #[command(flatten)]
    pub data: DataArg,
}

/// `host predict`.
pub(super) fn run(a: PredictArgs) -> Result<()> {
    let (_, m) = load_model(&a.model)?;
    let mut inputs = Vec::new();
    if a.index.is_empty() {
        for p in &a.images {
            inputs.push((p.display().to_string(), load_image(p)?, None));
        }
    } else {
        let test = load_data(&a.data)?.test;
        for &i in &a.index {
            if i >= test.len() {
                bail!("--index {i}: the test set has {} samples", test.len());
            }
            inputs.push((
                format!("test[{i}]"),
                test.image(i).to_vec(),
                Some(test.labels[i] as usize),
            ));
        }
    }
    let mut t = backend::model_trainer(&m, 0, inputs.len(), 0, "prediction")?;
    let preds = predict(t.as_mut(), m.meta.norm, &inputs)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&preds)?);
    } else {
        for p in &preds {
            println!("{}", p.render());
        }
    }
    Ok(())
}
