//! Compile-time geometry markers shared by convolution and pooling.
//!
//! Padding, stride and pooling window are zero-sized marker values whose
//! const parameters carry the numbers, so the operators can check output
//! sizes at compile time:
//!
//! ```
//! use lenet_core::{Padding, Stride, out_size};
//! let _p = Padding::<2, 1>;
//! let _s = Stride::<1, 1>;
//! // floor((n + 2p - k) / s) + 1: padding (2, 1) with kernel (5, 3) keeps 8x8.
//! assert_eq!(out_size(8, 5, 2, 1), 8);
//! assert_eq!(out_size(8, 3, 1, 1), 8);
//! ```

/// Zero padding added on each side: `PH` rows top and bottom, `PW` columns
/// left and right (PyTorch `padding=(PH, PW)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Padding<const PH: usize, const PW: usize>;

/// Step between windows: `SH` rows, `SW` columns (PyTorch `stride=(SH, SW)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stride<const SH: usize, const SW: usize>;

/// Pooling window of `KH` rows by `KW` columns (PyTorch `kernel_size=(KH, KW)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window<const KH: usize, const KW: usize>;

/// Output length of a sliding window along one axis (floor mode):
/// `floor((n + 2p - k) / s) + 1`.
///
/// Returns 0 when the window does not fit (`n + 2p < k`) or `s == 0`.
pub const fn out_size(n: usize, k: usize, p: usize, s: usize) -> usize {
    if s == 0 || n + 2 * p < k {
        0
    } else {
        (n + 2 * p - k) / s + 1
    }
}

/// Compile-time checks shared by convolution and pooling, for an inline
/// `const { }` block: the stride is at least 1 and `OH x OW` is the output
/// of a `KH x KW` window sliding over `H x W` (floor mode). A failure is a
/// compile error.
#[allow(clippy::too_many_arguments)]
pub(crate) const fn check_out_size(
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ph: usize,
    pw: usize,
    sh: usize,
    sw: usize,
    oh: usize,
    ow: usize,
) {
    assert!(sh > 0 && sw > 0, "stride must be at least 1");
    assert!(
        oh == out_size(h, kh, ph, sh),
        "OH != floor((H + 2*PH - KH) / SH) + 1"
    );
    assert!(
        ow == out_size(w, kw, pw, sw),
        "OW != floor((W + 2*PW - KW) / SW) + 1"
    );
}
