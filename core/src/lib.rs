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
//!
//! Learning on the device, in a few kilobytes of statics and bit for bit
//! as on the workstation: [`head`].
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `micromath` | off | `exp` from micromath's fast approximation instead of libm's (see [`math`]); smaller and faster on an FPU-only core, no longer bit-exact with a build without it |
//! | `defmt` | off | `defmt::Format` for the public types |
//!
//! # RAM budget (f32 models)
//!
//! Exact bytes from `size_of` (pinned by the test
//! `model::tests::struct_sizes_are_exact` and the example below). Gradients
//! use the `Params` type; "scratch" is the stack buffer `backward` uses for
//! activation gradients (`LeNet5::BACKWARD_SCRATCH_BYTES`).
//!
//! | buffer                                    | [`LeNet5`](model::LeNet5) | [`LeNet5Max`](model::LeNet5Max) | [`LeNet5Wide`](model::LeNet5Wide) |
//! |-------------------------------------------|----------:|----------:|----------:|
//! | `Params` (61 706 / 44 426 / 85 822 scalars) |   246 824 |   177 704 |   343 288 |
//! | `Activations`                             |    35 512 |    28 632 |    65 944 |
//! | **inference**: params + activations       | **282 336** | **206 336** | **409 232** |
//! | grads (`Params`)                          |   246 824 |   177 704 |   343 288 |
//! | `AdamState<Params>`                       |   493 652 |   355 412 |   686 580 |
//! | **training with Adam**: params + grads + activations + Adam state | **1 022 812** | **739 452** | **1 439 100** |
//! | backward stack scratch                    |    32 336 |    23 216 |    57 136 |
//! | `SgdState<Params>` (instead of Adam)      |   246 828 |   177 708 |   343 292 |
//!
//! For inference the parameters can be an immutable `static` (flash), so
//! the RAM needed is the activations alone. Float training does not fit a
//! typical Cortex-M4 (128 to 256 KiB of RAM); it is for the workstation and
//! for tests.
//!
//! ```
//! use core::mem::size_of;
//! use lenet_core::model::*;
//! use lenet_core::optim::{AdamState, SgdState};
//! assert_eq!(size_of::<LeNet5Params>() + size_of::<LeNet5Activations>(), 282_336);
//! assert_eq!(size_of::<LeNet5MaxParams>() + size_of::<LeNet5MaxActivations>(), 206_336);
//! let train = |p: usize, a: usize, adam: usize| 2 * p + a + adam;
//! assert_eq!(
//!     train(size_of::<LeNet5Params>(), size_of::<LeNet5Activations>(), size_of::<AdamState<LeNet5Params>>()),
//!     1_022_812
//! );
//! assert_eq!(
//!     train(size_of::<LeNet5MaxParams>(), size_of::<LeNet5MaxActivations>(), size_of::<AdamState<LeNet5MaxParams>>()),
//!     739_452
//! );
//! assert_eq!(
//!     train(size_of::<LeNet5WideParams>(), size_of::<LeNet5WideActivations>(), size_of::<AdamState<LeNet5WideParams>>()),
//!     1_439_100
//! );
//! assert_eq!(size_of::<LeNet5WideParams>() + size_of::<LeNet5WideActivations>(), 409_232);
//! assert_eq!(size_of::<SgdState<LeNet5WideParams>>(), 343_292);
//! assert_eq!((LeNet5::BACKWARD_SCRATCH_BYTES, LeNet5Max::BACKWARD_SCRATCH_BYTES), (32_336, 23_216));
//! assert_eq!(LeNet5Wide::BACKWARD_SCRATCH_BYTES, 57_136);
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod activation;
pub mod conv;
pub mod dropout;
pub mod head;
pub mod init;
pub mod linear;
pub mod loss;
pub mod math;
pub mod model;
pub mod optim;
pub mod pool;
pub mod quant;
pub mod resize;
pub mod shape;
#[cfg(test)]
mod testing;

#[cfg(feature = "defmt")]
mod defmt_impls;

/// The examples of `README.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use shape::{Padding, Stride, Window, out_size};
