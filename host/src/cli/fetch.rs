//! `host fetch`: download the official Fashion-MNIST files.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::data;
use crate::fetch::{FetchOptions, OFFICIAL_BASE_URL, fetch};

/// `host fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Base URL of the four files.
    #[arg(long, default_value = OFFICIAL_BASE_URL)]
    pub base_url: String,
    /// Destination directory.
    #[arg(long, default_value = data::LOCAL_DIR, value_name = "DIR")]
    pub dest: PathBuf,
    /// Download even if files with the right checksum are present.
    #[arg(long)]
    pub force: bool,
}

/// `host fetch`.
pub(super) fn run(a: FetchArgs) -> Result<()> {
    let mut o = FetchOptions::official(a.dest.clone());
    o.base_url = a.base_url;
    o.force = a.force;
    fetch(&o).with_context(|| format!("fetching into {}", a.dest.display()))?;
    println!("Fashion-MNIST is in {}", a.dest.display());
    Ok(())
}
