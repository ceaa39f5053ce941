//! `gemm` against a naive triple loop accumulated in f64, over odd shapes, every operand layout
//! (transposed, column-major, strided, reversed), alpha/beta cases, f32 and f64, and every
//! micro-kernel this CPU can run.
//!
//! Tolerance: the classical bound for a dot product of length k computed in precision `u`
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1) is
//! `|ĉ − c| ≤ γ_k · Σ|a||b|` with `γ_k ≈ k·u`. We allow `2·(k + 3)·ε · (|α|·Σ_p |a_ip||b_pj| +
//! |β|·|c_ij|)`, ε the machine epsilon of the type: the factor 2 covers the f64 reference's own
//! rounding, `+3` the alpha/beta products and the final addition. A wrong or missing term is of
//! the size of one `|a||b|` product, orders of magnitude above this bound.

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor::internals::{gemm_with, gemm_with_kernel, Parallelism};
use tensor::{gemm, matmul, Scalar, Tier};

/// Counts the heap allocations each thread makes, to prove gemm allocates nothing per call.
struct CountingAlloc;

thread_local! {
    // `const` initialisation: no lazy setup, so using it inside the allocator cannot recurse.
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a plain thread-local integer.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded contract.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Value written around strided views of C: must survive untouched.
const SENTINEL: f64 = 12345.0;

/// How a logical matrix is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Standard row-major.
    RowMajor,
    /// Column-major (Fortran order).
    ColMajor,
    /// `.t()` view of a row-major array of the transposed shape.
    Transposed,
    /// Every other row of an array twice as tall (`s![..;2, ..]`); the rows in between hold NaN
    /// (inputs) or a sentinel (outputs), so a stray read or write shows.
    EveryOtherRow,
    /// Both axes reversed (`s![..;-1, ..;-1]`): negative strides.
    Reversed,
    /// Rows reversed only (`s![..;-1, ..]`): contiguous rows at a negative row stride.
    RowsReversed,
}

const LAYOUTS: [Layout; 6] = [
    Layout::RowMajor,
    Layout::ColMajor,
    Layout::Transposed,
    Layout::EveryOtherRow,
    Layout::Reversed,
    Layout::RowsReversed,
];

/// A logical matrix stored in one of the layouts.
struct Stored<T> {
    store: Array2<T>,
    layout: Layout,
}

impl<T: Scalar> Stored<T> {
    fn new(x: &Array2<T>, layout: Layout, filler: T) -> Self {
        let (r, c) = x.dim();
        let store = match layout {
            Layout::RowMajor => x.as_standard_layout().into_owned(),
            Layout::ColMajor => {
                let mut s = Array2::zeros((r, c).f());
                s.assign(x);
                s
            }
            Layout::Transposed => x.t().as_standard_layout().into_owned(),
            Layout::EveryOtherRow => {
                let mut s = Array2::from_elem((2 * r, c), filler);
                s.slice_mut(s![..;2, ..]).assign(x);
                s
            }
            Layout::Reversed => x.slice(s![..;-1, ..;-1]).as_standard_layout().into_owned(),
            Layout::RowsReversed => x.slice(s![..;-1, ..]).as_standard_layout().into_owned(),
        };
        Stored { store, layout }
    }

    fn view(&self) -> ArrayView2<'_, T> {
        match self.layout {
            Layout::RowMajor | Layout::ColMajor => self.store.view(),
            Layout::Transposed => self.store.t(),
            Layout::EveryOtherRow => self.store.slice(s![..;2, ..]),
            Layout::Reversed => self.store.slice(s![..;-1, ..;-1]),
            Layout::RowsReversed => self.store.slice(s![..;-1, ..]),
        }
    }

    fn view_mut(&mut self) -> ArrayViewMut2<'_, T> {
        match self.layout {
            Layout::RowMajor | Layout::ColMajor => self.store.view_mut(),
            Layout::Transposed => self.store.view_mut().reversed_axes(),
            Layout::EveryOtherRow => self.store.slice_mut(s![..;2, ..]),
            Layout::Reversed => self.store.slice_mut(s![..;-1, ..;-1]),
            Layout::RowsReversed => self.store.slice_mut(s![..;-1, ..]),
        }
    }

    /// The filler rows between the view's rows are all still `filler`.
    fn padding_intact(&self, filler: T) -> bool {
        self.layout != Layout::EveryOtherRow
            || self
                .store
                .outer_iter()
                .skip(1)
                .step_by(2)
                .all(|row| row.iter().all(|&x| x == filler))
    }
}

fn random<T: Scalar>(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Array2<T> {
    Array2::from_shape_fn((rows, cols), |_| T::from_f64(rng.gen_range(-1.0..1.0)))
}

/// `alpha·a·b + beta·c` in f64, and the error bound's scale `|α|·Σ|a||b| + |β|·|c|`.
fn reference<T: Scalar>(
    alpha: T,
    a: &Array2<T>,
    b: &Array2<T>,
    beta: T,
    c: &Array2<T>,
) -> (Array2<f64>, Array2<f64>) {
    let f = |x: T| x.to_f64().unwrap();
    let (m, k) = a.dim();
    let n = b.ncols();
    let (mut want, mut scale) = (Array2::zeros((m, n)), Array2::zeros((m, n)));
    for i in 0..m {
        for j in 0..n {
            let (mut acc, mut abs) = (0.0, 0.0);
            for p in 0..k {
                acc += f(a[[i, p]]) * f(b[[p, j]]);
                abs += (f(a[[i, p]]) * f(b[[p, j]])).abs();
            }
            let (old, old_abs) = if beta == T::zero() {
                (0.0, 0.0)
            } else {
                (f(beta) * f(c[[i, j]]), (f(beta) * f(c[[i, j]])).abs())
            };
            want[[i, j]] = f(alpha) * acc + old;
            scale[[i, j]] = f(alpha).abs() * abs + old_abs;
        }
    }
    (want, scale)
}

/// Asserts `got` is within the documented bound of `want`.
fn check<T: Scalar>(
    got: ArrayView2<'_, T>,
    want: &Array2<f64>,
    scale: &Array2<f64>,
    k: usize,
    what: &str,
) {
    let tol = 2.0 * (k as f64 + 3.0) * T::epsilon().to_f64().unwrap();
    for ((i, j), &g) in got.indexed_iter() {
        let g = g.to_f64().unwrap();
        let err = (g - want[[i, j]]).abs();
        assert!(
            err <= tol * scale[[i, j]] + f64::MIN_POSITIVE,
            "{what}: c[{i},{j}] = {g}, want {} (error {err:e}, bound {:e})",
            want[[i, j]],
            tol * scale[[i, j]]
        );
    }
}

/// One product in one set of layouts with one kernel, checked against `want`.
#[allow(clippy::too_many_arguments)]
fn run_case<T: Scalar>(
    kernel: Tier,
    (alpha, beta): (T, T),
    (a, b, c0): (&Array2<T>, &Array2<T>, &Array2<T>),
    (la, lb, lc): (Layout, Layout, Layout),
    want: &Array2<f64>,
    scale: &Array2<f64>,
) {
    let nan = T::nan();
    let sentinel = T::from_f64(SENTINEL);
    let sa = Stored::new(a, la, nan);
    let sb = Stored::new(b, lb, nan);
    // With beta == 0 the old C must be ignored: make it NaN so a read would show.
    let c_init = if beta == T::zero() {
        c0.mapv(|_| nan)
    } else {
        c0.clone()
    };
    let mut sc = Stored::new(&c_init, lc, sentinel);
    gemm_with_kernel(kernel, alpha, sa.view(), sb.view(), beta, sc.view_mut());
    let what = format!(
        "{} {:?}x{:?}->{:?} m,k,n={:?},{} alpha={alpha} beta={beta}",
        kernel.name(),
        la,
        lb,
        lc,
        a.dim(),
        b.ncols()
    );
    check(sc.view(), want, scale, a.ncols(), &what);
    assert!(sc.padding_intact(sentinel), "{what}: wrote outside C");
}

const ALPHA_BETA: [(f64, f64); 4] = [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25), (1.0, -1.0)];

/// All shapes from {1, 2, 7, 17, 33} and all four transpose combinations (A, Aᵀ) × (B, Bᵀ).
fn small_shapes_all_transposes<T: Scalar>() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let dims = [1, 2, 7, 17, 33];
    let mut case = 0;
    for &m in &dims {
        for &n in &dims {
            for &k in &dims {
                let (a, b, c0) = (
                    random::<T>(m, k, &mut rng),
                    random::<T>(k, n, &mut rng),
                    random::<T>(m, n, &mut rng),
                );
                let (al, be) = ALPHA_BETA[case % ALPHA_BETA.len()];
                case += 1;
                let (alpha, beta) = (T::from_f64(al), T::from_f64(be));
                let (want, scale) = reference(alpha, &a, &b, beta, &c0);
                for kernel in Tier::available() {
                    for la in [Layout::RowMajor, Layout::Transposed] {
                        for lb in [Layout::RowMajor, Layout::Transposed] {
                            run_case(
                                kernel,
                                (alpha, beta),
                                (&a, &b, &c0),
                                (la, lb, Layout::RowMajor),
                                &want,
                                &scale,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn small_shapes_all_transposes_f32() {
    small_shapes_all_transposes::<f32>();
}

#[test]
fn small_shapes_all_transposes_f64() {
    small_shapes_all_transposes::<f64>();
}

/// Shapes with 100 and 257 (several cache blocks, edge tiles, the parallel split), every layout
/// of A, B and C, every alpha/beta case.
fn large_shapes_all_layouts<T: Scalar>() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let shapes = [
        (100, 257, 33),
        (257, 100, 7),
        (33, 100, 257),
        (7, 257, 100),
        (257, 7, 257),
        (1, 257, 100),
        (100, 1, 257),
        (257, 257, 257),
    ];
    for (case, &(m, n, k)) in shapes.iter().enumerate() {
        let (a, b, c0) = (
            random::<T>(m, k, &mut rng),
            random::<T>(k, n, &mut rng),
            random::<T>(m, n, &mut rng),
        );
        let (al, be) = ALPHA_BETA[case % ALPHA_BETA.len()];
        let (alpha, beta) = (T::from_f64(al), T::from_f64(be));
        let (want, scale) = reference(alpha, &a, &b, beta, &c0);
        for kernel in Tier::available() {
            for (i, &la) in LAYOUTS.iter().enumerate() {
                for (j, &lb) in LAYOUTS.iter().enumerate() {
                    // C cycles through its layouts too (strided C takes the kernels' spill path).
                    let lc = [
                        Layout::RowMajor,
                        Layout::Transposed,
                        Layout::EveryOtherRow,
                        Layout::ColMajor,
                        Layout::Reversed,
                        Layout::RowsReversed,
                    ][(i + j) % 6];
                    run_case(
                        kernel,
                        (alpha, beta),
                        (&a, &b, &c0),
                        (la, lb, lc),
                        &want,
                        &scale,
                    );
                }
            }
        }
    }
}

#[test]
fn large_shapes_all_layouts_f32() {
    large_shapes_all_layouts::<f32>();
}

#[test]
fn large_shapes_all_layouts_f64() {
    large_shapes_all_layouts::<f64>();
}

/// Wide products cross the `NC` column blocks (2048 for the SIMD kernels, 1024 portable), on
/// the packed-B (m = 40) and in-place-B (m = 7) paths, as a batched im2col product would.
#[test]
fn wide_products_cross_column_blocks() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (m, n, k) in [(40, 2100, 33), (7, 2100, 20)] {
        let (a, b, c0) = (
            random::<f32>(m, k, &mut rng),
            random::<f32>(k, n, &mut rng),
            random::<f32>(m, n, &mut rng),
        );
        let (want, scale) = reference(1.0, &a, &b, 1.0, &c0);
        for kernel in Tier::available() {
            for lb in [Layout::RowMajor, Layout::Transposed] {
                let layouts = (Layout::RowMajor, lb, Layout::RowMajor);
                run_case(kernel, (1.0, 1.0), (&a, &b, &c0), layouts, &want, &scale);
            }
        }
    }
}

/// Shallow products (`k` up to 16) read A, and B when its rows are contiguous, in place
/// instead of packing them. Every edge of that path: `m`, `n` and `k` of 1, odd sizes, one
/// and several tiles in both directions, LeNet's `fc3_dx` and `conv2_dcols` shapes, A and B
/// plain, transposed, strided or reversed, C row-major or transposed, every alpha/beta case,
/// every kernel.
#[test]
fn small_k_products_every_layout() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let shapes = [(1, 1), (1, 37), (37, 1), (13, 17), (150, 100), (256, 84)];
    let a_layouts = [
        Layout::RowMajor,
        Layout::Transposed,
        Layout::EveryOtherRow,
        Layout::Reversed,
    ];
    let b_layouts = [Layout::RowMajor, Layout::Transposed, Layout::RowsReversed];
    let mut case = 0;
    for k in [1, 2, 3, 10, 16] {
        for &(m, n) in &shapes {
            let (a, b, c0) = (
                random::<f32>(m, k, &mut rng),
                random::<f32>(k, n, &mut rng),
                random::<f32>(m, n, &mut rng),
            );
            let (al, be) = ALPHA_BETA[case % ALPHA_BETA.len()];
            case += 1;
            let (alpha, beta) = (al as f32, be as f32);
            let (want, scale) = reference(alpha, &a, &b, beta, &c0);
            for kernel in Tier::available() {
                for (i, &la) in a_layouts.iter().enumerate() {
                    for (j, &lb) in b_layouts.iter().enumerate() {
                        let lc = [Layout::RowMajor, Layout::Transposed][(i + j) % 2];
                        let layouts = (la, lb, lc);
                        let ops = (&a, &b, &c0);
                        run_case(kernel, (alpha, beta), ops, layouts, &want, &scale);
                    }
                }
            }
        }
    }
}

/// The LeNet-5 products (per image and per batch), forward and backward forms, every kernel.
#[test]
fn lenet_shapes_every_kernel() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // (m, n, k, A transposed, B transposed)
    let cases = [
        (6, 784, 25, false, false),    // conv1 forward: W·cols
        (16, 100, 150, false, false),  // conv2 forward
        (6, 25, 784, false, true),     // conv1 dW += gout·colsᵀ
        (16, 150, 100, false, true),   // conv2 dW
        (25, 784, 6, true, false),     // conv1 dcols = Wᵀ·gout
        (150, 100, 16, true, false),   // conv2 dcols
        (256, 120, 400, false, true),  // fc1 forward x·Wᵀ
        (64, 84, 120, false, true),    // fc2 forward
        (32, 10, 84, false, true),     // fc3 forward
        (120, 400, 256, true, false),  // fc1 dW = gyᵀ·x
        (256, 400, 120, false, false), // fc1 dx = gy·W
    ];
    for &(m, n, k, ta, tb) in &cases {
        let (a, b, c0) = (
            random::<f32>(m, k, &mut rng),
            random::<f32>(k, n, &mut rng),
            random::<f32>(m, n, &mut rng),
        );
        let la = if ta {
            Layout::Transposed
        } else {
            Layout::RowMajor
        };
        let lb = if tb {
            Layout::Transposed
        } else {
            Layout::RowMajor
        };
        for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0)] {
            let (want, scale) = reference(alpha, &a, &b, beta, &c0);
            for kernel in Tier::available() {
                run_case(
                    kernel,
                    (alpha, beta),
                    (&a, &b, &c0),
                    (la, lb, Layout::RowMajor),
                    &want,
                    &scale,
                );
            }
        }
    }
}

#[test]
fn empty_dimensions() {
    for kernel in Tier::available() {
        // k == 0: C = beta·C, and with beta == 0 even a NaN C becomes zero.
        let (a, b) = (Array2::<f32>::zeros((3, 0)), Array2::<f32>::zeros((0, 4)));
        let mut c = Array2::from_elem((3, 4), 2.0f32);
        gemm_with_kernel(kernel, 1.0, a.view(), b.view(), 0.5, c.view_mut());
        assert!(c.iter().all(|&x| x == 1.0), "{c}");
        let mut c = Array2::from_elem((3, 4), f32::NAN);
        gemm_with_kernel(kernel, 1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert!(c.iter().all(|&x| x == 0.0), "{c}");
        // m == 0 or n == 0: nothing to write, nothing to panic about.
        let mut c = Array2::<f32>::zeros((0, 4));
        gemm_with_kernel(
            kernel,
            1.0,
            Array2::zeros((0, 5)).view(),
            Array2::zeros((5, 4)).view(),
            0.0,
            c.view_mut(),
        );
        let mut c = Array2::<f32>::zeros((3, 0));
        gemm_with_kernel(
            kernel,
            1.0,
            Array2::zeros((3, 5)).view(),
            Array2::zeros((5, 0)).view(),
            0.0,
            c.view_mut(),
        );
    }
    assert_eq!(
        matmul(
            Array2::<f64>::zeros((2, 0)).view(),
            Array2::zeros((0, 3)).view()
        ),
        Array2::zeros((2, 3))
    );
}

#[test]
fn alpha_zero_does_not_read_inputs() {
    let a = Array2::from_elem((4, 5), f32::NAN);
    let b = Array2::from_elem((5, 6), f32::INFINITY);
    let mut c = Array2::from_elem((4, 6), 3.0f32);
    gemm(0.0, a.view(), b.view(), 2.0, c.view_mut());
    assert!(c.iter().all(|&x| x == 6.0), "{c}");
}

#[test]
fn matmul_and_gemm_with_beta_0_agree_with_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (a, b) = (
        random::<f32>(37, 41, &mut rng),
        random::<f32>(41, 29, &mut rng),
    );
    let (want, scale) = reference(1.0, &a, &b, 0.0, &Array2::zeros((37, 29)));
    check(
        matmul(a.view(), b.view()).view(),
        &want,
        &scale,
        41,
        "matmul",
    );
    let mut c = Array2::from_elem((37, 29), f32::NAN);
    gemm(1.0, a.view(), b.view(), 0.0, c.view_mut());
    check(c.view(), &want, &scale, 41, "gemm, beta 0");
}

#[test]
#[should_panic(expected = "gemm: a is [2, 3] but b is [4, 5]")]
fn mismatched_inner_dimension_panics() {
    matmul(
        Array2::<f32>::zeros((2, 3)).view(),
        Array2::zeros((4, 5)).view(),
    );
}

#[test]
#[should_panic(expected = "gemm: c must be [2, 5]")]
fn mismatched_output_panics() {
    let mut c = Array2::<f32>::zeros((5, 2));
    gemm(
        1.0,
        Array2::zeros((2, 3)).view(),
        Array2::zeros((3, 5)).view(),
        0.0,
        c.view_mut(),
    );
}

#[test]
fn kernel_name_is_the_active_kernel() {
    let name = Tier::active().name();
    assert_eq!(Tier::from_name(name), Some(Tier::active()));
    assert!(["portable", "avx2", "avx512"].contains(&name), "{name}");
    assert!(Tier::active().is_supported());
    println!(
        "gemm kernel in use: {name}; supported: {:?}",
        Tier::available()
    );
}

/// Number of elements of `x` and `y` whose bits differ.
fn differ(x: &Array2<f32>, y: &Array2<f32>) -> usize {
    x.iter()
        .zip(y)
        .filter(|(p, q)| p.to_bits() != q.to_bits())
        .count()
}

/// Same inputs → bit-identical outputs, for products large enough to be split over threads,
/// whether they run on a one-thread pool, the default pool, or piece by piece; for B row-major
/// (packed path) and column-major (`A·Bᵀ`, the AVX-512 unpacked path).
#[test]
fn parallel_results_are_bit_identical() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (m, n, k) = (301, 283, 517);
    let a = random::<f32>(m, k, &mut rng);
    let b_row = random::<f32>(k, n, &mut rng);
    let b_col = b_row.t().as_standard_layout().into_owned();
    let (want, scale) = reference(1.0, &a, &b_row, 0.0, &Array2::zeros((m, n)));
    for kernel in Tier::available() {
        for (layout, b) in [("row-major B", b_row.view()), ("column-major B", b_col.t())] {
            let what = format!("{} {layout}", kernel.name());
            let run = || {
                let mut c = Array2::<f32>::zeros((m, n));
                gemm_with_kernel(kernel, 1.0, a.view(), b, 0.0, c.view_mut());
                c
            };
            let first = run();
            check(first.view(), &want, &scale, k, &what);
            let d = differ(&first, &run());
            assert_eq!(d, 0, "{what}: two runs differ in {d} elements");
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let d = differ(&first, &pool.install(run));
            assert_eq!(d, 0, "{what}: the 1-thread pool differs in {d} elements");
            // Row blocks computed as separate products. Same bits as long as they take the same
            // route: always except AVX2 with column-major B, which picks its unpacked dot route
            // for small products only.
            if kernel == Tier::Avx2 && layout == "column-major B" {
                continue;
            }
            let mut pieces = Array2::<f32>::from_elem((m, n), f32::NAN);
            for i0 in (0..m).step_by(13) {
                let i1 = (i0 + 13).min(m);
                let c = pieces.slice_mut(s![i0..i1, ..]);
                gemm_with_kernel(kernel, 1.0, a.slice(s![i0..i1, ..]), b, 0.0, c);
            }
            let d = differ(&first, &pieces);
            assert_eq!(d, 0, "{what}: row pieces differ in {d} elements");
        }
    }
}

/// `Parallelism::CallingThread` gives the same bits as the split product on a two-thread pool,
/// for every kernel, both B layouts and beta ≠ 0, at sizes above the split threshold: tall
/// (row pieces sharing one packed B), short (column pieces; B read in place when row-major),
/// wider than one column block of B, fc1's weight gradient at batch 256, and a tall shallow
/// product (A read in place by every row piece).
#[test]
fn calling_thread_results_are_bit_identical_to_parallel() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (m, n, k) in [
        (263, 301, 300),
        (20, 1500, 300),
        (16, 5000, 100),
        (120, 400, 256),
        (2000, 300, 8),
    ] {
        let a = random::<f32>(m, k, &mut rng);
        let b_row = random::<f32>(k, n, &mut rng);
        let b_col = b_row.t().as_standard_layout().into_owned();
        let c0 = random::<f32>(m, n, &mut rng);
        let (want, scale) = reference(0.5, &a, &b_row, -1.5, &c0);
        for kernel in Tier::available() {
            for b in [b_row.view(), b_col.t()] {
                let what = format!("{} {m}x{n}x{k} B strides {:?}", kernel.name(), b.strides());
                let run = |parallelism| {
                    let mut c = c0.clone();
                    gemm_with(kernel, parallelism, 0.5, a.view(), b, -1.5, c.view_mut());
                    c
                };
                let serial = run(Parallelism::CallingThread);
                check(serial.view(), &want, &scale, k, &what);
                let split = pool.install(|| run(Parallelism::Rayon));
                let d = differ(&serial, &split);
                assert_eq!(
                    d, 0,
                    "{what}: calling-thread and split results differ in {d} elements"
                );
            }
        }
    }
}

/// A parallel product whose pieces all run on the calling thread (the pool's other thread is
/// held busy until the product is done) finishes with the serial bits: a piece waits only for
/// panels of B another piece is packing at that moment, never for one not yet started.
#[test]
fn a_split_product_finishes_when_one_thread_runs_every_piece() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (m, n, k) = (263, 301, 300);
    let (a, b) = (random::<f32>(m, k, &mut rng), random::<f32>(k, n, &mut rng));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for kernel in Tier::available() {
        let run = |parallelism| {
            let mut c = Array2::<f32>::zeros((m, n));
            gemm_with(
                kernel,
                parallelism,
                1.0,
                a.view(),
                b.view(),
                0.0,
                c.view_mut(),
            );
            c
        };
        let serial = run(Parallelism::CallingThread);
        // A first product grows every pool thread's packing buffers (a growth is broadcast to
        // all of them, which the busy thread below would never answer).
        pool.install(|| run(Parallelism::Rayon));
        let done = AtomicBool::new(false);
        let (split, ()) = pool.install(|| {
            rayon::join(
                || {
                    let c = run(Parallelism::Rayon);
                    done.store(true, Ordering::Release);
                    c
                },
                // Stolen first (the oldest job), it keeps the other thread away from the pieces.
                || {
                    while !done.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                },
            )
        });
        let (d, what) = (differ(&serial, &split), kernel.name());
        assert_eq!(
            d, 0,
            "{what}: one thread's pieces differ from the serial product in {d} elements"
        );
    }
}

/// Broadcast operands (stride 0) are read like any other strides.
#[test]
fn broadcast_operands() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (row, col) = (
        random::<f32>(1, 37, &mut rng),
        random::<f32>(37, 1, &mut rng),
    );
    let a = row.broadcast((19, 37)).unwrap();
    let b = col.broadcast((37, 41)).unwrap();
    let (want, scale) = reference(
        1.0,
        &a.to_owned(),
        &b.to_owned(),
        0.0,
        &Array2::zeros((19, 41)),
    );
    let (a_owned, b_col_major) = (a.to_owned(), b.t().as_standard_layout().into_owned());
    for kernel in Tier::available() {
        for (a, b) in [(a, b), (a, b_col_major.t()), (a_owned.view(), b)] {
            let mut c = Array2::from_elem((19, 41), f32::NAN);
            gemm_with_kernel(kernel, 1.0, a, b, 0.0, c.view_mut());
            check(c.view(), &want, &scale, 37, kernel.name());
        }
    }
}

/// After a first call has grown this thread's packing buffers, calls allocate nothing: the
/// LeNet products (run serially, as in the training loop), on every kernel and both routes.
#[test]
fn no_allocation_per_call() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // (m, n, k, B transposed): conv forward, conv dW, linear forward and backward.
    let shapes = [
        (16, 100, 150, false),
        (6, 25, 784, true),
        (256, 120, 400, true),
        (256, 400, 120, false),
    ];
    for kernel in Tier::available() {
        for &(m, n, k, tb) in &shapes {
            let a = random::<f32>(m, k, &mut rng);
            let b = if tb {
                random::<f32>(n, k, &mut rng)
            } else {
                random::<f32>(k, n, &mut rng)
            };
            let bv = if tb { b.t() } else { b.view() };
            let mut c = Array2::<f32>::zeros((m, n));
            // Products above the parallel threshold run on rayon's threads (not counted here);
            // a one-thread pool keeps everything on this thread.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            pool.install(|| {
                gemm_with_kernel(kernel, 1.0, a.view(), bv, 0.0, c.view_mut());
                let before = ALLOCATIONS.with(|n| n.get());
                for _ in 0..3 {
                    gemm_with_kernel(kernel, 1.0, a.view(), bv, 1.0, c.view_mut());
                }
                let after = ALLOCATIONS.with(|n| n.get());
                assert_eq!(
                    after - before,
                    0,
                    "{} {m}x{n}x{k}: allocated",
                    kernel.name()
                );
            });
        }
    }
}

/// f64 runs the same portable source on every path (no fused multiply-add): identical bits.
#[test]
fn f64_results_are_identical_on_every_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let (a, b) = (
        random::<f64>(45, 70, &mut rng),
        random::<f64>(70, 53, &mut rng),
    );
    let results: Vec<Array2<f64>> = Tier::available()
        .into_iter()
        .map(|kernel| {
            let mut c = Array2::zeros((45, 53));
            gemm_with_kernel(
                kernel,
                1.0,
                a.view(),
                b.t().as_standard_layout().t(),
                0.0,
                c.view_mut(),
            );
            c
        })
        .collect();
    for c in &results[1..] {
        assert!(c
            .iter()
            .zip(&results[0])
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random shapes (zero included), layouts, alpha/beta and kernels.
    #[test]
    fn random_shapes_match_reference(
        m in 0usize..70, n in 0usize..90, k in 0usize..80,
        la in 0usize..6, lb in 0usize..6, lc in 0usize..6,
        ab in 0usize..4, kernel in 0usize..3, seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (a, b, c0) = (random::<f32>(m, k, &mut rng), random::<f32>(k, n, &mut rng), random::<f32>(m, n, &mut rng));
        let (alpha, beta) = (ALPHA_BETA[ab].0 as f32, ALPHA_BETA[ab].1 as f32);
        let kernels = Tier::available();
        let kernel = kernels[kernel % kernels.len()];
        let (want, scale) = reference(alpha, &a, &b, beta, &c0);
        run_case(kernel, (alpha, beta), (&a, &b, &c0), (LAYOUTS[la], LAYOUTS[lb], LAYOUTS[lc]), &want, &scale);
    }
}
