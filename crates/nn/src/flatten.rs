//! Flatten `[n, c, h, w]` to `[n, c·h·w]` (feature index c·h·w + …, as `torch.flatten(x, 1)`)
//! and back. Both are free reshapes of contiguous views: no copy, no buffer.

use ndarray::{ArrayView2, ArrayView4};

/// Flattening between a convolutional and a fully connected part.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl Flatten {
    /// `[n, c, h, w]` → `[n, c·h·w]`.
    ///
    /// # Panics
    /// If `input` is not contiguous in standard (row-major) order.
    pub fn forward<'a>(&self, input: ArrayView4<'a, f32>) -> ArrayView2<'a, f32> {
        let (n, c, h, w) = input.dim();
        input
            .into_shape_with_order((n, c * h * w))
            .expect("Flatten: input must be contiguous row-major")
    }

    /// `[n, c·h·w]` → `[n, c, h, w]` for the gradient, with `dim` the forward input's shape.
    ///
    /// # Panics
    /// If the sizes disagree or `grad_out` is not contiguous.
    pub fn backward<'a>(
        &self,
        grad_out: ArrayView2<'a, f32>,
        dim: (usize, usize, usize, usize),
    ) -> ArrayView4<'a, f32> {
        grad_out
            .into_shape_with_order(dim)
            .expect("Flatten: gradient must be contiguous with the forward input's size")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn flatten_matches_torch_feature_order() {
        let x = Array4::from_shape_fn((2, 3, 2, 2), |(n, c, h, w)| {
            (n * 1000 + c * 100 + h * 10 + w) as f32
        });
        let f = Flatten.forward(x.view());
        assert_eq!(f.dim(), (2, 12));
        // feature index = c*4 + h*2 + w: (c, h, w) = (2, 1, 0) is feature 10.
        assert_eq!(f[[1, 10]], 1210.0);
        let back = Flatten.backward(f, (2, 3, 2, 2));
        assert_eq!(back, x.view());
    }
}
