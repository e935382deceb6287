//! `lenet-host`: Fashion-MNIST loading, training, evaluation and export.
