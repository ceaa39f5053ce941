//! A grow-only f32 buffer viewed as an n-dimensional array.
//!
//! Layers keep their outputs and gradients in these. The backing `Vec` only grows, so switching
//! between the training batch, the smaller last batch of an epoch and a larger evaluation batch
//! allocates at most once per new maximum size: the steady-state training loop allocates nothing.

use ndarray::{ArrayView, ArrayViewMut, Dimension};

/// Contiguous row-major storage with a current shape `dim`.
#[derive(Debug, Clone, Default)]
pub struct Buffer<D: Dimension> {
    data: Vec<f32>,
    dim: D,
}

impl<D: Dimension> Buffer<D> {
    /// An empty buffer (shape all zeros, no memory).
    pub fn new() -> Self {
        Buffer {
            data: Vec::new(),
            dim: D::zeros(D::NDIM.unwrap_or(0)),
        }
    }

    /// Sets the shape to `dim`, growing the storage if it is too small. Contents are unspecified
    /// afterwards (every user overwrites the whole buffer).
    pub fn set_dim(&mut self, dim: D) {
        let len = dim.size();
        if self.data.len() < len {
            self.data.resize(len, 0.0);
        }
        self.dim = dim;
    }

    /// The current shape.
    pub fn dim(&self) -> D {
        self.dim.clone()
    }

    /// The current contents as an array view.
    pub fn view(&self) -> ArrayView<'_, f32, D> {
        let len = self.dim.size();
        ArrayView::from_shape(self.dim.clone(), &self.data[..len])
            .expect("buffer length matches its shape")
    }

    /// The current contents as a mutable array view.
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, f32, D> {
        let len = self.dim.size();
        ArrayViewMut::from_shape(self.dim.clone(), &mut self.data[..len])
            .expect("buffer length matches its shape")
    }

    /// The current contents as a flat slice.
    pub fn as_slice(&self) -> &[f32] {
        &self.data[..self.dim.size()]
    }

    /// The current contents as a flat mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        let len = self.dim.size();
        &mut self.data[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Ix2;

    #[test]
    fn grows_but_never_shrinks() {
        let mut b = Buffer::<Ix2>::new();
        b.set_dim(Ix2(4, 3));
        assert_eq!(b.view().dim(), (4, 3));
        let cap = b.data.capacity();
        b.set_dim(Ix2(2, 3));
        assert_eq!(b.as_slice().len(), 6);
        assert_eq!(b.data.capacity(), cap);
        b.set_dim(Ix2(8, 3));
        assert_eq!(b.view_mut().dim(), (8, 3));
    }
}
