//! Element-wise activations and softmax, forward and backward.
//!
//! Plain CPU reference: one loop per function, no tricks.
//!
//! All functions work on flat slices, out of place: outputs first, then
//! inputs. Call them on nested arrays through `as_flattened()` /
//! `as_flattened_mut()` (twice for three dimensions). Backward passes use the
//! forward *output* `y` (which is what the activation structs of the models
//! keep) and *accumulate* into `dx` (`+=`).
//!
//! # Panics
//!
//! Every function panics if its slices differ in length.
//!
//! # Examples
//!
//! ```
//! use lenet_core::activation::Activation;
//! let x = [[-1.0f32, 0.0], [2.0, -3.0]]; // (H, W)
//! let mut y = [[0.0f32; 2]; 2];
//! Activation::Relu.forward(y.as_flattened_mut(), x.as_flattened());
//! assert_eq!(y, [[0.0, 0.0], [2.0, 0.0]]);
//! ```

use crate::math;

/// Logistic sigmoid of one value, `1 / (1 + e^-x)`, in a form that never
/// overflows: `e^x / (1 + e^x)` for negative `x`.
#[inline]
fn sigmoid1(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + math::exp(-x))
    } else {
        let e = math::exp(x);
        e / (1.0 + e)
    }
}

/// Logistic sigmoid: `y[i] = 1 / (1 + e^(-x[i]))`.
///
/// Computed as `e^x / (1 + e^x)` for negative inputs so that `e^(-x)` never
/// overflows: `sigmoid(-100)` is a tiny number, not `0/inf` or NaN.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::sigmoid;
/// let mut y = [0.0f32; 3];
/// sigmoid(&mut y, &[0.0, 100.0, -100.0]);
/// assert_eq!(y[0], 0.5);
/// assert_eq!(y[1], 1.0);
/// assert!(y[2] >= 0.0 && y[2] < 1e-40); // 3.7e-44 (0 with micromath, which has no subnormals)
/// ```
pub fn sigmoid(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "sigmoid: y and x differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = sigmoid1(xi);
    }
}

/// Backward of [`sigmoid`] from its output: `dx[i] += dy[i] * y[i] * (1 - y[i])`.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::sigmoid_backward;
/// let mut dx = [1.0f32];
/// sigmoid_backward(&mut dx, &[2.0], &[0.5]); // sigmoid'(0) = 0.25
/// assert_eq!(dx, [1.5]);
/// ```
pub fn sigmoid_backward(dx: &mut [f32], dy: &[f32], y: &[f32]) {
    assert_eq!(
        dx.len(),
        dy.len(),
        "sigmoid_backward: dx and dy differ in length"
    );
    assert_eq!(
        dx.len(),
        y.len(),
        "sigmoid_backward: dx and y differ in length"
    );
    // d sigmoid(x) / dx = sigmoid(x) * (1 - sigmoid(x)) = y * (1 - y)
    for ((dxi, &dyi), &yi) in dx.iter_mut().zip(dy).zip(y) {
        *dxi += dyi * (yi * (1.0 - yi));
    }
}

/// Rectified linear unit: `y[i] = max(x[i], 0)` (NaN stays NaN, as in PyTorch).
///
/// # Examples
///
/// ```
/// use lenet_core::activation::relu;
/// let mut y = [0.0f32; 3];
/// relu(&mut y, &[-2.0, 0.0, 3.5]);
/// assert_eq!(y, [0.0, 0.0, 3.5]);
/// ```
pub fn relu(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "relu: y and x differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = if xi < 0.0 { 0.0 } else { xi };
    }
}

/// Backward of [`relu`] from its output: `dx[i] += dy[i] * [y[i] > 0]`
/// (gradient 0 at `x = 0`, as PyTorch's `threshold_backward`).
///
/// # Examples
///
/// ```
/// use lenet_core::activation::relu_backward;
/// let mut dx = [0.0f32; 3];
/// relu_backward(&mut dx, &[1.0, 1.0, 1.0], &[0.0, 0.0, 3.5]);
/// assert_eq!(dx, [0.0, 0.0, 1.0]);
/// ```
pub fn relu_backward(dx: &mut [f32], dy: &[f32], y: &[f32]) {
    assert_eq!(
        dx.len(),
        dy.len(),
        "relu_backward: dx and dy differ in length"
    );
    assert_eq!(
        dx.len(),
        y.len(),
        "relu_backward: dx and y differ in length"
    );
    // d relu(x) / dx = 1 if x > 0 else 0, and x > 0 <=> y > 0
    for ((dxi, &dyi), &yi) in dx.iter_mut().zip(dy).zip(y) {
        if yi > 0.0 {
            *dxi += dyi;
        }
    }
}

/// Hyperbolic tangent: `y[i] = tanh(x[i]) = (e^x - e^-x) / (e^x + e^-x)`.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::tanh;
/// let mut y = [0.0f32; 3];
/// tanh(&mut y, &[0.0, 30.0, -30.0]);
/// assert_eq!(y, [0.0, 1.0, -1.0]);
/// ```
pub fn tanh(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "tanh: y and x differ in length");
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = math::tanh(xi);
    }
}

/// Backward of [`tanh`] from its output: `dx[i] += dy[i] * (1 - y[i]^2)`.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::tanh_backward;
/// let mut dx = [0.0f32];
/// tanh_backward(&mut dx, &[3.0], &[0.5]);
/// assert_eq!(dx, [2.25]);
/// ```
pub fn tanh_backward(dx: &mut [f32], dy: &[f32], y: &[f32]) {
    assert_eq!(
        dx.len(),
        dy.len(),
        "tanh_backward: dx and dy differ in length"
    );
    assert_eq!(
        dx.len(),
        y.len(),
        "tanh_backward: dx and y differ in length"
    );
    // d tanh(x) / dx = 1 - tanh(x)^2 = 1 - y^2
    for ((dxi, &dyi), &yi) in dx.iter_mut().zip(dy).zip(y) {
        *dxi += dyi * (1.0 - yi * yi);
    }
}

/// Softmax over the whole slice: `y[i] = e^(x[i] - m) / sum_j e^(x[j] - m)`
/// with `m = max_j x[j]`, so no exponent overflows. An empty slice is left
/// as is.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::softmax;
/// let mut y = [0.0f32; 3];
/// softmax(&mut y, &[1000.0, 1000.0, -1000.0]); // no overflow
/// assert_eq!(y, [0.5, 0.5, 0.0]);
/// ```
pub fn softmax(y: &mut [f32], x: &[f32]) {
    assert_eq!(y.len(), x.len(), "softmax: y and x differ in length");
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = math::exp(xi - m);
        sum += *yi;
    }
    let inv = 1.0 / sum;
    for yi in y.iter_mut() {
        *yi *= inv;
    }
}

/// Backward of [`softmax`] from its output:
/// `dx[i] += y[i] * (dy[i] - sum_j dy[j] * y[j])`.
///
/// # Examples
///
/// ```
/// use lenet_core::activation::softmax_backward;
/// let mut dx = [0.0f32; 2];
/// // A gradient that is the same for every output does not move the input.
/// softmax_backward(&mut dx, &[1.0, 1.0], &[0.25, 0.75]);
/// assert_eq!(dx, [0.0, 0.0]);
/// ```
pub fn softmax_backward(dx: &mut [f32], dy: &[f32], y: &[f32]) {
    assert_eq!(
        dx.len(),
        dy.len(),
        "softmax_backward: dx and dy differ in length"
    );
    assert_eq!(
        dx.len(),
        y.len(),
        "softmax_backward: dx and y differ in length"
    );
    // dy_j/dx_i = y_j * ([i == j] - y_i)
    let dot: f32 = dy.iter().zip(y).map(|(&a, &b)| a * b).sum();
    for ((dxi, &dyi), &yi) in dx.iter_mut().zip(dy).zip(y) {
        *dxi += yi * (dyi - dot);
    }
}

/// An element-wise activation, chosen at run time (LeNet-5 uses
/// [`Sigmoid`](Activation::Sigmoid); [`Relu`](Activation::Relu) trains
/// faster).
///
/// # Examples
///
/// ```
/// use lenet_core::activation::Activation;
/// let act = Activation::parse("relu").unwrap();
/// assert_eq!(act, Activation::Relu);
/// assert_eq!(act.name(), "relu");
/// let mut y = [0.0f32; 2];
/// act.forward(&mut y, &[-1.0, 1.0]);
/// let mut dx = [0.0f32; 2];
/// act.backward(&mut dx, &[5.0, 5.0], &y);
/// assert_eq!(dx, [0.0, 5.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// [`sigmoid`], the activation of the original LeNet-5.
    Sigmoid,
    /// [`relu`].
    Relu,
    /// [`tanh`].
    Tanh,
}

impl Activation {
    /// Every activation, in declaration order.
    pub const ALL: [Activation; 3] = [Activation::Sigmoid, Activation::Relu, Activation::Tanh];

    /// `y = act(x)` element-wise; see [`sigmoid`], [`relu`], [`tanh`].
    ///
    /// # Panics
    ///
    /// If `y` and `x` differ in length.
    pub fn forward(self, y: &mut [f32], x: &[f32]) {
        match self {
            Activation::Sigmoid => sigmoid(y, x),
            Activation::Relu => relu(y, x),
            Activation::Tanh => tanh(y, x),
        }
    }

    /// `dx += dy * act'(x)`, with the derivative written in terms of the
    /// forward output `y`; see [`sigmoid_backward`], [`relu_backward`],
    /// [`tanh_backward`].
    ///
    /// # Panics
    ///
    /// If the slices differ in length.
    pub fn backward(self, dx: &mut [f32], dy: &[f32], y: &[f32]) {
        match self {
            Activation::Sigmoid => sigmoid_backward(dx, dy, y),
            Activation::Relu => relu_backward(dx, dy, y),
            Activation::Tanh => tanh_backward(dx, dy, y),
        }
    }

    /// `act(x)` for one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Sigmoid => sigmoid1(x),
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Tanh => math::tanh(x),
        }
    }

    /// The derivative `act'(x)` written in terms of the output `y = act(x)`:
    /// `y (1 - y)` for sigmoid, `[y > 0]` for ReLU, `1 - y^2` for tanh.
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Tanh => 1.0 - y * y,
        }
    }

    /// `x = act(x)` in place: what the models use, so a layer's output
    /// buffer holds first the pre-activation, then the activation.
    ///
    /// # Examples
    ///
    /// ```
    /// use lenet_core::activation::Activation;
    /// let mut x = [[-1.0f32, 2.0]];
    /// Activation::Relu.forward_in_place(x.as_flattened_mut());
    /// assert_eq!(x, [[0.0, 2.0]]);
    /// ```
    pub fn forward_in_place(self, x: &mut [f32]) {
        for v in x {
            *v = self.apply(*v);
        }
    }

    /// `d = d * act'(x)` in place, from the output `y = act(x)`: turns the
    /// gradient with respect to a layer's activation into the gradient with
    /// respect to its pre-activation, without a second buffer.
    ///
    /// # Panics
    ///
    /// If `d` and `y` differ in length.
    ///
    /// # Examples
    ///
    /// ```
    /// use lenet_core::activation::Activation;
    /// let mut d = [4.0f32, 4.0];
    /// Activation::Sigmoid.backward_in_place(&mut d, &[0.5, 1.0]);
    /// assert_eq!(d, [1.0, 0.0]);
    /// ```
    pub fn backward_in_place(self, d: &mut [f32], y: &[f32]) {
        assert_eq!(
            d.len(),
            y.len(),
            "backward_in_place: d and y differ in length"
        );
        // dL/dx = dL/dy * act'(x)
        for (di, &yi) in d.iter_mut().zip(y) {
            *di *= self.derivative_from_output(yi);
        }
    }

    /// Lower-case name: `"sigmoid"`, `"relu"` or `"tanh"`.
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
        }
    }

    /// The activation named `s` (the inverse of [`name`](Self::name),
    /// ASCII case-insensitive), or `None`.
    pub fn parse(s: &str) -> Option<Activation> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

impl core::fmt::Display for Activation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of `str::parse::<Activation>()`: the name is not one of
/// `sigmoid`, `relu`, `tanh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseActivationError;

impl core::fmt::Display for ParseActivationError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unknown activation (expected sigmoid, relu or tanh)")
    }
}

impl core::error::Error for ParseActivationError {}

impl core::str::FromStr for Activation {
    type Err = ParseActivationError;

    /// Same as [`Activation::parse`], with an error instead of `None`.
    ///
    /// # Errors
    ///
    /// [`ParseActivationError`] for an unknown name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Activation::parse(s).ok_or(ParseActivationError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::EXP_RTOL;

    /// Inputs that avoid ReLU's kink at 0.
    const XS: [f32; 9] = [-4.0, -2.5, -1.0, -0.3, 0.2, 0.7, 1.5, 3.0, 5.0];

    #[test]
    fn sigmoid_is_stable_and_symmetric() {
        let x = [-1000.0, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1000.0];
        let mut y = [0.0f32; 9];
        sigmoid(&mut y, &x);
        for (&xi, &yi) in x.iter().zip(&y) {
            assert!((0.0..=1.0).contains(&yi), "sigmoid({xi}) = {yi}");
            let want = 1.0 / (1.0 + (-(xi as f64)).exp());
            assert!(
                (yi as f64 - want).abs() <= (1e-7 + EXP_RTOL) * want.max(1e-30) + 1e-45,
                "sigmoid({xi})"
            );
        }
        // sigmoid(-x) = 1 - sigmoid(x)
        for (a, b) in y.iter().zip(y.iter().rev()) {
            assert!((a + b - 1.0).abs() < 1e-6);
        }
        let mut inf = [0.0f32; 2];
        sigmoid(&mut inf, &[f32::NEG_INFINITY, f32::INFINITY]);
        assert_eq!(inf, [0.0, 1.0]);
    }

    #[test]
    fn relu_and_tanh_values() {
        let mut y = [0.0f32; 9];
        relu(&mut y, &XS);
        for (&xi, &yi) in XS.iter().zip(&y) {
            assert_eq!(yi, xi.max(0.0));
        }
        tanh(&mut y, &XS);
        for (&xi, &yi) in XS.iter().zip(&y) {
            assert!((yi - xi.tanh()).abs() < 1e-6);
        }
        let mut nan = [0.0f32];
        relu(&mut nan, &[f32::NAN]);
        assert!(nan[0].is_nan());
    }

    #[test]
    fn softmax_sums_to_one_and_is_shift_invariant() {
        let x = [1.0f32, 2.0, 3.0, -1.0];
        let mut y = [0.0f32; 4];
        softmax(&mut y, &x);
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let denom: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        for (&xi, &yi) in x.iter().zip(&y) {
            let want = (xi as f64).exp() / denom;
            assert!((yi as f64 - want).abs() < 1e-7 + 2.0 * EXP_RTOL * want);
        }
        let shifted = x.map(|v| v + 500.0);
        let mut y2 = [0.0f32; 4];
        softmax(&mut y2, &shifted);
        for (a, b) in y.iter().zip(&y2) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut empty: [f32; 0] = [];
        softmax(&mut empty, &[]);
    }

    /// Checks `backward` (fed with our forward output `f(XS)`) against
    /// central differences of `L(x) = sum_i w[i] * exact(x)[i]`, where
    /// `exact` is the function in f64 with `std`: the reference does not
    /// depend on the math back end (libm or micromath).
    fn check_grad(
        f: impl Fn(&mut [f32], &[f32]),
        exact: impl Fn(&[f64; 9]) -> [f64; 9],
        b: impl Fn(&mut [f32], &[f32], &[f32]),
    ) {
        let w: [f32; 9] = [0.3, -1.2, 0.8, 2.0, -0.5, 1.1, -0.7, 0.4, 1.6];
        let loss =
            |x: &[f64; 9]| -> f64 { exact(x).iter().zip(&w).map(|(&a, &b)| a * b as f64).sum() };
        let mut y = [0.0f32; 9];
        f(&mut y, &XS);
        // Start from a non-zero dx to check accumulation.
        let mut dx = [1.0f32; 9];
        b(&mut dx, &w, &y);
        let h = 1e-5f64;
        let x64 = XS.map(f64::from);
        for i in 0..9 {
            let (mut xp, mut xm) = (x64, x64);
            xp[i] += h;
            xm[i] -= h;
            let num = (loss(&xp) - loss(&xm)) / (2.0 * h);
            let got = (dx[i] - 1.0) as f64;
            assert!(
                (got - num).abs() <= 1e-5 + (1e-4 + 2.0 * EXP_RTOL) * num.abs().max(1.0),
                "i={i}: analytic {got}, numeric {num}"
            );
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let exact = |act: Activation, x: f64| match act {
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Relu => x.max(0.0),
            Activation::Tanh => x.tanh(),
        };
        for act in Activation::ALL {
            check_grad(
                |y, x| act.forward(y, x),
                |x| x.map(|v| exact(act, v)),
                |dx, dy, y| act.backward(dx, dy, y),
            );
        }
        let exact_softmax = |x: &[f64; 9]| {
            let s: f64 = x.iter().map(|v| v.exp()).sum();
            x.map(|v| v.exp() / s)
        };
        check_grad(softmax, exact_softmax, softmax_backward);
    }

    #[test]
    fn in_place_matches_out_of_place() {
        for act in Activation::ALL {
            let mut y = [0.0f32; 9];
            act.forward(&mut y, &XS);
            let mut x = XS;
            act.forward_in_place(&mut x);
            assert_eq!(x, y, "{act}");
            let dy = [0.3f32, -1.2, 0.8, 2.0, -0.5, 1.1, -0.7, 0.4, 1.6];
            let mut dx = [0.0f32; 9];
            act.backward(&mut dx, &dy, &y);
            let mut d = dy;
            act.backward_in_place(&mut d, &y);
            assert_eq!(d, dx, "{act}");
        }
    }

    #[test]
    fn names_round_trip() {
        for act in Activation::ALL {
            assert_eq!(Activation::parse(act.name()), Some(act));
            assert_eq!(act.name().parse::<Activation>(), Ok(act));
            assert_eq!(std::format!("{act}"), act.name());
        }
        assert_eq!(Activation::parse("ReLU"), Some(Activation::Relu));
        assert_eq!(Activation::parse("gelu"), None);
        assert_eq!("gelu".parse::<Activation>(), Err(ParseActivationError));
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn length_mismatch_panics() {
        let mut y = [0.0f32; 2];
        sigmoid(&mut y, &[0.0; 3]);
    }
}
