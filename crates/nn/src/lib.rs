//! # nn
//!
//! Layers, the LeNet-5 model, SGD with momentum and a training loop, built on the `tensor`
//! kernels. Training reads batches from any source: this crate does not know about MNIST files.
#![deny(missing_docs)]
