//! Single-precision matrix product with strides, for the layer-list
//! trainer: `C = A B + beta C`, `A` of `M x K`, `B` of `K x N`, `C` of
//! `M x N`, each addressed as `ptr[row * rs + col * cs]`.
//!
//! The product is single-threaded (the trainer splits the batch over its
//! threads) and its summation order depends only on the sizes, so equal
//! inputs give equal bits.

/// Which library computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `matrixmultiply` 0.3 (AVX2 + FMA kernels, no AVX-512).
    MatrixMultiply,
    /// `gemm` 0.19 with its `x86-v4` (AVX-512) kernels.
    Gemm,
}

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
    backend: Backend,
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
        match backend {
            Backend::MatrixMultiply => matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.data.as_ptr(),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr(),
                b.rs as isize,
                b.cs as isize,
                beta,
                c.as_mut_ptr(),
                rsc as isize,
                csc as isize,
            ),
            // `gemm` computes `dst = alpha dst + beta lhs rhs`.
            Backend::Gemm => gemm::gemm(
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
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_multiply_strided_views() {
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
        for backend in [Backend::MatrixMultiply, Backend::Gemm] {
            let mut c = vec![1.0f32; m * n];
            let av = View { data: &a, rs: k, cs: 1 };
            let bv = View { data: &b, rs: 1, cs: k };
            sgemm(backend, &mut c, n, 1, 1.0, av, bv, m, n, k);
            assert_eq!(c, want, "{backend:?}");
        }
    }
}
