//! Optimizers: SGD with momentum and Adam, with PyTorch's update rules.
//!
//! A model's parameters, its gradients and the optimizer's state buffers
//! all have the same type `P`, a [`Parameters`] implementor (a model's
//! `Params` struct, or a plain `[f32; N]`). The optimizer walks the tensors
//! of `P` in order, so it never needs to know the model's shapes. Nothing
//! here allocates: the state lives wherever the caller puts it (a `static`
//! on the microcontroller, a `Box` on the workstation).
//!
//! Gradients are *not* cleared by a step: call
//! [`grads.fill(0.0)`](Parameters::fill) before accumulating the next batch.
//!
//! # Examples
//!
//! ```
//! use lenet_core::optim::{Adam, AdamState, Parameters};
//! // Minimise f(p) = sum (p - 3)^2 with Adam.
//! let opt = Adam::new(0.1);
//! let mut p = [0.0f32; 4];
//! let mut g = [0.0f32; 4];
//! let mut state = AdamState::new([0.0f32; 4]);
//! for _ in 0..500 {
//!     g.fill(0.0);
//!     for (gi, &pi) in g.iter_mut().zip(&p) {
//!         *gi += 2.0 * (pi - 3.0); // df/dp
//!     }
//!     opt.step(&mut p, &g, &mut state);
//! }
//! assert!(p.iter().all(|&v| (v - 3.0).abs() < 1e-2));
//! assert_eq!(state.t, 500);
//! ```

/// A fixed set of `f32` tensors, visited in a fixed order (PyTorch's
/// `state_dict` order for the models). Implemented for `[f32; N]` and by
/// every model's `Params` struct.
///
/// # Examples
///
/// ```
/// use lenet_core::optim::Parameters;
/// let mut p = [1.0f32, 2.0, 3.0];
/// assert_eq!(p.num_params(), 3);
/// p.fill(0.0);
/// assert_eq!(p, [0.0; 3]);
/// ```
pub trait Parameters {
    /// The tensors, each flattened to a slice, in `state_dict` order.
    fn tensors(&self) -> impl Iterator<Item = &[f32]>;

    /// The same tensors, mutably, in the same order as [`tensors`](Self::tensors).
    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]>;

    /// Total number of scalars in all tensors.
    fn num_params(&self) -> usize {
        self.tensors().map(<[f32]>::len).sum()
    }

    /// Sets every scalar to `v` (`fill(0.0)` is PyTorch's `zero_grad`).
    fn fill(&mut self, v: f32) {
        for t in self.tensors_mut() {
            t.fill(v);
        }
    }
}

impl<const N: usize> Parameters for [f32; N] {
    fn tensors(&self) -> impl Iterator<Item = &[f32]> {
        core::iter::once(self.as_slice())
    }

    fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
        core::iter::once(self.as_mut_slice())
    }
}

/// An optimizer that updates parameters `P` from gradients `P`, keeping a
/// per-parameter state. Lets training code be generic over [`Sgd`] and
/// [`Adam`].
///
/// # Examples
///
/// ```
/// use lenet_core::optim::{Optimizer, Sgd};
/// fn descend<O: Optimizer>(opt: &O, p: &mut [f32; 2], steps: usize) {
///     let mut state = opt.new_state([0.0f32; 2]);
///     for _ in 0..steps {
///         let g = p.map(|v| 2.0 * v); // d/dp of p^2
///         opt.step(p, &g, &mut state);
///     }
/// }
/// let mut p = [1.0f32, -2.0];
/// descend(&Sgd::new(0.25), &mut p, 1);
/// assert_eq!(p, [0.5, -1.0]);
/// ```
pub trait Optimizer {
    /// The optimizer's state for parameters of type `P`.
    type State<P: Parameters>;

    /// A fresh state (no step taken yet) built from `zero`, all zeros,
    /// which is moved or cloned into the state's buffers.
    fn new_state<P: Parameters + Clone>(&self, zero: P) -> Self::State<P>;

    /// Puts `state` back to its fresh value in place (no step taken, all
    /// buffers zero), without building a new one.
    fn reset_state<P: Parameters>(&self, state: &mut Self::State<P>);

    /// One update of `params` from `grads`.
    fn step<P: Parameters>(&self, params: &mut P, grads: &P, state: &mut Self::State<P>);
}

/// Stochastic gradient descent with momentum and L2 weight decay, exactly
/// as PyTorch's `torch.optim.SGD` (no dampening, no Nesterov):
///
/// ```text
/// g   = grad + weight_decay * p
/// buf = g                          on the first step
/// buf = momentum * buf + g         afterwards        (skipped if momentum = 0)
/// p  -= lr * buf                   (p -= lr * g if momentum = 0)
/// ```
///
/// # Examples
///
/// ```
/// use lenet_core::optim::{Sgd, SgdState};
/// const OPT: Sgd = Sgd::new(0.5).with_momentum(0.9);
/// let mut p = [1.0f32];
/// let mut state = SgdState::new([0.0f32]);
/// OPT.step(&mut p, &[1.0], &mut state); // buf = 1
/// assert_eq!(p, [0.5]);
/// OPT.step(&mut p, &[1.0], &mut state); // buf = 0.9 + 1 = 1.9
/// assert_eq!(p, [0.5 - 0.5 * 1.9]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 for plain SGD).
    pub momentum: f32,
    /// L2 penalty added to the gradient (`g += weight_decay * p`).
    pub weight_decay: f32,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`, no momentum, no weight decay.
    pub const fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }

    /// The same optimizer with momentum factor `momentum`.
    pub const fn with_momentum(self, momentum: f32) -> Self {
        Sgd { momentum, ..self }
    }

    /// The same optimizer with weight decay `weight_decay`.
    pub const fn with_weight_decay(self, weight_decay: f32) -> Self {
        Sgd {
            weight_decay,
            ..self
        }
    }

    /// The update of one scalar `p` with gradient `g` and momentum buffer
    /// `buf` (see [`Sgd`] for the formula); `first` on the first step. The
    /// one definition that every back end mirrors: the host's CPU trainer
    /// calls it, the CUDA kernel `sgd_update` writes the same operations in
    /// the same order.
    #[inline]
    pub fn update(&self, p: &mut f32, g: f32, buf: &mut f32, first: bool) {
        let mut d = g;
        if self.weight_decay != 0.0 {
            d += self.weight_decay * *p;
        }
        if self.momentum != 0.0 {
            *buf = if first { d } else { self.momentum * *buf + d };
            d = *buf;
        }
        *p -= self.lr * d;
    }

    /// One SGD update of `params` from `grads` (see [`Sgd`] for the formula).
    pub fn step<P: Parameters>(&self, params: &mut P, grads: &P, state: &mut SgdState<P>) {
        let first = state.steps == 0;
        let tensors = params
            .tensors_mut()
            .zip(grads.tensors())
            .zip(state.velocity.tensors_mut());
        for ((p, g), buf) in tensors {
            debug_assert!(p.len() == g.len() && p.len() == buf.len());
            for ((p, &g), buf) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
                self.update(p, g, buf, first);
            }
        }
        state.steps = state.steps.saturating_add(1);
    }
}

/// State of [`Sgd`] for parameters `P`: the momentum buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdState<P> {
    /// Momentum buffer, one scalar per parameter (unused without momentum).
    pub velocity: P,
    /// Number of steps taken.
    pub steps: u32,
}

impl<P> SgdState<P> {
    /// A fresh state; `zero` (all zeros) becomes the momentum buffer.
    pub const fn new(zero: P) -> Self {
        SgdState {
            velocity: zero,
            steps: 0,
        }
    }
}

impl<P: Parameters> SgdState<P> {
    /// Back to the fresh state, in place.
    pub fn reset(&mut self) {
        self.velocity.fill(0.0);
        self.steps = 0;
    }
}

impl Optimizer for Sgd {
    type State<P: Parameters> = SgdState<P>;

    fn new_state<P: Parameters + Clone>(&self, zero: P) -> SgdState<P> {
        SgdState::new(zero)
    }

    fn step<P: Parameters>(&self, params: &mut P, grads: &P, state: &mut SgdState<P>) {
        Sgd::step(self, params, grads, state);
    }

    fn reset_state<P: Parameters>(&self, state: &mut SgdState<P>) {
        state.reset();
    }
}

/// Adam, exactly as PyTorch's `torch.optim.Adam` (no AMSGrad); at step `t`
/// (counted from 1):
///
/// ```text
/// g  = grad + weight_decay * p
/// m  = beta1 * m + (1 - beta1) * g          (as PyTorch: m.lerp_(g, 1 - beta1))
/// v  = beta2 * v + (1 - beta2) * g * g
/// bc1 = 1 - beta1^t,  bc2 = 1 - beta2^t
/// denom = sqrt(v) / sqrt(bc2) + eps
/// p -= (lr / bc1) * m / denom
/// ```
///
/// The per-step scalars (`bc1`, `bc2`, `lr / bc1`, `sqrt(bc2)`) are computed
/// in `f64`, as PyTorch computes them in Python floats, then rounded to `f32`.
///
/// # Examples
///
/// ```
/// use lenet_core::optim::{Adam, AdamState};
/// const OPT: Adam = Adam::new(0.01);
/// let mut p = [1.0f32, 1.0];
/// let mut state = AdamState::new([0.0f32; 2]);
/// OPT.step(&mut p, &[0.5, -20.0], &mut state);
/// // The first step moves every parameter by about lr against its gradient.
/// assert!((p[0] - 0.99).abs() < 1e-6 && (p[1] - 1.01).abs() < 1e-6);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first-moment average (PyTorch `betas[0]`, default 0.9).
    pub beta1: f32,
    /// Decay of the second-moment average (PyTorch `betas[1]`, default 0.999).
    pub beta2: f32,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f32,
    /// L2 penalty added to the gradient (`g += weight_decay * p`; not AdamW).
    pub weight_decay: f32,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults: betas
    /// (0.9, 0.999), eps 1e-8, no weight decay.
    pub const fn new(lr: f32) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// The same optimizer with betas `(beta1, beta2)`.
    pub const fn with_betas(self, beta1: f32, beta2: f32) -> Self {
        Adam {
            beta1,
            beta2,
            ..self
        }
    }

    /// The same optimizer with `eps`.
    pub const fn with_eps(self, eps: f32) -> Self {
        Adam { eps, ..self }
    }

    /// The same optimizer with weight decay `weight_decay`.
    pub const fn with_weight_decay(self, weight_decay: f32) -> Self {
        Adam {
            weight_decay,
            ..self
        }
    }

    /// The per-step scalars of step `t` (counted from 1), computed in `f64`
    /// as PyTorch computes them in Python floats, then rounded to `f32`.
    pub fn scalars(&self, t: u64) -> AdamScalars {
        let t = t as f64;
        let bc1 = 1.0 - libm::pow(self.beta1 as f64, t);
        let bc2 = 1.0 - libm::pow(self.beta2 as f64, t);
        AdamScalars {
            step_size: (self.lr as f64 / bc1) as f32,
            bc2_sqrt: libm::sqrt(bc2) as f32,
            w1: (1.0 - self.beta1 as f64) as f32,
            w2: (1.0 - self.beta2 as f64) as f32,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// One Adam update of `params` from `grads` (see [`Adam`] for the formula).
    pub fn step<P: Parameters>(&self, params: &mut P, grads: &P, state: &mut AdamState<P>) {
        state.t = state.t.saturating_add(1);
        let k = self.scalars(u64::from(state.t));
        let tensors = params
            .tensors_mut()
            .zip(grads.tensors())
            .zip(state.m.tensors_mut())
            .zip(state.v.tensors_mut());
        for (((p, g), m), v) in tensors {
            debug_assert!(p.len() == g.len() && p.len() == m.len() && p.len() == v.len());
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                k.update(p, g, m, v);
            }
        }
    }
}

/// The scalars of one Adam step ([`Adam::scalars`]), shared by every
/// parameter: what an optimizer kernel receives.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct AdamScalars {
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    /// `1 - beta1`, the weight of `m.lerp_(g, w1)`.
    pub w1: f32,
    /// `1 - beta2`.
    pub w2: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

impl AdamScalars {
    /// The update of one scalar `p` with gradient `g` and moments `m`, `v`
    /// (see [`Adam`] for the formula). The one definition that every back
    /// end mirrors: the host's CPU trainer calls it, the CUDA kernel
    /// `adam_update` writes the same operations in the same order.
    #[inline]
    pub fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let mut g = g;
        if self.weight_decay != 0.0 {
            g += self.weight_decay * *p;
        }
        // m.lerp_(g, w1), in PyTorch's two-branch form
        *m = if self.w1.abs() < 0.5 {
            *m + self.w1 * (g - *m)
        } else {
            g - (g - *m) * (1.0 - self.w1)
        };
        *v = *v * self.beta2 + self.w2 * g * g;
        let denom = crate::math::sqrt(*v) / self.bc2_sqrt + self.eps;
        *p += -self.step_size * *m / denom;
    }
}

/// State of [`Adam`] for parameters `P`: both moment averages and the step
/// count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState<P> {
    /// First-moment (mean) average of the gradients.
    pub m: P,
    /// Second-moment (uncentred variance) average of the gradients.
    pub v: P,
    /// Number of steps taken.
    pub t: u32,
}

impl<P: Clone> AdamState<P> {
    /// A fresh state; `zero` (all zeros) is cloned into both moment buffers.
    ///
    /// For a `static` state use [`from_zeros`](Self::from_zeros), which is
    /// a `const fn`.
    pub fn new(zero: P) -> Self {
        AdamState {
            m: zero.clone(),
            v: zero,
            t: 0,
        }
    }
}

impl<P> AdamState<P> {
    /// A fresh state from two all-zero buffers (`const`, so it can
    /// initialise a `static`).
    pub const fn from_zeros(m: P, v: P) -> Self {
        AdamState { m, v, t: 0 }
    }
}

impl<P: Parameters> AdamState<P> {
    /// Back to the fresh state, in place.
    pub fn reset(&mut self) {
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.t = 0;
    }
}

impl Optimizer for Adam {
    type State<P: Parameters> = AdamState<P>;

    fn new_state<P: Parameters + Clone>(&self, zero: P) -> AdamState<P> {
        AdamState::new(zero)
    }

    fn step<P: Parameters>(&self, params: &mut P, grads: &P, state: &mut AdamState<P>) {
        Adam::step(self, params, grads, state);
    }

    fn reset_state<P: Parameters>(&self, state: &mut AdamState<P>) {
        state.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tensors of different lengths, to check that the optimizers walk
    /// every tensor of a multi-tensor `Parameters`.
    #[derive(Clone, Debug, PartialEq)]
    struct Two {
        a: [f32; 2],
        b: [f32; 3],
    }

    impl Parameters for Two {
        fn tensors(&self) -> impl Iterator<Item = &[f32]> {
            [self.a.as_slice(), self.b.as_slice()].into_iter()
        }
        fn tensors_mut(&mut self) -> impl Iterator<Item = &mut [f32]> {
            [self.a.as_mut_slice(), self.b.as_mut_slice()].into_iter()
        }
    }

    const ZERO: Two = Two {
        a: [0.0; 2],
        b: [0.0; 3],
    };

    #[test]
    fn parameters_defaults() {
        let mut t = Two {
            a: [1.0, 2.0],
            b: [3.0, 4.0, 5.0],
        };
        assert_eq!(t.num_params(), 5);
        assert_eq!(
            t.tensors().map(|s| s.len()).collect::<std::vec::Vec<_>>(),
            [2, 3]
        );
        t.fill(7.0);
        assert_eq!(
            t,
            Two {
                a: [7.0; 2],
                b: [7.0; 3]
            }
        );
    }

    #[test]
    fn sgd_plain_and_weight_decay() {
        let mut p = Two {
            a: [1.0, -1.0],
            b: [0.5, 0.0, 2.0],
        };
        let g = Two {
            a: [0.5, 0.5],
            b: [-1.0, 1.0, 0.0],
        };
        let mut st = SgdState::new(ZERO);
        Sgd::new(0.1).step(&mut p, &g, &mut st);
        assert_eq!(p.a, [1.0 - 0.05, -1.0 - 0.05]);
        assert_eq!(p.b, [0.5 + 0.1, -0.1, 2.0]);
        assert_eq!(st.velocity, ZERO); // no momentum buffer without momentum

        // g + wd * p = 1 + 0.5 * 2 = 2; p = 2 - 0.25 * 2 = 1.5
        let mut q = [2.0f32];
        Sgd::new(0.25)
            .with_weight_decay(0.5)
            .step(&mut q, &[1.0], &mut SgdState::new([0.0]));
        assert_eq!(q, [1.5]);
    }

    /// Momentum 0.5, lr 0.1, gradients 1, 2, -4 by hand:
    /// buf = 1, then 0.5 + 2 = 2.5, then 1.25 - 4 = -2.75;
    /// p = 1 - 0.1 = 0.9, 0.9 - 0.25 = 0.65, 0.65 + 0.275 = 0.925.
    #[test]
    fn sgd_momentum_sequence_by_hand() {
        let opt = Sgd::new(0.1).with_momentum(0.5);
        let mut p = [1.0f32];
        let mut st = opt.new_state([0.0f32]);
        let mut seen = std::vec::Vec::new();
        for g in [1.0f32, 2.0, -4.0] {
            opt.step(&mut p, &[g], &mut st);
            seen.push((st.velocity[0], p[0]));
        }
        let want = [(1.0, 0.9), (2.5, 0.65), (-2.75, 0.925)];
        for ((buf, p), (wb, wp)) in seen.iter().zip(want) {
            assert!((buf - wb).abs() < 1e-6 && (p - wp).abs() < 1e-6, "{seen:?}");
        }
        assert_eq!(st.steps, 3);
        opt.reset_state(&mut st);
        assert_eq!(st, SgdState::new([0.0]));
    }

    /// The same update in f64, straight from the formula, for reference.
    fn adam_f64(opt: &Adam, p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32) {
        let (b1, b2) = (opt.beta1 as f64, opt.beta2 as f64);
        for i in 0..p.len() {
            let g = g[i] + opt.weight_decay as f64 * p[i];
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + opt.eps as f64;
            p[i] -= opt.lr as f64 / (1.0 - b1.powi(t)) * m[i] / denom;
        }
    }

    #[test]
    fn adam_matches_f64_formula() {
        let opt = Adam::new(0.01).with_weight_decay(0.1);
        let mut p = Two {
            a: [1.0, -0.5],
            b: [0.25, 2.0, -3.0],
        };
        let mut st = opt.new_state(ZERO);
        let mut p64: std::vec::Vec<f64> = p.tensors().flatten().map(|&x| x as f64).collect();
        let (mut m64, mut v64) = (std::vec![0.0f64; 5], std::vec![0.0f64; 5]);
        for t in 1..=20 {
            // gradients that change sign and scale over time
            let g = Two {
                a: [0.3 * t as f32 - 2.0, 1e-3],
                b: [-0.7, (t as f32).sin(), 5.0 / t as f32],
            };
            let g64: std::vec::Vec<f64> = g.tensors().flatten().map(|&x| x as f64).collect();
            opt.step(&mut p, &g, &mut st);
            adam_f64(&opt, &mut p64, &mut m64, &mut v64, &g64, t);
            for (got, want) in p.tensors().flatten().zip(&p64) {
                assert!((*got as f64 - want).abs() < 1e-5, "t={t}: {got} vs {want}");
            }
        }
        assert_eq!(st.t, 20);
        opt.reset_state(&mut st);
        assert_eq!(st, AdamState::new(ZERO));
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        // f(p) = sum_i c_i (p_i - target_i)^2 with very different curvatures:
        // Adam's per-parameter scaling handles them alike.
        let c = [100.0f32, 1.0, 0.01];
        let target = [1.0f32, -2.0, 0.5];
        let f = |p: &[f32; 3]| -> f32 { (0..3).map(|i| c[i] * (p[i] - target[i]).powi(2)).sum() };
        let opt = Adam::new(0.05);
        let mut p = [0.0f32; 3];
        let mut g = [0.0f32; 3];
        let mut st = AdamState::from_zeros([0.0; 3], [0.0; 3]);
        let f0 = f(&p);
        for _ in 0..2000 {
            g.fill(0.0);
            for i in 0..3 {
                g[i] += 2.0 * c[i] * (p[i] - target[i]);
            }
            opt.step(&mut p, &g, &mut st);
        }
        assert!(f(&p) < 1e-4 * f0, "f = {} from {f0}", f(&p));
        for i in 0..3 {
            assert!((p[i] - target[i]).abs() < 2e-2, "p = {p:?}");
        }
    }

    #[test]
    fn const_construction() {
        const ADAM: Adam = Adam::new(1e-3).with_betas(0.8, 0.99).with_eps(1e-6);
        static STATE: AdamState<[f32; 4]> = AdamState::from_zeros([0.0; 4], [0.0; 4]);
        static SGD_STATE: SgdState<[f32; 4]> = SgdState::new([0.0; 4]);
        assert_eq!(
            (ADAM.beta1, ADAM.beta2, ADAM.eps, ADAM.weight_decay),
            (0.8, 0.99, 1e-6, 0.0)
        );
        assert_eq!(STATE.t + SGD_STATE.steps, 0);
    }
}
