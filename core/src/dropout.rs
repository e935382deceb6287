//! Dropout's mask: one definition for every back end.
//!
//! PyTorch's `nn.Dropout(p)` multiplies the input by a noise tensor whose
//! values are `0` with probability `p` and `1 / (1 - p)` otherwise, in
//! training, and is the identity in inference; its gradient is the upstream
//! gradient times the same noise. PyTorch draws the noise from its global
//! generator; here it is a pure function of a seed, the optimizer step, the
//! layer's index in the network and the value's index in the batch tensor
//! (`sample * features + feature`), so the CPU trainer, the CUDA kernels and
//! the emulated device zero the same values, and a resumed run draws what
//! the uninterrupted run would have drawn.
//!
//! # Examples
//!
//! ```
//! use lenet_core::dropout::{mask, scale};
//! let kept = (0..10_000).filter(|&i| mask(7, 1, 12, i, 0.5) != 0.0).count();
//! assert!((4_800..5_200).contains(&kept));
//! assert_eq!(mask(7, 1, 12, 3, 0.0), 1.0);
//! assert_eq!(scale(0.5), 2.0);
//! ```

/// The multiplier of kept values, `1 / (1 - p)` in `f32` (as PyTorch's
/// `noise.div_(1 - p)`).
pub fn scale(p: f32) -> f32 {
    1.0 / (1.0 - p)
}

/// SplitMix64's output function: a bijection of `u64` that mixes every
/// input bit into every output bit.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 24 uniform bits for value `index` of layer `layer` at optimizer step
/// `step` under `seed`.
pub const fn bits(seed: u64, step: u64, layer: u32, index: u64) -> u32 {
    let a = mix64(seed ^ mix64(step.wrapping_add((layer as u64) << 48)));
    (mix64(a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as u32
}

/// Values whose [`bits`] are below this are dropped: `round(p * 2^24)`.
pub fn threshold(p: f32) -> u32 {
    (p * 16_777_216.0 + 0.5) as u32
}

/// The noise value of one element: `0.0` (dropped) or [`scale`]`(p)`.
/// Training multiplies the layer's input and its gradient by it.
pub fn mask(seed: u64, step: u64, layer: u32, index: u64, p: f32) -> f32 {
    if bits(seed, step, layer, index) < threshold(p) {
        0.0
    } else {
        scale(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_p_of_the_values_independently_per_step_and_layer() {
        for p in [0.1f32, 0.5, 0.9] {
            let n = 100_000u64;
            let dropped = (0..n).filter(|&i| mask(1, 5, 3, i, p) == 0.0).count() as f32;
            assert!((dropped / n as f32 - p).abs() < 0.01, "p {p}: {dropped}");
        }
        let same = (0..10_000u64)
            .filter(|&i| (mask(1, 5, 3, i, 0.5) == 0.0) == (mask(1, 6, 3, i, 0.5) == 0.0))
            .count();
        assert!((4_800..5_200).contains(&same), "{same}");
        let same = (0..10_000u64)
            .filter(|&i| (mask(1, 5, 3, i, 0.5) == 0.0) == (mask(1, 5, 4, i, 0.5) == 0.0))
            .count();
        assert!((4_800..5_200).contains(&same), "{same}");
        assert!((0..1000).all(|i| mask(9, 0, 0, i, 0.0) == 1.0));
    }
}
