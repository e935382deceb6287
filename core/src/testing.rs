//! What the ops' unit tests share: a seeded generator, tolerant
//! comparison and central differences.

/// Tiny deterministic PRNG (SplitMix64) so the tests need nothing else.
pub(crate) struct TestRng(pub(crate) u64);

impl TestRng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub(crate) fn fill(&mut self, s: &mut [f32]) {
        for v in s {
            *v = self.next_f32();
        }
    }

    /// `s` filled with a random permutation of `0, step, 2*step, ...`,
    /// shifted to be centred on zero: no two values within `step`.
    pub(crate) fn fill_distinct(&mut self, s: &mut [f32], step: f32) {
        let n = s.len();
        for (i, v) in s.iter_mut().enumerate() {
            *v = (i as f32 - n as f32 / 2.0) * step;
        }
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            s.swap(i, j);
        }
    }
}

/// `start, start + 1, ...` row-major, like `torch.arange(..).reshape(H, W)`.
pub(crate) fn arange<const H: usize, const W: usize>(start: f32) -> [[f32; W]; H] {
    core::array::from_fn(|r| core::array::from_fn(|c| start + (r * W + c) as f32))
}

/// Panics, naming the worst element, unless every `|got - want| <= atol + rtol * |want|`.
pub(crate) fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len());
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess.is_nan() || excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(
        worst.1 <= 0.0,
        "element {i}: got {}, want {} (atol {atol}, rtol {rtol})",
        got[i],
        want[i]
    );
}

/// Central differences `(L(p + eps) - L(p - eps)) / (2 eps)` for each of
/// `n` parameters; `loss(j, d)` evaluates `L` with parameter `j` moved by `d`.
pub(crate) fn numeric_grad(n: usize, loss: impl Fn(usize, f32) -> f64) -> Vec<f32> {
    const EPS: f32 = 1e-2;
    (0..n)
        .map(|j| ((loss(j, EPS) - loss(j, -EPS)) / (2.0 * f64::from(EPS))) as f32)
        .collect()
}

/// `sum_i y[i] * g[i]` in f64: the loss whose gradient with respect to `y` is `g`.
pub(crate) fn dot(y: &[f32], g: &[f32]) -> f64 {
    y.iter()
        .zip(g)
        .map(|(&y, &g)| f64::from(y) * f64::from(g))
        .sum()
}
