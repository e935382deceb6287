//! `lenet-host`: Fashion-MNIST loading, training, evaluation and export.
#![deny(missing_docs)]

pub mod trainer;
