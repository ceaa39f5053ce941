//! The `_into` forms and [`Conv2dPlan`] allocate nothing once their buffers and scratch exist: a
//! training loop that reuses its memory does no heap allocation per batch inside the kernels.
//!
//! A counting global allocator wraps the system one; after a warm-up pass (which grows the
//! per-thread scratch of the convolutions and of gemm, what the plans keep for backward, and
//! starts rayon's pool) a pass over every LeNet-5 kernel must not allocate at all; nor must the
//! one-shot convolutions after their first call. This file holds a single test so that no other
//! test thread allocates while it counts.

use ndarray::{Array1, Array2, Array4};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tensor::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// LeNet-5's conv1: 5×5 with "same" padding.
const SAME: Conv2dParams = Conv2dParams {
    stride: (1, 1),
    padding: (2, 2),
};

/// Every buffer of a LeNet-5 forward and backward pass at batch `n`.
struct Buffers {
    x: Array4<f32>,
    w1: Array4<f32>,
    b1: Array1<f32>,
    c1: Array4<f32>,
    r1: Array4<f32>,
    s1: Array4<f32>,
    w2: Array4<f32>,
    b2: Array1<f32>,
    c2: Array4<f32>,
    t2: Array4<f32>,
    s2: Array4<f32>,
    wf: Array2<f32>,
    bf: Array1<f32>,
    logits: Array2<f32>,
    targets: Vec<usize>,
    dlogits: Array2<f32>,
    dflat: Array2<f32>,
    dwf: Array2<f32>,
    dbf: Array1<f32>,
    dc2: Array4<f32>,
    dw2: Array4<f32>,
    db2: Array1<f32>,
    ds1: Array4<f32>,
    dc1: Array4<f32>,
    dw1: Array4<f32>,
    db1: Array1<f32>,
    conv1: Conv2dPlan<f32>,
    conv2: Conv2dPlan<f32>,
}

impl Buffers {
    fn new(n: usize) -> Self {
        let f4 = |s: (usize, usize, usize, usize)| {
            Array4::from_shape_fn(s, |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) % 11) as f32 / 11.0 - 0.5
            })
        };
        Buffers {
            x: f4((n, 1, 28, 28)),
            w1: f4((6, 1, 5, 5)),
            b1: Array1::from_elem(6, 0.1),
            c1: Array4::zeros((n, 6, 28, 28)),
            r1: Array4::zeros((n, 6, 28, 28)),
            s1: Array4::zeros((n, 6, 14, 14)),
            w2: f4((16, 6, 5, 5)),
            b2: Array1::from_elem(16, 0.1),
            c2: Array4::zeros((n, 16, 10, 10)),
            t2: Array4::zeros((n, 16, 10, 10)),
            s2: Array4::zeros((n, 16, 5, 5)),
            wf: Array2::from_shape_fn((10, 400), |(i, j)| ((i + j) % 7) as f32 / 70.0),
            bf: Array1::zeros(10),
            logits: Array2::zeros((n, 10)),
            targets: (0..n).map(|i| i % 10).collect(),
            dlogits: Array2::zeros((n, 10)),
            dflat: Array2::zeros((n, 400)),
            dwf: Array2::zeros((10, 400)),
            dbf: Array1::zeros(10),
            dc2: Array4::zeros((n, 16, 10, 10)),
            dw2: Array4::zeros((16, 6, 5, 5)),
            db2: Array1::zeros(16),
            ds1: Array4::zeros((n, 6, 14, 14)),
            dc1: Array4::zeros((n, 6, 28, 28)),
            dw1: Array4::zeros((6, 1, 5, 5)),
            db1: Array1::zeros(6),
            conv1: Conv2dPlan::new((6, 1, 5, 5), SAME),
            conv2: Conv2dPlan::new((16, 6, 5, 5), Conv2dParams::default()),
        }
    }

    /// One training step's kernels, all in their buffer-reusing forms.
    fn step(&mut self) {
        let b = self;
        let n = b.x.dim().0;
        let pool = Pool2dParams::square(2);
        let (x, w1, w2) = (b.x.view(), b.w1.view(), b.w2.view());
        b.conv1
            .forward_into(x, w1, Some(b.b1.view()), b.c1.view_mut(), None);
        Activation::Relu.forward_into(b.c1.view(), b.r1.view_mut());
        avg_pool2d_into(b.r1.view(), pool, b.s1.view_mut());
        let (s1, b2) = (b.s1.view(), Some(b.b2.view()));
        b.conv2.forward_into(s1, w2, b2, b.c2.view_mut(), None);
        Activation::Tanh.forward_into(b.c2.view(), b.t2.view_mut());
        max_pool2d_into(b.t2.view(), pool, b.s2.view_mut());
        let flat = b.s2.view().into_shape_with_order((n, 400)).unwrap();
        linear_into(flat, b.wf.view(), Some(b.bf.view()), b.logits.view_mut());
        Activation::Sigmoid.forward_into(b.logits.view(), b.dlogits.view_mut());
        softmax_cross_entropy_into(b.logits.view(), &b.targets, b.dlogits.view_mut());

        linear_backward_into(
            flat,
            b.wf.view(),
            b.dlogits.view(),
            Some(b.dflat.view_mut()),
            b.dwf.view_mut(),
            Some(b.dbf.view_mut()),
        );
        let dflat4 = b.dflat.view().into_shape_with_order((n, 16, 5, 5)).unwrap();
        max_pool2d_backward_into(b.t2.view(), dflat4, pool, b.dc2.view_mut());
        Activation::Tanh.backward_inplace(b.t2.view(), b.dc2.view_mut());
        let grads = (
            Some(b.ds1.view_mut()),
            b.dw2.view_mut(),
            Some(b.db2.view_mut()),
        );
        b.conv2.backward_into(s1, w2, b.dc2.view(), None, grads);
        avg_pool2d_backward_into(b.ds1.view(), pool, b.dc1.view_mut());
        Activation::Relu.backward_inplace(b.r1.view(), b.dc1.view_mut());
        let grads = (None, b.dw1.view_mut(), Some(b.db1.view_mut()));
        b.conv1.backward_into(x, w1, b.dc1.view(), None, grads);
        log_softmax_into(b.logits.view(), b.dlogits.view_mut());
    }
}

#[test]
fn into_forms_do_not_allocate_in_steady_state() {
    training_step_on_one_thread();
    one_shot_convolutions_on_two_threads();
}

/// A rayon pool of `threads` threads.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// A whole training step at batch 1 and 64, on a one-thread rayon pool: with one worker the
/// schedule is fixed and the check is exact.
fn training_step_on_one_thread() {
    pool(1).install(|| {
        for n in [1, 64] {
            let mut b = Buffers::new(n);
            b.step(); // warm-up: the thread scratch and what the plans keep grow
            b.step();
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            b.step();
            let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                allocated, 0,
                "batch {n}: {allocated} heap allocations in one step"
            );
            assert!(b.dw1.iter().all(|v| v.is_finite()) && b.dw1.iter().any(|&v| v != 0.0));
        }
    });
}

/// `conv2d_into` and `conv2d_backward_into` (with every gradient) at LeNet-5's conv1 and conv2
/// shapes, batch 32, called in turn as a training loop would, on two threads (as `lenet train`
/// runs): their scratch is the calling thread's and grows on the first call, and a thread buffer
/// that grows grows on every thread of the pool, so the second and later calls allocate nothing
/// whichever thread runs which batch chunk.
fn one_shot_convolutions_on_two_threads() {
    let layers = [
        ("conv1", (32, 1, 28, 28), (6, 1, 5, 5), SAME),
        (
            "conv2",
            (32, 6, 14, 14),
            (16, 6, 5, 5),
            Conv2dParams::default(),
        ),
    ];
    pool(2).install(|| {
        let mut layers = layers.map(|(name, x, w, p)| (name, OneShot::new(x, w, p)));
        for call in 1..=4 {
            for (name, conv) in &mut layers {
                let (forward, backward) = conv.counted_calls();
                if call > 1 {
                    assert_eq!(forward, 0, "{name}: call {call} of conv2d_into allocated");
                    assert_eq!(
                        backward, 0,
                        "{name}: call {call} of conv2d_backward_into allocated"
                    );
                }
            }
        }
    });
}

/// The operands and outputs of one convolution called by the one-shot functions.
struct OneShot {
    x: Array4<f32>,
    w: Array4<f32>,
    b: Array1<f32>,
    p: Conv2dParams,
    y: Array4<f32>,
    g: Array4<f32>,
    gx: Array4<f32>,
    gw: Array4<f32>,
    gb: Array1<f32>,
}

impl OneShot {
    fn new(
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
        p: Conv2dParams,
    ) -> Self {
        let f4 = |s: (usize, usize, usize, usize)| {
            Array4::from_shape_fn(s, |(a, b, c, d)| {
                ((a * 7 + b * 5 + c * 3 + d) % 11) as f32 / 11.0 - 0.5
            })
        };
        let (oh, ow) = p.output_size((x.2, x.3), (w.2, w.3)).unwrap();
        let y = (x.0, w.0, oh, ow);
        OneShot {
            x: f4(x),
            w: f4(w),
            b: Array1::from_elem(w.0, 0.1),
            p,
            y: Array4::zeros(y),
            g: f4(y),
            gx: Array4::zeros(x),
            gw: Array4::zeros(w),
            gb: Array1::zeros(w.0),
        }
    }

    /// Runs the forward and the backward pass; returns the allocations each made.
    fn counted_calls(&mut self) -> (usize, usize) {
        let c = self;
        let start = ALLOCATIONS.load(Ordering::SeqCst);
        conv2d_into(
            c.x.view(),
            c.w.view(),
            Some(c.b.view()),
            c.p,
            c.y.view_mut(),
        );
        let middle = ALLOCATIONS.load(Ordering::SeqCst);
        conv2d_backward_into(
            c.x.view(),
            c.w.view(),
            c.g.view(),
            c.p,
            Some(c.gx.view_mut()),
            c.gw.view_mut(),
            Some(c.gb.view_mut()),
        );
        let end = ALLOCATIONS.load(Ordering::SeqCst);
        assert!(c.gw.iter().any(|&v| v != 0.0) && c.gx.iter().all(|v| v.is_finite()));
        (middle - start, end - middle)
    }
}
