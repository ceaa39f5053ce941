//! Raw strided matrix descriptors: what the packing routines and micro-kernels read and write.
//!
//! ndarray views are turned into (pointer, shape, strides) once per call so that the inner loops
//! do plain pointer arithmetic. Strides are in elements and may be negative or zero (broadcast
//! inputs), exactly as ndarray allows.

use ndarray::{ArrayView2, ArrayViewMut2};

/// A read-only `rows × cols` matrix: element `(i, j)` lives at `ptr + i·rs + j·cs`.
#[derive(Debug)]
pub(super) struct MatRef<T> {
    pub ptr: *const T,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

// Manual impls: a derive would require `T: Copy`, but copying the descriptor never copies a `T`.
impl<T> Clone for MatRef<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<T> {}

impl<T> MatRef<T> {
    /// Describes a view. The descriptor must not outlive the view's borrow.
    pub fn from_view(v: &ArrayView2<'_, T>) -> Self {
        let s = v.strides();
        MatRef {
            ptr: v.as_ptr(),
            rows: v.nrows(),
            cols: v.ncols(),
            rs: s[0],
            cs: s[1],
        }
    }

    /// The `rows × cols` sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `i + rows <= self.rows` and `j + cols <= self.cols`, so the new origin is inside the matrix
    /// (or one past it when the block is empty).
    pub unsafe fn block(self, i: usize, j: usize, rows: usize, cols: usize) -> Self {
        debug_assert!(i + rows <= self.rows && j + cols <= self.cols);
        MatRef {
            // SAFETY: (i, j) is within the described matrix (caller's contract).
            ptr: unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) },
            rows,
            cols,
            ..self
        }
    }

    /// Pointer to element `(i, j)`.
    ///
    /// # Safety
    /// `i <= self.rows` and `j <= self.cols`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub unsafe fn get_ptr(self, i: usize, j: usize) -> *const T {
        // SAFETY: within (or one past) the described matrix by the caller's contract.
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// A writable `rows × cols` matrix: element `(i, j)` lives at `ptr + i·rs + j·cs`.
#[derive(Debug)]
pub(super) struct MatMut<T> {
    pub ptr: *mut T,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

// Manual impls, as for `MatRef`. Copies alias the same memory: writers must keep to disjoint
// elements (each `unsafe` use states why it does).
impl<T> Clone for MatMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatMut<T> {}

impl<T> MatMut<T> {
    /// The `rows × cols` sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `i + rows <= self.rows` and `j + cols <= self.cols`.
    pub unsafe fn block(self, i: usize, j: usize, rows: usize, cols: usize) -> Self {
        debug_assert!(i + rows <= self.rows && j + cols <= self.cols);
        MatMut {
            // SAFETY: (i, j) is within (or one past) the described matrix (caller's contract).
            ptr: unsafe { self.at(i, j) },
            rows,
            cols,
            ..self
        }
    }

    /// Describes a mutable view. The descriptor must not outlive the view's borrow.
    pub fn from_view(v: &mut ArrayViewMut2<'_, T>) -> Self {
        let (rows, cols) = v.dim();
        let (rs, cs) = (v.strides()[0], v.strides()[1]);
        MatMut {
            ptr: v.as_mut_ptr(),
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Pointer to element `(i, j)`.
    ///
    /// # Safety
    /// `i <= self.rows` and `j <= self.cols` (one past the end is allowed for empty blocks).
    #[inline(always)]
    pub unsafe fn at(&self, i: usize, j: usize) -> *mut T {
        // SAFETY: within (or one past) the described matrix by the caller's contract.
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

impl<T> MatRef<T> {
    /// The same descriptor for element type `U`; used once `T == U` has been checked.
    pub fn cast<U>(self) -> MatRef<U> {
        MatRef {
            ptr: self.ptr.cast(),
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

impl<T> MatMut<T> {
    /// The same descriptor for element type `U`; used once `T == U` has been checked.
    pub fn cast<U>(self) -> MatMut<U> {
        MatMut {
            ptr: self.ptr.cast(),
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}
