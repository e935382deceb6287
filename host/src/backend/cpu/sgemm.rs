//! Single-precision matrix product with strides, for the layer-list
//! trainer: `C = A B + beta C`, `A` of `M x K`, `B` of `K x N`, `C` of
//! `M x N`, each addressed as `ptr[row * rs + col * cs]`.
//!
//! The product is single-threaded (the trainer splits the batch over its
//! threads) and its summation order depends only on the sizes, so equal
//! inputs give equal bits on one processor. The kernel `gemm` picks
//! depends on the instruction set (AVX-512, AVX2 + FMA, scalar), so, as
//! with the LeNet kernels, the bits differ between machines; the tests
//! hold whichever path the machine runs to the plain-loop reference
//! (`reference`) within tolerance.
//!
//! It is the `gemm` crate (0.19, feature `x86-v4`: AVX-512 kernels chosen
//! at run time, AVX2 or scalar elsewhere) rather than `matrixmultiply` 0.3,
//! whose widest kernels are AVX2 + FMA (and whose `threading` feature
//! splits one product over threads, which the trainer does not want). On
//! an AMD EPYC (Zen 5, 2 cores), the notes' CNN at batch 256 with 2
//! threads (`host bench --model cnn --act relu --threads 2`), both run in
//! turn three times in one sitting on a shared, busy machine: training
//! 1594, 1389, 1315 images/s with `matrixmultiply` against 1732, 1739,
//! 1618 with `gemm`; inference 5169, 4727, 4340 against 5610, 5650, 4824.

/// A matrix view: a slice and its row and column strides.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// Largest index a `rows x cols` view with strides `rs`, `cs` touches.
fn last(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `c = a b + beta c` with `a` of `m x k`, `b` of `k x n` and `c` of
/// `m x n` (row stride `rsc`, column stride `csc`); `beta` is 0 (`c` is
/// overwritten, never read) or 1.
///
/// # Panics
/// If a view is too short for its shape and strides.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    beta: f32,
    a: View<'_>,
    b: View<'_>,
    m: usize,
    n: usize,
    k: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(last(m, n, rsc, csc) < c.len(), "sgemm: c too short");
    if k == 0 {
        if beta == 0.0 {
            for i in 0..m {
                for j in 0..n {
                    c[i * rsc + j * csc] = 0.0;
                }
            }
        }
        return;
    }
    assert!(last(m, k, a.rs, a.cs) < a.data.len(), "sgemm: a too short");
    assert!(last(k, n, b.rs, b.cs) < b.data.len(), "sgemm: b too short");
    // SAFETY: every index the product reads or writes is bounded by the
    // asserts above, and `c` is borrowed mutably, so it aliases nothing.
    unsafe {
        // `gemm` computes `dst = alpha dst + beta lhs rhs`.
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            csc as isize,
            rsc as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            beta,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplies_strided_views() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        // b stored transposed: b[p][j] at j * k + p.
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.5).collect();
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = 1.0 + (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>();
            }
        }
        let mut c = vec![1.0f32; m * n];
        let av = View {
            data: &a,
            rs: k,
            cs: 1,
        };
        let bv = View {
            data: &b,
            rs: 1,
            cs: k,
        };
        sgemm(&mut c, n, 1, 1.0, av, bv, m, n, k);
        assert_eq!(c, want);
        // beta 0 overwrites whatever c held.
        let mut c = vec![f32::NAN; m * n];
        sgemm(&mut c, n, 1, 0.0, av, bv, m, n, k);
        let plus_one: Vec<f32> = c.iter().map(|v| v + 1.0).collect();
        assert_eq!(plus_one, want);
    }
}
