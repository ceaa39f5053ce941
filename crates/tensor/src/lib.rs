//! # tensor
//!
//! Hand-written CPU kernels for small convolutional networks, each forward pass next to its
//! hand-derived backward pass. Inputs and outputs are [`ndarray`] arrays: pass views in, and either
//! take a freshly allocated result (`conv2d`) or write into a buffer you own (`conv2d_into`), so
//! that a training loop can reuse its memory from batch to batch.
//!
//! Every op is generic over [`Scalar`] (`f32` and `f64`): `f32` is the fast path, `f64` makes
//! finite-difference gradient checks precise enough to mean something.
//!
//! Layouts follow PyTorch: activations are NCHW, convolution weights `[out, in, kh, kw]`, linear
//! weights `[out, in]` with `y = x·Wᵀ + b`.
//!
//! The whole API:
//!
//! | op | forward | backward |
//! | --- | --- | --- |
//! | matrix product | [`matmul`], [`gemm`] (`c = α·a·b + β·c`) | products with `.t()` views |
//! | convolution | [`conv2d`], [`conv2d_into`] | [`conv2d_backward`], [`conv2d_backward_into`] → [`Conv2dGrads`] |
//! | convolution in a training loop (a plan per layer), optionally fused with ReLU + average pool | [`Conv2dPlan::forward_into`], [`Conv2dPlan::inference_into`] | [`Conv2dPlan::backward_into`] |
//! | pooling | [`avg_pool2d`], [`avg_pool2d_into`], [`max_pool2d`], [`max_pool2d_into`] | [`avg_pool2d_backward`], [`avg_pool2d_backward_into`], [`max_pool2d_backward`], [`max_pool2d_backward_into`] |
//! | linear | [`linear`], [`linear_into`] | [`linear_backward`], [`linear_backward_into`] → [`LinearGrads`] |
//! | activations: [`Activation::Relu`], [`Activation::Tanh`], [`Activation::Sigmoid`] | [`Activation::forward`], [`Activation::forward_into`] | [`Activation::backward`], [`Activation::backward_into`], [`Activation::backward_inplace`] |
//! | loss | [`log_softmax`], [`log_softmax_into`], [`cross_entropy`] | [`log_softmax_backward`], [`log_softmax_backward_into`], [`cross_entropy_backward`]; both at once: [`softmax_cross_entropy_into`] |
//! | parameters and plans | [`Conv2dParams`] (stride, padding; [`Conv2dParams::output_size`]), [`Pool2dParams`] (window, stride; [`Pool2dParams::square`], [`Pool2dParams::output_size`]), [`Conv2dPlan::new`], [`Conv2dPlan::with_relu_avg_pool`], [`Conv2dPlan::relu_avg_pool`], [`Conv2dPlan::output_dim`] | |
//! | element types | [`Scalar`] (`f32`, `f64`; sealed): [`Scalar::from_f64`], [`Scalar::as_f32_slice`], [`Scalar::as_f32_slice_mut`] | |
//! | kernel tiers | [`Tier`] ([`Tier::Portable`], [`Tier::Avx2`], [`Tier::Avx512`]; [`Tier::ALL`]): [`Tier::active`] (lowered by [`Tier::ENV`]), [`Tier::detected`], [`Tier::available`], [`Tier::is_supported`], [`Tier::lowered`], [`Tier::from_env`], [`Tier::from_name`], [`Tier::name`] | |
//!
//! ```
//! use ndarray::array;
//! // a tiny classifier head: linear → log-softmax cross-entropy, and its gradients
//! let x = array![[1.0_f32, -1.0], [0.5, 2.0]];
//! let w = array![[0.1_f32, 0.2], [-0.3, 0.4], [0.0, 0.1]];
//! let logits = tensor::linear(x.view(), w.view(), None);
//! let mut dlogits = ndarray::Array2::zeros((2, 3));
//! let loss = tensor::softmax_cross_entropy_into(logits.view(), &[2, 1], dlogits.view_mut());
//! let grads = tensor::linear_backward(x.view(), w.view(), dlogits.view());
//! assert!(loss > 0.0 && grads.weight.dim() == (3, 2));
//! ```
//!
//! Inputs may be views of any strides (a non-contiguous input is copied once into a contiguous
//! temporary); outputs in standard (row-major) layout — e.g. from `Array4::zeros` — are written in
//! place, so with them the `_into` forms allocate nothing. Scratch memory (a convolution's
//! column buffers, the matrix product's packed panels) is per thread: it grows on a thread's
//! first call and is reused by every later one. A [`Conv2dPlan`] keeps what a convolution's
//! training forward pass leaves for its backward pass, so a training loop that keeps one plan
//! per layer allocates nothing after its first batch (the example `examples/small_cnn.rs`
//! trains a small CNN that way).
//!
//! Parallelism uses rayon's global pool (size it with `RAYON_NUM_THREADS` or
//! `rayon::ThreadPoolBuilder`); every result is bit-identical whatever the number of threads.
//! The derivation of every backward pass is in `docs/kernels.md` of the repository and, in
//! short, in a comment beside each function.
#![deny(missing_docs)]

// The README's example is compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod activation;
mod conv2d;
mod fast_math;
mod linear;
mod loss;
mod matmul;
mod parallel;
mod pool;
mod scalar;
mod scratch;
mod shape;
mod simd;
mod tier;

pub use activation::Activation;
pub use conv2d::{conv2d, conv2d_backward, conv2d_backward_into, conv2d_into};
pub use conv2d::{Conv2dGrads, Conv2dParams, Conv2dPlan};
pub use linear::{linear, linear_backward, linear_backward_into, linear_into, LinearGrads};
pub use loss::{cross_entropy, cross_entropy_backward, softmax_cross_entropy_into};
pub use loss::{log_softmax, log_softmax_backward, log_softmax_backward_into, log_softmax_into};
pub use matmul::{gemm, matmul};
pub use pool::Pool2dParams;
pub use pool::{avg_pool2d, avg_pool2d_backward, avg_pool2d_backward_into, avg_pool2d_into};
pub use pool::{max_pool2d, max_pool2d_backward, max_pool2d_backward_into, max_pool2d_into};
pub use scalar::Scalar;
pub use tier::Tier;

/// Machinery for the repository's benchmarks and tests (the `bench-internals` feature): the
/// convolution methods and the matrix product with its tier and threading forced. Not part of
/// the API: it may change in any release.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::conv2d::Conv2dMethod;
    pub use crate::matmul::{gemm_with, gemm_with_kernel, Parallelism};
}

#[cfg(test)]
mod tests {
    const LIB: &str = include_str!("lib.rs");
    const README: &str = include_str!("../README.md");

    /// The rows of the API table in `text` (the lines that start with `| ` once `prefix` is
    /// cut), with the crate docs' link brackets dropped: `[`gemm`]` reads `gemm`.
    fn table(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter(|line| line.starts_with("| "))
            .map(|line| line.replace("[`", "`").replace("`]", "`"))
            .collect()
    }

    #[test]
    fn the_readme_shows_the_api_table_of_the_crate_docs() {
        let ours = table(LIB, "//! ");
        assert!(ours.len() > 2, "the crate docs have an API table");
        assert_eq!(table(README, ""), ours, "README.md's table is not lib.rs's");
    }

    #[test]
    fn the_api_table_names_every_item_the_crate_exports() {
        let rows = table(LIB, "//! ").concat();
        let exported = LIB
            .lines()
            .filter_map(|line| line.strip_prefix("pub use "))
            .flat_map(|path| {
                let names = path.rsplit("::").next().expect("a path");
                names
                    .trim_matches(|c| matches!(c, '{' | '}' | ';'))
                    .split(", ")
            });
        for name in exported {
            let named = rows.contains(&format!("`{name}`")) || rows.contains(&format!("`{name}::"));
            assert!(named, "the API table does not name {name}");
        }
    }
}
