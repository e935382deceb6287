//! Element-wise helpers that the lane kernels inline: fused multiply-add
//! selection, a vectorisable `exp`, and the activations as zero-sized types.
//!
//! Everything here is `#[inline(always)]` so that it is compiled with the
//! instruction set of the `#[target_feature]` entry point that calls it.

/// An activation known at compile time; the derivative is written in
/// terms of the forward output `y` (what the activation buffers keep).
pub(crate) trait Act: Copy + Send + Sync + 'static {
    /// `y = act(x)` on a vector.
    fn fv<S: Simd>(x: S::V) -> S::V;
    /// `act'(x)` expressed through `y = act(x)`, on a vector.
    fn dfv<S: Simd>(y: S::V) -> S::V;
}

/// `1 / (1 + e^-x)`; `y' = y (1 - y)`.
#[derive(Clone, Copy)]
pub(crate) struct Sigmoid;
/// `max(x, 0)`; `y' = [y > 0]`.
#[derive(Clone, Copy)]
pub(crate) struct Relu;
/// `tanh x = 1 - 2 / (1 + e^{2x})`; `y' = 1 - y^2`.
#[derive(Clone, Copy)]
pub(crate) struct Tanh;

impl Act for Sigmoid {
    #[inline(always)]
    fn fv<S: Simd>(x: S::V) -> S::V {
        let one = S::splat(1.0);
        S::recip(S::add(one, S::exp(S::sub(S::zero(), x))))
    }
    #[inline(always)]
    fn dfv<S: Simd>(y: S::V) -> S::V {
        S::mul(y, S::sub(S::splat(1.0), y))
    }
}

impl Act for Relu {
    #[inline(always)]
    fn fv<S: Simd>(x: S::V) -> S::V {
        S::max(x, S::zero())
    }
    #[inline(always)]
    fn dfv<S: Simd>(y: S::V) -> S::V {
        // y = max(x, 0) >= 0, so [y > 0] = [y != 0].
        S::select_eq(y, S::zero(), S::zero(), S::splat(1.0))
    }
}

impl Act for Tanh {
    #[inline(always)]
    fn fv<S: Simd>(x: S::V) -> S::V {
        let one = S::splat(1.0);
        let e = S::exp(S::add(x, x));
        let r = S::recip(S::add(one, e));
        S::sub(one, S::add(r, r))
    }
    #[inline(always)]
    fn dfv<S: Simd>(y: S::V) -> S::V {
        S::sub(S::splat(1.0), S::mul(y, y))
    }
}

/// A vector of `LANES` `f32`, one per image of a block. Implemented with
/// the intrinsics of one instruction set; the types are only instantiated
/// after that set was detected (see [`Isa::detect`]).
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// Images per vector.
    const LANES: usize;
    /// The register type.
    type V: Copy;
    /// All lanes `x`.
    fn splat(x: f32) -> Self::V;
    /// All lanes 0.
    #[inline(always)]
    fn zero() -> Self::V {
        Self::splat(0.0)
    }
    /// Loads `s[..LANES]`.
    fn load(s: &[f32]) -> Self::V;
    /// Stores into `s[..LANES]`.
    fn store(s: &mut [f32], v: Self::V);
    /// `a + b`.
    fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `1 / a` for `a >= 1` to about 1 ulp (division is slow: the
    /// x86 sets refine the hardware estimate by one Newton step).
    #[inline(always)]
    fn recip(a: Self::V) -> Self::V {
        Self::div(Self::splat(1.0), a)
    }
    /// `a * b + c` (fused where the set has FMA).
    fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Lane-wise maximum.
    fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum.
    fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `a == b ? t : f` lane-wise.
    fn select_eq(a: Self::V, b: Self::V, t: Self::V, f: Self::V) -> Self::V;
    /// `2^n` where `t = n + 1.5 * 2^23` holds the integer `n` in its low
    /// mantissa bits (see [`Simd::exp`]).
    fn pow2_magic(t: Self::V) -> Self::V;
    /// `e^x` for `x` in `[-87, 88]` (clamped outside), relative error
    /// about 1e-7: Cody-Waite range reduction `x = n ln 2 + r`, the Cephes
    /// `expf` polynomial for `e^r`, and `2^n` built in the exponent bits.
    #[inline(always)]
    fn exp(x: Self::V) -> Self::V {
        let x = Self::min(Self::max(x, Self::splat(-87.0)), Self::splat(88.0));
        let t = Self::fma(x, Self::splat(LOG2E), Self::splat(MAGIC));
        let n = Self::sub(t, Self::splat(MAGIC));
        let r = Self::fma(n, Self::splat(-LN2_HI), x);
        let r = Self::fma(n, Self::splat(-LN2_LO), r);
        let mut p = Self::splat(EXP_P[0]);
        for c in &EXP_P[1..] {
            p = Self::fma(p, r, Self::splat(*c));
        }
        let er = Self::fma(Self::mul(p, r), r, Self::add(r, Self::splat(1.0)));
        Self::mul(er, Self::pow2_magic(t))
    }
}

const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds to the nearest integer, kept in the low
/// mantissa bits.
const MAGIC: f32 = 12_582_912.0;
/// Cephes `expf` polynomial for `(e^r - 1 - r) / r^2`, highest degree first.
const EXP_P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Portable vectors of 4 lanes (plain arrays; LLVM maps them to SSE).
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 4;
    type V = [f32; 4];
    #[inline(always)]
    fn splat(x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    fn load(s: &[f32]) -> [f32; 4] {
        s[..4].try_into().expect("4 lanes")
    }
    #[inline(always)]
    fn store(s: &mut [f32], v: [f32; 4]) {
        s[..4].copy_from_slice(&v);
    }
    #[inline(always)]
    fn add(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sub(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn div(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| a[i] / b[i])
    }
    #[inline(always)]
    fn fma(a: [f32; 4], b: [f32; 4], c: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn max(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn min(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| if a[i] < b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn select_eq(a: [f32; 4], b: [f32; 4], t: [f32; 4], f: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| if a[i] == b[i] { t[i] } else { f[i] })
    }
    #[inline(always)]
    fn pow2_magic(t: [f32; 4]) -> [f32; 4] {
        core::array::from_fn(|i| {
            let n = t[i].to_bits().wrapping_sub(MAGIC.to_bits());
            f32::from_bits(n.wrapping_add(127) << 23)
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 and AVX-512 vectors. SAFETY (every `unsafe` block below): the
    //! intrinsics need their instruction set, and these types are only
    //! used by engines that `Isa::detect` chose on this processor; loads
    //! and stores go through slices of at least `LANES` elements.
    use super::{MAGIC, Simd};
    use core::arch::x86_64::*;

    /// 8 lanes of AVX2 with FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;
    /// 16 lanes of AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    macro_rules! simd_impl {
        ($t:ty, $lanes:literal, $v:ty, $set1:ident, $loadu:ident, $storeu:ident, $add:ident, $sub:ident,
         $mul:ident, $div:ident, $fma:ident, $max:ident, $min:ident, $cast_i:ident, $cast_f:ident,
         $sub32:ident, $add32:ident, $sll:ident, $set1i:ident, $rcp:ident, $fnmadd:ident,
         |$a:ident, $b:ident, $tt:ident, $ff:ident| $sel:expr) => {
            impl Simd for $t {
                const LANES: usize = $lanes;
                type V = $v;
                #[inline(always)]
                fn splat(x: f32) -> $v {
                    unsafe { $set1(x) }
                }
                #[inline(always)]
                fn load(s: &[f32]) -> $v {
                    let s = &s[..$lanes];
                    unsafe { $loadu(s.as_ptr()) }
                }
                #[inline(always)]
                fn store(s: &mut [f32], v: $v) {
                    let s = &mut s[..$lanes];
                    unsafe { $storeu(s.as_mut_ptr(), v) }
                }
                #[inline(always)]
                fn add(a: $v, b: $v) -> $v {
                    unsafe { $add(a, b) }
                }
                #[inline(always)]
                fn sub(a: $v, b: $v) -> $v {
                    unsafe { $sub(a, b) }
                }
                #[inline(always)]
                fn mul(a: $v, b: $v) -> $v {
                    unsafe { $mul(a, b) }
                }
                #[inline(always)]
                fn div(a: $v, b: $v) -> $v {
                    unsafe { $div(a, b) }
                }
                #[inline(always)]
                fn fma(a: $v, b: $v, c: $v) -> $v {
                    unsafe { $fma(a, b, c) }
                }
                #[inline(always)]
                fn recip(a: $v) -> $v {
                    // r1 = r0 (2 - a r0)
                    unsafe {
                        let r0 = $rcp(a);
                        $mul(r0, $fnmadd(a, r0, $set1(2.0)))
                    }
                }
                #[inline(always)]
                fn max(a: $v, b: $v) -> $v {
                    unsafe { $max(a, b) }
                }
                #[inline(always)]
                fn min(a: $v, b: $v) -> $v {
                    unsafe { $min(a, b) }
                }
                #[inline(always)]
                fn select_eq($a: $v, $b: $v, $tt: $v, $ff: $v) -> $v {
                    unsafe { $sel }
                }
                #[inline(always)]
                fn pow2_magic(t: $v) -> $v {
                    unsafe {
                        let n = $sub32($cast_i(t), $set1i(MAGIC.to_bits() as i32));
                        $cast_f($sll::<23>($add32(n, $set1i(127))))
                    }
                }
            }
        };
    }

    simd_impl!(
        Avx512,
        16,
        __m512,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_div_ps,
        _mm512_fmadd_ps,
        _mm512_max_ps,
        _mm512_min_ps,
        _mm512_castps_si512,
        _mm512_castsi512_ps,
        _mm512_sub_epi32,
        _mm512_add_epi32,
        _mm512_slli_epi32,
        _mm512_set1_epi32,
        _mm512_rcp14_ps,
        _mm512_fnmadd_ps,
        |a, b, t, f| _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b), f, t)
    );
    simd_impl!(
        Avx2,
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_div_ps,
        _mm256_fmadd_ps,
        _mm256_max_ps,
        _mm256_min_ps,
        _mm256_castps_si256,
        _mm256_castsi256_ps,
        _mm256_sub_epi32,
        _mm256_add_epi32,
        _mm256_slli_epi32,
        _mm256_set1_epi32,
        _mm256_rcp_ps,
        _mm256_fnmadd_ps,
        |a, b, t, f| _mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b))
    );
}

/// The widest instruction set this processor runs, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + FMA: 16 images per lane vector.
    Avx512,
    /// AVX2 + FMA: 8 images per lane vector.
    Avx2,
    /// Baseline (SSE2 on x86-64): 4 images per lane vector, no FMA.
    Generic,
}

impl Isa {
    /// Detects the best instruction set of this processor.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }

    /// Images per lane vector (the batch block of the lane kernels).
    pub const fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Generic => 4,
        }
    }
}
