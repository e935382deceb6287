//! `lenet-host`: Fashion-MNIST loading, training, evaluation and export.
//!
//! Data flows one way: [`data`] (or [`fetch`]) → [`train`] driving a
//! [`backend::Trainer`] → a [`modelfile`] → [`export`] (safetensors for
//! PyTorch). [`eval`] and [`predict`] run saved models. The `host` binary
//! ([`cli`]) only parses arguments and calls these modules.
#![deny(missing_docs)]

pub mod backend;
pub mod check;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod fsutil;
pub mod golden;
pub mod int8;
pub mod interrupt;
pub mod modelfile;
pub mod plots;
pub mod predict;
pub mod progress;
pub mod rng;
pub mod train;
pub mod untrusted;
