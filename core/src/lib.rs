//! `lenet-core`: LeNet-5 for microcontrollers and workstations alike.
//!
//! `no_std`, no `alloc`, no heap. Tensors are plain fixed-size nested arrays
//! whose sizes are const generic parameters (`[[[f32; W]; H]; C]`); output
//! sizes are const parameters too, checked at compile time, so a wrong shape
//! does not compile.
//!
//! Legend used throughout: `C` channels (`CI` in, `CO` out), `H` rows, `W`
//! columns, `KH`/`KW` kernel rows/columns, `PH`/`PW` padding, `SH`/`SW`
//! stride, `OH`/`OW` output rows/columns, `N` batch.
//!
//! PyTorch semantics are the reference everywhere: weight layouts
//! `[out][in][kh][kw]` and `[out][in]`, pooling in floor mode, zero padding.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod activation;
pub mod conv;
pub mod init;
pub mod linear;
pub mod loss;
pub mod math;
pub mod model;
pub mod optim;
pub mod pool;
pub mod quant;
pub mod shape;

#[cfg(feature = "defmt")]
mod defmt_impls;

pub use shape::{Padding, Stride, Window, out_size};
