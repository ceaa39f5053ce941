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
#![deny(missing_docs)]

pub mod activation;
pub mod conv2d;
pub mod linear;
pub mod loss;
pub mod matmul;
mod parallel;
pub mod pool;
mod scalar;

pub use activation::*;
pub use conv2d::*;
pub use linear::*;
pub use loss::*;
pub use matmul::*;
pub use pool::*;
pub use scalar::Scalar;
