//! Numerically stable `log_softmax` over rows, and mean cross-entropy with integer targets,
//! fused so that the loss and its gradient `(softmax − onehot)/N` come from one pass.
//!
//! Stability: every exponential is taken of `x − max(row) ≤ 0`, so it never overflows, and the
//! row's log-sum-exp is `max + ln Σ e^(x − max)` with a sum of at least 1 (never `ln 0`).
//!
//! Rows are short (10 classes for MNIST), so these kernels run serially; the loss is accumulated
//! in `f64` whatever `T` is.

use crate::shape::{check_shape, Expected};
use crate::Scalar;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2};

/// `(max, ln Σ e^(x − max))` of one row: the row's log-sum-exp is their sum.
fn max_and_log_sum_exp<T: Scalar>(row: ArrayView1<'_, T>) -> (T, T) {
    let m = row.fold(T::neg_infinity(), |m, &x| if x > m { x } else { m });
    let s = row.fold(T::zero(), |s, &x| s + (x - m).exp());
    (m, s.ln())
}

#[track_caller]
fn check_targets(op: &str, n: usize, classes: usize, targets: &[usize]) {
    assert!(
        n > 0,
        "{op}: the batch is empty (logits are [0, {classes}])"
    );
    assert!(
        targets.len() == n,
        "{op}: {} targets for {n} rows of logits",
        targets.len()
    );
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t >= classes) {
        panic!("{op}: target {t} of row {i} is out of range for {classes} classes");
    }
}

// ---------------------------------------------------------------------------------------------
// log_softmax: y_ij = x_ij − log Σ_k e^(x_ik)
// ---------------------------------------------------------------------------------------------

/// `log_softmax` of each row of `input` (`[n, classes]`): `x − max − ln Σ e^(x − max)`.
///
/// ```
/// use ndarray::array;
/// let y = tensor::log_softmax(array![[0.0_f64, 0.0], [1000.0, 1000.0]].view());
/// let half = 0.5_f64.ln();
/// assert!(y.iter().all(|&v| (v - half).abs() < 1e-12));
/// ```
pub fn log_softmax<T: Scalar>(input: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = Array2::zeros(input.raw_dim());
    log_softmax_into(input, out.view_mut());
    out
}
/// Like [`log_softmax`], overwriting `out` (same shape as `input`).
///
/// # Panics
/// If `out` is not the shape of `input`.
///
/// ```
/// use ndarray::{array, Array2};
/// let mut y = Array2::<f32>::zeros((1, 2));
/// tensor::log_softmax_into(array![[3.0_f32, 3.0]].view(), y.view_mut());
/// assert!((y[[0, 1]] - 0.5_f32.ln()).abs() < 1e-6);
/// ```
#[track_caller]
pub fn log_softmax_into<T: Scalar>(input: ArrayView2<'_, T>, mut out: ArrayViewMut2<'_, T>) {
    check_shape(
        "log_softmax",
        "out",
        Expected::ShapeOf("input", input.dim()),
        out.dim(),
    );
    for (x, mut y) in input.rows().into_iter().zip(out.rows_mut()) {
        let (m, lse) = max_and_log_sum_exp(x);
        y.zip_mut_with(&x, |y, &x| *y = x - m - lse);
    }
}

// ∂y_j/∂x_i = δ_ij − p_i with p = softmax(x) = e^y, so
// dL/dx_i = Σ_j g_j (δ_ij − p_i) = g_i − p_i · Σ_j g_j.
/// Gradient of [`log_softmax`] from its output `y`: `g − softmax · Σ_row g`, with softmax = e^y.
///
/// ```
/// use ndarray::array;
/// let y = tensor::log_softmax(array![[1.0_f64, 2.0, 3.0]].view());
/// let gi = tensor::log_softmax_backward(y.view(), array![[1.0, 0.0, 0.0]].view());
/// // adding a constant to a row does not change log_softmax, so the row's gradient sums to 0
/// assert!(gi.sum().abs() < 1e-15);
/// assert!((gi[[0, 0]] - (1.0 - y[[0, 0]].exp())).abs() < 1e-15);
/// ```
#[track_caller]
pub fn log_softmax_backward<T: Scalar>(
    output: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
) -> Array2<T> {
    let mut gi = Array2::zeros(output.raw_dim());
    log_softmax_backward_into(output, grad_out, gi.view_mut());
    gi
}
/// Like [`log_softmax_backward`], overwriting `grad_input`.
///
/// # Panics
/// If `grad_out` or `grad_input` is not the shape of `output`.
///
/// ```
/// use ndarray::{array, Array2};
/// let y = tensor::log_softmax(array![[0.0_f32, 0.0]].view());
/// let mut gi = Array2::<f32>::zeros((1, 2));
/// tensor::log_softmax_backward_into(y.view(), array![[1.0, 0.0]].view(), gi.view_mut());
/// assert_eq!(gi, array![[0.5, -0.5]]);
/// ```
#[track_caller]
pub fn log_softmax_backward_into<T: Scalar>(
    output: ArrayView2<'_, T>,
    grad_out: ArrayView2<'_, T>,
    mut grad_input: ArrayViewMut2<'_, T>,
) {
    let op = "log_softmax_backward";
    check_shape(
        op,
        "grad_out",
        Expected::ShapeOf("output", output.dim()),
        grad_out.dim(),
    );
    let grad_input_dim = grad_input.dim();
    check_shape(
        op,
        "grad_input",
        Expected::ShapeOf("output", output.dim()),
        grad_input_dim,
    );
    for ((y, g), mut gi) in output
        .rows()
        .into_iter()
        .zip(grad_out.rows())
        .zip(grad_input.rows_mut())
    {
        let total = g.sum();
        ndarray::Zip::from(&mut gi)
            .and(&y)
            .and(&g)
            .for_each(|gi, &y, &g| *gi = g - y.exp() * total);
    }
}

// ---------------------------------------------------------------------------------------------
// cross_entropy: L = −(1/n) Σ_i log_softmax(x)_{i, t_i}
// ---------------------------------------------------------------------------------------------

/// Mean cross-entropy of `logits` (`[n, classes]`) against integer `targets` (length n):
/// `−(1/n) Σ_i log_softmax(logits)[i, targets[i]]`.
///
/// # Panics
/// If `targets.len() != n`, `n == 0`, or a target is not below the number of classes.
///
/// ```
/// use ndarray::array;
/// let loss = tensor::cross_entropy(array![[0.0_f64, 0.0], [5.0, 5.0]].view(), &[1, 0]);
/// assert!((loss - 2.0_f64.ln()).abs() < 1e-12);
/// ```
#[track_caller]
pub fn cross_entropy<T: Scalar>(logits: ArrayView2<'_, T>, targets: &[usize]) -> T {
    let (n, classes) = logits.dim();
    check_targets("cross_entropy", n, classes, targets);
    let mut total = 0.0_f64;
    for (x, &t) in logits.rows().into_iter().zip(targets) {
        let (m, lse) = max_and_log_sum_exp(x);
        total += (m + lse - x[t]).to_f64().unwrap_or(f64::NAN);
    }
    T::from_f64(total / n as f64)
}

/// `(softmax − onehot) · scale` for every row, written into `grad`.
fn softmax_minus_onehot_into<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    scale: T,
    mut grad: ArrayViewMut2<'_, T>,
) -> f64 {
    let mut total = 0.0_f64;
    for ((x, mut g), &t) in logits.rows().into_iter().zip(grad.rows_mut()).zip(targets) {
        let (m, lse) = max_and_log_sum_exp(x);
        total += (m + lse - x[t]).to_f64().unwrap_or(f64::NAN);
        // softmax = e^(x − max − ln Σ e^(x − max)): one exponential per element, no division.
        g.zip_mut_with(&x, |g, &x| *g = (x - m - lse).exp() * scale);
        g[t] = g[t] - scale;
    }
    total
}

// L = (1/n) Σ_i (lse_i − x_{i,t_i}) and ∂lse_i/∂x_ij = softmax_ij, so
// ∂L/∂x_ij = (softmax_ij − [j = t_i]) / n, times the upstream scalar gradient.
/// Gradient of [`cross_entropy`] for an upstream gradient `grad_out`:
/// `grad_out · (softmax(logits) − onehot(targets)) / n`.
///
/// # Panics
/// As [`cross_entropy`].
///
/// ```
/// use ndarray::array;
/// let g = tensor::cross_entropy_backward(array![[0.0_f32, 0.0]].view(), &[0], 1.0);
/// assert_eq!(g, array![[-0.5, 0.5]]);
/// ```
#[track_caller]
pub fn cross_entropy_backward<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    grad_out: T,
) -> Array2<T> {
    let (n, classes) = logits.dim();
    check_targets("cross_entropy_backward", n, classes, targets);
    let mut g = Array2::zeros(logits.raw_dim());
    let scale = grad_out / T::from_f64(n as f64);
    softmax_minus_onehot_into(logits, targets, scale, g.view_mut());
    g
}
/// The `_into` form of [`cross_entropy`] and [`cross_entropy_backward`] together, for
/// training: returns the mean loss and overwrites `grad_logits` with its gradient
/// `(softmax − onehot)/n` (for an upstream gradient of 1), from a single softmax pass.
///
/// # Panics
/// As [`cross_entropy`], or if `grad_logits` is not the shape of `logits`.
///
/// ```
/// use ndarray::{array, Array2};
/// let logits = array![[2.0_f32, -1.0, 0.5], [0.0, 0.0, 3.0]];
/// let mut grad = Array2::zeros((2, 3));
/// let loss = tensor::softmax_cross_entropy_into(logits.view(), &[0, 2], grad.view_mut());
/// assert!((loss - tensor::cross_entropy(logits.view(), &[0, 2])).abs() < 1e-6);
/// assert!(grad.sum().abs() < 1e-6); // each row of softmax − onehot sums to 0
/// ```
#[track_caller]
pub fn softmax_cross_entropy_into<T: Scalar>(
    logits: ArrayView2<'_, T>,
    targets: &[usize],
    grad_logits: ArrayViewMut2<'_, T>,
) -> T {
    let (n, classes) = logits.dim();
    check_targets("softmax_cross_entropy_into", n, classes, targets);
    let (expected, got) = (Expected::ShapeOf("logits", logits.dim()), grad_logits.dim());
    check_shape("softmax_cross_entropy_into", "grad_logits", expected, got);
    let scale = T::one() / T::from_f64(n as f64);
    let total = softmax_minus_onehot_into(logits, targets, scale, grad_logits);
    T::from_f64(total / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn log_softmax_is_stable_for_huge_logits() {
        let y = log_softmax(array![[1e30_f32, 0.0], [-1e30, 0.0]].view());
        assert_eq!(y, array![[0.0, -1e30], [-1e30, 0.0]]);
        let loss = cross_entropy(array![[1000.0_f32, 0.0]].view(), &[1]);
        assert_eq!(loss, 1000.0);
    }

    #[test]
    #[should_panic(expected = "target 3 of row 1 is out of range for 3 classes")]
    fn out_of_range_target_panics() {
        cross_entropy(Array2::<f32>::zeros((2, 3)).view(), &[0, 3]);
    }

    #[test]
    #[should_panic(expected = "1 targets for 2 rows")]
    fn wrong_target_count_panics() {
        let mut g = Array2::<f32>::zeros((2, 3));
        softmax_cross_entropy_into(Array2::<f32>::zeros((2, 3)).view(), &[0], g.view_mut());
    }

    #[test]
    fn fused_form_equals_separate_forms() {
        let x = array![
            [0.3_f64, -2.0, 1.1, 0.0],
            [4.0, 4.5, -3.0, 0.2],
            [0.0, 0.0, 0.0, 0.0]
        ];
        let t = [2, 0, 3];
        let mut g = Array2::from_elem((3, 4), f64::NAN); // overwritten, never read
        let loss = softmax_cross_entropy_into(x.view(), &t, g.view_mut());
        assert_eq!(loss, cross_entropy(x.view(), &t));
        assert_eq!(g, cross_entropy_backward(x.view(), &t, 1.0));
        // and the same loss from log_softmax directly
        let ls = log_softmax(x.view());
        let direct = -(0..3).map(|i| ls[[i, t[i]]]).sum::<f64>() / 3.0;
        assert!((loss - direct).abs() < 1e-15);
    }
}
