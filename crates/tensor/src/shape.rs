//! The one shape check of the crate: every op refuses arguments of the wrong shape through
//! [`check_shape`], with a panic that names the op, the argument, the shape it must have and
//! the shape it has.
//!
//! `check_shape` and every function between it and a public entry point are `#[track_caller]`,
//! so the panic's location is the user's call, not a line inside this crate.

use std::fmt::Debug;

/// The shape an argument must have, and how the panic message says why.
pub(crate) enum Expected<'a, D> {
    /// A shape the op computes: "`{arg}` must be {shape}, got {got}".
    Shape(D),
    /// The shape of another argument, named: "`{arg}` must have the {name}'s shape {shape},
    /// got {got}".
    ShapeOf(&'a str, D),
    /// The shape that fits another argument, shown with its own shape (a product's operand):
    /// "{other} is {other_shape} but `{arg}` is {got}: `{arg}` must be {shape}".
    FitFor {
        /// The argument `arg` must fit.
        other: &'a str,
        /// That argument's shape.
        other_shape: D,
        /// The shape `arg` must have.
        shape: D,
    },
}

/// Panics unless `got` is the expected shape. Shapes are anything printable and comparable:
/// tuples such as `(n, c, h, w)`, arrays such as `[m, n]`, slices from `.shape()`, lengths.
#[track_caller]
pub(crate) fn check_shape<D: Debug + PartialEq>(
    op: &str,
    arg: &str,
    expected: Expected<'_, D>,
    got: D,
) {
    let want = match &expected {
        Expected::Shape(s) | Expected::ShapeOf(_, s) | Expected::FitFor { shape: s, .. } => s,
    };
    if *want != got {
        mismatch(op, arg, &expected, &got);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn mismatch<D: Debug>(op: &str, arg: &str, expected: &Expected<'_, D>, got: &D) -> ! {
    match expected {
        Expected::Shape(s) => panic!("{op}: {arg} must be {s:?}, got {got:?}"),
        Expected::ShapeOf(name, s) => {
            panic!("{op}: {arg} must have the {name}'s shape {s:?}, got {got:?}")
        }
        Expected::FitFor {
            other,
            other_shape,
            shape,
        } => {
            panic!("{op}: {other} is {other_shape:?} but {arg} is {got:?}: {arg} must be {shape:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_shapes_pass() {
        check_shape("op", "out", Expected::Shape((1, 2)), (1, 2));
        check_shape("op", "out", Expected::ShapeOf("input", &[3][..]), &[3][..]);
    }

    #[test]
    #[should_panic(expected = "conv2d: out must be (1, 2, 3, 4), got (1, 2, 3, 5)")]
    fn a_computed_shape_is_named() {
        check_shape("conv2d", "out", Expected::Shape((1, 2, 3, 4)), (1, 2, 3, 5));
    }

    #[test]
    #[should_panic(expected = "gemm: a is [2, 3] but b is [4, 5]: b must be [3, 5]")]
    fn a_product_names_both_operands() {
        let expected = Expected::FitFor {
            other: "a",
            other_shape: [2, 3],
            shape: [3, 5],
        };
        check_shape("gemm", "b", expected, [4, 5]);
    }
}
