//! Cortex-M4 kernels for the classic LeNet-5 (here) and the max-pooling
//! networks (`max`, built instead when `build.rs` sets `lenet_max`), equal
//! bit for bit to lenet-core's integer reference (`QuantLeNet::infer`);
//! the QEMU test checks that on all 10,000 test images for each committed
//! model. The linear layers and the helpers here serve both.
//!
//! Legend: `C` channels, `H`/`W` rows/columns, `K` = 5 kernel side.
//!
//! The multiply-accumulates run on the M4's dual 16-bit MAC, SMLAD
//! (`acc + a.lo * b.lo + a.hi * b.hi`), through `asm!` because the DSP
//! intrinsics are nightly-only. Activations are kept as i16 *minus their
//! zero point*, two to a word, so a padded tap is a 0 and every product is
//! `w * (x - zp)` as in the reference; the int32 sums wrap like the
//! reference's `wrapping_add`. `build.rs` pre-arranges the weights and
//! the per-channel constants (`packed.rs`) to match each layout below.
//! Requantization (`Requant`) and the 2×2 average (`pool`) are shorter
//! forms of lenet-core's `requantize` and `avg_pool_round`, exact under
//! conditions `build.rs` checks for the embedded model (else it builds
//! the reference); apart from that only the accumulation order differs
//! from the reference (which integer addition does not notice).
//!
//! The conv kernels use r6 and r7, which the compiler reserves, by saving
//! them on the stack inside the asm block, with their pointer operands
//! pinned to r11 and lr so that they are neither.
//!
//! The folder holds one file a stage: [`dsp`], the M4 instructions the
//! kernels call; [`requant`], requantization and activation tables;
//! `classic` (the classic network's convolutions and pooling, built
//! without `lenet_max`) or `max` (the max-pooling networks', built with
//! it); [`linear`], the fully connected tail every model shares.

// The tables differ with the model's kind and activations.
#[allow(clippy::all, missing_docs, dead_code)]
mod packed {
    include!(concat!(env!("OUT_DIR"), "/packed.rs"));
}

mod dsp;
mod linear;
mod requant;

#[cfg(not(lenet_max))]
mod classic;
#[cfg(lenet_max)]
mod max;

#[cfg(not(lenet_max))]
pub use classic::{Scratch, infer};
pub use linear::trunk_output;
#[cfg(lenet_max)]
pub use max::{Scratch, infer};

/// The table a conv kernel reads for a channel group, in the order it
/// reads it (`build.rs` fills it): `head`, the biases, the weights and the
/// first channel's requantization constants; the address of the layer's
/// activation table (`None` for an identity table, which is skipped),
/// which the LDM of those constants loads too; `tail`, the other channels'
/// constants.
#[repr(C)]
pub struct ConvTable<const H: usize, const T: usize> {
    head: [u32; H],
    lut: Option<&'static [i8; 256]>,
    tail: [u32; T],
}

impl<const H: usize, const T: usize> ConvTable<H, T> {
    /// The first word; the kernels read the `H + 1 + T` words from here.
    #[inline(always)]
    fn words(&self) -> *const u32 {
        const { assert!(size_of::<Option<&[i8; 256]>>() == 4) };
        core::ptr::from_ref(self).cast()
    }
}
