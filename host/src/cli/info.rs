//! `host info`: where the data is and which devices are usable.

use anyhow::Result;

use super::args::DataArg;
use crate::{backend, data};

/// `host info`.
pub(super) fn run(a: DataArg) -> Result<()> {
    match data::locate(a.data.as_deref()) {
        Ok(src) => println!("data: {src}"),
        Err(e) => println!("data: {e}"),
    }
    match backend::cuda_status() {
        Ok(name) => println!("cuda: {name}"),
        Err(why) => println!("cuda: not usable: {why}"),
    }
    println!("cpu threads: {}", rayon::current_num_threads());
    Ok(())
}
