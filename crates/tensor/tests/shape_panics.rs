//! A shape mismatch panics with a message naming the op and the argument, at the caller's line
//! (every public entry point is `#[track_caller]` down to the one shape check).
//!
//! One test function only: it replaces the process's panic hook, which other tests running in
//! parallel in this binary would otherwise share.

use ndarray::{Array1, Array2, Array4};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use tensor::Pool2dParams;

/// Runs `f`, which must panic, and returns the panic's message and line.
fn panic_of(f: impl FnOnce()) -> (String, u32) {
    let seen = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&seen);
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let loc = info.location().expect("a panic location");
        *sink.lock().unwrap() = Some((msg, loc.file().to_string(), loc.line()));
    }));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    assert!(result.is_err(), "the call did not panic");
    let (msg, file, line) = seen.lock().unwrap().take().expect("the hook ran");
    assert_eq!(file, file!(), "{msg}: the panic points into the crate");
    (msg, line)
}

#[test]
fn mismatches_panic_at_the_callers_line_naming_op_and_argument() {
    let x2 = Array2::<f32>::zeros((2, 3));
    let x4 = Array4::<f32>::zeros((1, 1, 4, 4));
    let p = Pool2dParams::square(2);
    // (expected message start, the function called, the call's panic)
    let cases: Vec<(&str, &str, (String, u32))> = vec![
        (
            "relu: out must have the input's shape [2, 3], got [3, 2]",
            "tensor::Activation::Relu.forward_into(",
            panic_of(|| tensor::Activation::Relu.forward_into(x2.view(), Array2::zeros((3, 2)).view_mut())),
        ),
        (
            "gemm: a is [2, 3] but b is [2, 3]: b must be [3, 3]",
            "tensor::matmul(",
            panic_of(|| drop(tensor::matmul(x2.view(), x2.view()))),
        ),
        (
            "linear: bias must be 4, got 2",
            "tensor::linear(",
            panic_of(|| drop(tensor::linear(x2.view(), Array2::zeros((4, 3)).view(), Some(Array1::zeros(2).view())))),
        ),
        (
            "avg_pool2d: out must be (1, 1, 2, 2), got (1, 1, 4, 4)",
            "tensor::avg_pool2d_into(",
            panic_of(|| tensor::avg_pool2d_into(x4.view(), p, Array4::zeros((1, 1, 4, 4)).view_mut())),
        ),
        (
            "max_pool2d_backward: grad_input must have the input's shape (1, 1, 4, 4), got (1, 1, 2, 2)",
            "tensor::max_pool2d_backward_into(",
            panic_of(|| tensor::max_pool2d_backward_into(x4.view(), Array4::zeros((1, 1, 2, 2)).view(), p, Array4::zeros((1, 1, 2, 2)).view_mut())),
        ),
        (
            "softmax_cross_entropy_into: grad_logits must have the logits's shape (2, 3), got (3, 2)",
            "tensor::softmax_cross_entropy_into(",
            panic_of(|| { tensor::softmax_cross_entropy_into(x2.view(), &[0, 1], Array2::zeros((3, 2)).view_mut()); }),
        ),
        (
            "conv2d: out must be (1, 2, 2, 2), got (1, 2, 4, 4)",
            "tensor::conv2d_into(",
            panic_of(|| tensor::conv2d_into(x4.view(), Array4::zeros((2, 1, 3, 3)).view(), None, tensor::Conv2dParams::default(), Array4::zeros((1, 2, 4, 4)).view_mut())),
        ),
    ];
    let source: Vec<&str> = include_str!("shape_panics.rs").lines().collect();
    for (want, call, (msg, line)) in cases {
        assert!(
            msg.starts_with(want),
            "{msg:?} does not start with {want:?}"
        );
        let at = source[line as usize - 1];
        assert!(at.contains(call), "{want}: points at line {line}, {at:?}");
    }
}
