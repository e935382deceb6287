//! The model in flash and the inference entry point of the programs.
//!
//! `build.rs` turns the `.q8` file into [`MODEL`], a `static` of lenet-core's
//! `QuantLeNet` (flash, no RAM). [`Model::classify`] runs lenet-core's
//! integer reference (`QuantLeNet::infer`), or, unless the `reference`
//! feature is on (or the model fails a condition `build.rs` checks), the
//! Cortex-M4 kernels of [`crate::fast`] for the model's kind, which equal
//! it bit for bit.

#[allow(clippy::all, missing_docs)]
mod generated {
    use lenet_core::quant::QuantAct::*;
    use lenet_core::quant::*;
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

pub use generated::{MODEL, MODEL_CRC, Net};

use lenet_core::head::{Head, Tap, dequantize};

/// Whether [`Model::classify`] runs the Cortex-M4 kernels (`true`) or
/// lenet-core's reference.
pub const FAST: bool = cfg!(all(lenet_fast, not(feature = "reference")));

#[cfg(all(lenet_fast, not(feature = "reference")))]
use crate::fast::{Scratch, infer};
#[cfg(not(all(lenet_fast, not(feature = "reference"))))]
use lenet_core::quant::Scratch;

#[cfg(not(all(lenet_fast, not(feature = "reference"))))]
fn infer(scratch: &mut Scratch, image: &[u8; 784]) -> [i8; 10] {
    MODEL.infer(scratch, image)
}

/// An inference engine: the model in flash plus its working memory.
pub struct Model {
    scratch: Scratch,
}

impl Model {
    /// The embedded model with zeroed working memory.
    pub const fn new() -> Self {
        Self {
            scratch: Scratch::new(),
        }
    }

    /// The ten int8 logits of a raw 28×28 image (row-major pixels).
    pub fn classify(&mut self, logits: &mut [i8; 10], image: &[u8; 784]) {
        *logits = infer(&mut self.scratch, image);
    }

    /// The input features of a head trained on the device (see
    /// `lenet_core::head`) for the image last classified: the trunk
    /// activations `H::TAP` names, dequantized.
    pub fn head_input<H: Head>(&self, x: &mut H::Input) {
        let q = H::input_quant(&MODEL);
        let fc1 = H::TAP == Tap::Fc1;
        #[cfg(all(lenet_fast, not(feature = "reference")))]
        let centred = crate::fast::trunk_output(&self.scratch, fc1);
        // lenet-core's `infer` leaves fc1's activations in `a`, fc2's in `b`.
        #[cfg(not(all(lenet_fast, not(feature = "reference"))))]
        let centred = if fc1 {
            &self.scratch.a[..120]
        } else {
            &self.scratch.b[..84]
        }
        .iter()
        .map(|&v| i32::from(v) - q.zero_point);
        dequantize(x.as_mut(), q.scale, centred);
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}
