//! `defmt::Format` implementations for the public types (feature `defmt`),
//! so firmware can log them with `defmt::info!("{}", kind)`.
//!
//! Enums print their command-line names; optimizer configurations print
//! their hyperparameters; the geometry markers print their numbers.

use defmt::{Format, Formatter, write};

use crate::activation::{Activation, ParseActivationError};
use crate::head::HeadError;
use crate::model::{ModelKind, ParseModelKindError};
use crate::optim::{Adam, Sgd};
use crate::shape::{Padding, Stride, Window};

impl Format for Activation {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.name());
    }
}

impl Format for ModelKind {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.name());
    }
}

impl Format for ParseActivationError {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "unknown activation (expected sigmoid, relu or tanh)");
    }
}

impl Format for ParseModelKindError {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "unknown model (expected lenet5 or lenet5-max)");
    }
}

impl Format for Sgd {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "Sgd {{ lr: {=f32}, momentum: {=f32}, weight_decay: {=f32} }}",
            self.lr, self.momentum, self.weight_decay
        );
    }
}

impl Format for Adam {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "Adam {{ lr: {=f32}, beta1: {=f32}, beta2: {=f32}, eps: {=f32}, weight_decay: {=f32} }}",
            self.lr, self.beta1, self.beta2, self.eps, self.weight_decay
        );
    }
}

impl<const PH: usize, const PW: usize> Format for Padding<PH, PW> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "Padding<{=usize}, {=usize}>", PH, PW);
    }
}

impl<const SH: usize, const SW: usize> Format for Stride<SH, SW> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "Stride<{=usize}, {=usize}>", SH, SW);
    }
}

impl<const KH: usize, const KW: usize> Format for Window<KH, KW> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "Window<{=usize}, {=usize}>", KH, KW);
    }
}

impl Format for HeadError {
    fn format(&self, f: Formatter<'_>) {
        match *self {
            HeadError::Length { expected, actual } => write!(
                f,
                "head file is {=usize} bytes, expected {=usize}",
                actual, expected
            ),
            HeadError::Magic => write!(f, "not a head file (magic is not LQ8H)"),
            HeadError::Version(v) => write!(f, "head file version {=u16}", v),
            HeadError::Kind { expected, actual } => {
                write!(f, "head kind {=u8}, expected {=u8}", actual, expected)
            }
            HeadError::Activation(a) => write!(f, "unknown hidden activation code {=u8}", a),
            HeadError::Count { expected, actual } => write!(
                f,
                "parameter count is {=u32}, this head has {=u32}",
                actual, expected
            ),
            HeadError::Value {
                tensor,
                index,
                bits,
            } => write!(
                f,
                "{=str}[{=usize}] is {=f32} (not finite or too large)",
                tensor,
                index,
                f32::from_bits(bits)
            ),
            HeadError::Checksum => write!(f, "head file checksum mismatch"),
            HeadError::Trunk { expected, actual } => write!(
                f,
                "head learned on the trunk with CRC-32 {=u32:#x}, not this one ({=u32:#x})",
                actual, expected
            ),
        }
    }
}
