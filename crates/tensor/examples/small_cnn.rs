//! `tensor` embedded the way an outside project would: a small CNN
//! (conv 3×3 → ReLU → 2×2 average pool → linear → softmax cross-entropy) trained by SGD on
//! synthetic data, every step through the `_into` forms and a [`Conv2dPlan`] into buffers
//! allocated once. A counting allocator shows that steps allocate nothing once warm; the
//! hand-written backward pass is checked against central finite differences (in f64) first.
//!
//! ```sh
//! cargo run -p lenet-tensor --release --example small_cnn
//! ```

use ndarray::{Array1, Array2, Array4, ArrayView4, Axis};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tensor::{
    linear_backward_into, linear_into, softmax_cross_entropy_into, Conv2dParams, Conv2dPlan,
    Pool2dParams, Scalar,
};

/// Counts heap allocations, to show that a training step makes none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 16;
const SIDE: usize = 12; // 12×12 images
const FILTERS: usize = 4; // 3×3 "same" conv → 4×12×12 → pooled 4×6×6
const FEATURES: usize = FILTERS * 6 * 6;
const CLASSES: usize = 2;

/// The parameters, their gradients, every activation and the convolution's plan.
struct Net<T: Scalar> {
    w: Array4<T>,
    b: Array1<T>,
    fw: Array2<T>,
    fb: Array1<T>,
    conv: Conv2dPlan<T>,
    y: Array4<T>,
    relu: Array4<T>,
    pooled: Array4<T>,
    logits: Array2<T>,
    grad_logits: Array2<T>,
    grad_features: Array2<T>,
    gw: Array4<T>,
    gb: Array1<T>,
    gfw: Array2<T>,
    gfb: Array1<T>,
}

impl<T: Scalar> Net<T> {
    fn new() -> Self {
        let same = Conv2dParams {
            stride: (1, 1),
            padding: (1, 1),
        };
        let small = |i: usize| T::from_f64(((i * 37 % 23) as f64 / 23.0 - 0.5) * 0.4);
        let conv_out = (BATCH, FILTERS, SIDE, SIDE);
        Net {
            w: Array4::from_shape_fn((FILTERS, 1, 3, 3), |(k, _, u, v)| small(k * 9 + u * 3 + v)),
            b: Array1::zeros(FILTERS),
            fw: Array2::from_shape_fn((CLASSES, FEATURES), |(c, j)| small(c * 7 + j) * small(j)),
            fb: Array1::zeros(CLASSES),
            conv: Conv2dPlan::new((FILTERS, 1, 3, 3), same)
                .with_relu_avg_pool(Pool2dParams::square(2)),
            y: Array4::zeros(conv_out),
            relu: Array4::zeros(conv_out),
            pooled: Array4::zeros((BATCH, FILTERS, SIDE / 2, SIDE / 2)),
            logits: Array2::zeros((BATCH, CLASSES)),
            grad_logits: Array2::zeros((BATCH, CLASSES)),
            grad_features: Array2::zeros((BATCH, FEATURES)),
            gw: Array4::zeros((FILTERS, 1, 3, 3)),
            gb: Array1::zeros(FILTERS),
            gfw: Array2::zeros((CLASSES, FEATURES)),
            gfb: Array1::zeros(CLASSES),
        }
    }

    /// Forward and backward on one batch: the mean loss; the gradients are left in `g*`.
    fn step(&mut self, x: ArrayView4<'_, T>, targets: &[usize]) -> T {
        let relu_pool = Some((self.relu.view_mut(), self.pooled.view_mut()));
        let bias = Some(self.b.view());
        self.conv
            .forward_into(x, self.w.view(), bias, self.y.view_mut(), relu_pool);
        let features = self
            .pooled
            .view()
            .into_shape_with_order((BATCH, FEATURES))
            .unwrap();
        let fb = Some(self.fb.view());
        linear_into(features, self.fw.view(), fb, self.logits.view_mut());
        let loss =
            softmax_cross_entropy_into(self.logits.view(), targets, self.grad_logits.view_mut());
        linear_backward_into(
            features,
            self.fw.view(),
            self.grad_logits.view(),
            Some(self.grad_features.view_mut()),
            self.gfw.view_mut(),
            Some(self.gfb.view_mut()),
        );
        let shape = self.pooled.dim();
        let grad_pooled = self
            .grad_features
            .view()
            .into_shape_with_order(shape)
            .unwrap();
        let grads = (None, self.gw.view_mut(), Some(self.gb.view_mut()));
        self.conv
            .backward_into(x, self.w.view(), grad_pooled, Some(self.relu.view()), grads);
        loss
    }

    /// One SGD step on every parameter.
    fn sgd(&mut self, lr: T) {
        self.w.scaled_add(-lr, &self.gw);
        self.b.scaled_add(-lr, &self.gb);
        self.fw.scaled_add(-lr, &self.gfw);
        self.fb.scaled_add(-lr, &self.gfb);
    }
}

/// Synthetic data: class 1 images have a bright vertical bar, class 0 a horizontal one, with
/// deterministic noise; batch `i` of an endless stream.
fn batch<T: Scalar>(i: usize, x: &mut Array4<T>, targets: &mut [usize]) {
    for (n, t) in targets.iter_mut().enumerate() {
        *t = (i + n) % 2;
        let at = 2 + (i * 5 + n * 3) % (SIDE - 4);
        for ((r, c), v) in x
            .index_axis_mut(Axis(0), n)
            .index_axis_mut(Axis(0), 0)
            .indexed_iter_mut()
        {
            let noise = (((i * 131 + n * 71 + r * 13 + c * 7) % 17) as f64 / 17.0 - 0.5) * 0.3;
            let on = if *t == 1 { c == at } else { r == at };
            *v = T::from_f64(if on { 1.0 } else { 0.0 } + noise);
        }
    }
}

/// Largest relative gap between the backward pass's conv weight gradient and central
/// differences of the loss, in f64.
fn gradient_check() -> f64 {
    let mut net = Net::<f64>::new();
    let (mut x, mut targets) = (Array4::zeros((BATCH, 1, SIDE, SIDE)), vec![0; BATCH]);
    batch(0, &mut x, &mut targets);
    net.step(x.view(), &targets);
    let analytic = net.gw.clone();
    let h = 1e-6;
    let mut worst = 0.0_f64;
    for idx in [(0, 0, 0, 0), (1, 0, 1, 2), (3, 0, 2, 1), (2, 0, 1, 1)] {
        let w0 = net.w[idx];
        net.w[idx] = w0 + h;
        let up = net.step(x.view(), &targets);
        net.w[idx] = w0 - h;
        let down = net.step(x.view(), &targets);
        net.w[idx] = w0;
        let numeric = (up - down) / (2.0 * h);
        let gap = (numeric - analytic[idx]).abs() / analytic[idx].abs().max(1e-3);
        worst = worst.max(gap);
    }
    worst
}

/// 200 SGD steps on the synthetic stream: the first and last losses, and the heap allocations
/// made by steps 101 to 200. (Each pool thread's scratch grows the first time that thread runs
/// a piece of a pass, which with work stealing may be a few steps in.)
fn train() -> (f32, f32, usize) {
    let mut net = Net::<f32>::new();
    let (mut x, mut targets) = (Array4::zeros((BATCH, 1, SIDE, SIDE)), vec![0; BATCH]);
    let (mut first_loss, mut last_loss) = (None, 0.0);
    let mut allocated_when_warm = 0;
    for i in 0..200 {
        batch(i, &mut x, &mut targets);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let loss = net.step(x.view(), &targets);
        net.sgd(0.5);
        if i >= 100 {
            allocated_when_warm += ALLOCATIONS.load(Ordering::Relaxed) - before;
        }
        first_loss.get_or_insert(loss);
        last_loss = loss;
        if i % 50 == 49 {
            println!("step {:>3}: loss {loss:.4}", i + 1);
        }
    }
    (
        first_loss.expect("200 steps"),
        last_loss,
        allocated_when_warm,
    )
}

fn main() {
    let gap = gradient_check();
    println!("conv weight gradient vs central differences: largest relative gap {gap:.1e}");
    assert!(
        gap < 1e-5,
        "the backward pass disagrees with finite differences"
    );

    // The loop runs inside a rayon pool: jobs started from outside a pool go through its
    // global queue, which allocates a block every few dozen jobs; from inside, they go to the
    // worker's own queue, which does not.
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("a thread pool");
    let (first_loss, last_loss, allocated_when_warm) = pool.install(train);
    println!("heap allocations in steps 101..200: {allocated_when_warm}");
    assert_eq!(allocated_when_warm, 0, "steps allocate");
    assert!(first_loss > 0.6, "the untrained net is near chance (ln 2)");
    assert!(last_loss < 0.1, "training did not learn the bars");
}
