# Loss and gradient of a linear model over a CSR (compressed sparse row) block.
#
# Included after _kernels_impl.pxi (whose loss functions it uses) by _kernels.pyx
# and _kernels_avx2.pyx: the sparse forms of grad_loss_linear and
# grad_loss_multinomial, with the same losses, clipping and sample weights, so
# that a CSR block and its dense copy give the same results to rounding.
#
# One pass over the stored entries: a row's margin is the sum of its entries
# times the weights they index, then its loss derivative scatters the same
# entries (still in L1 cache) into the gradient.  Only stored entries are read:
# the cost is O(nnz + n), plus O(d) to clear and write the gradient.  Column
# indices need not be sorted and may repeat within a row (a repeated column adds,
# as scipy's ``X @ w`` does); an empty row's margin is the intercept.
#
# All arithmetic is in double precision whatever the dtype, as in the dense
# kernels: float64 gradients accumulate in ``out`` itself, float32 ones in a
# double scratch that is rounded into ``out`` at the end.  The GIL is released
# for the loop.  The structure is trusted here (indptr non-decreasing from 0 to at
# most len(data), indices in [0, d)): daskgd.kernels checks it.

from libc.stdint cimport int32_t, int64_t

# Column indices and row pointers are typed apart, so that a block keeps whatever
# int32/int64 combination it was stored with (no copy of its indices).
ctypedef fused csr_index:
    int32_t
    int64_t

ctypedef fused csr_pointer:
    int32_t
    int64_t


def grad_loss_csr_linear(const floating[::1] data, const csr_index[::1] indices,
                         const csr_pointer[::1] indptr, const floating[::1] y,
                         const floating[::1] w, double b,
                         const floating[::1] sample_weight,
                         floating[::1] out, int loss_code, double epsilon,
                         const floating[::1] offset=None, double power=1.5):
    """Summed loss of the CSR block (data, indices, indptr); gradient of w into
    ``out[:d]`` (d = len(w)) and of b into ``out[d]``.

    ``sample_weight`` and ``offset`` (added to the margins) may be None;
    ``power`` is the Tweedie power.  Inputs are assumed validated.
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1, d = w.shape[0]
    cdef Py_ssize_t i, j, q, start, stop
    cdef double loss_sum = 0.0, grad_b = 0.0, p, dl
    cdef const floating* swp = NULL
    cdef const floating* offp = NULL
    cdef double* acc
    cdef double* scratch = NULL
    if floating is double:
        acc = &out[0]
    else:
        scratch = <double*>calloc(d + 1, sizeof(double))
        if scratch == NULL:
            raise MemoryError()
        acc = scratch
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    if offset is not None and n > 0:
        offp = &offset[0]
    loss_code = _resolve(loss_code, power)
    with nogil:
        if floating is double:
            memset(acc, 0, (d + 1) * sizeof(double))
        for i in range(n):
            start = <Py_ssize_t>indptr[i]
            stop = <Py_ssize_t>indptr[i + 1]
            p = 0.0
            for q in range(start, stop):
                p += <double>data[q] * <double>w[indices[q]]
            # the intercept and the offset after the products, as the dense kernel
            p += b
            if offp != NULL:
                p += offp[i]
            loss_sum += _weighted_loss(loss_code, p, y[i], epsilon, power, swp, i,
                                       &dl)
            grad_b += dl
            if dl != 0.0:
                for q in range(start, stop):
                    acc[indices[q]] += dl * <double>data[q]
        acc[d] = grad_b
        if floating is float:
            for j in range(d + 1):
                out[j] = <float>scratch[j]
    free(scratch)
    return loss_sum


def grad_loss_csr_multinomial(const floating[::1] data, const csr_index[::1] indices,
                              const csr_pointer[::1] indptr, const floating[::1] y,
                              const floating[:, ::1] W, const floating[::1] b,
                              const floating[::1] sample_weight,
                              floating[:, ::1] out):
    """Softmax cross-entropy of the CSR block for W (d x k), b (k); y holds class
    indices.  The gradient of W goes to ``out[:d]`` and that of b to ``out[d]``.
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1, d = W.shape[0], k = W.shape[1]
    cdef Py_ssize_t i, j, q, c, label, start, stop
    cdef double loss_sum = 0.0, m, s, sw, xq
    cdef const floating* swp = NULL
    cdef double* acc
    # Margins (k) and derivatives (k), then for float32 the gradient ((d+1) x k);
    # one more entry so that k = 0 never asks calloc for nothing.
    cdef double* z
    cdef double* dl
    cdef double* scratch
    if floating is double:
        scratch = <double*>calloc(2 * k + 1, sizeof(double))
    else:
        scratch = <double*>calloc((d + 3) * k + 1, sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    z = scratch
    dl = z + k
    if floating is double:
        acc = &out[0, 0]
    else:
        acc = dl + k
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    with nogil:
        if floating is double:
            memset(acc, 0, (d + 1) * k * sizeof(double))
        for i in range(n):
            start = <Py_ssize_t>indptr[i]
            stop = <Py_ssize_t>indptr[i + 1]
            for c in range(k):
                z[c] = b[c]
            for q in range(start, stop):
                j = <Py_ssize_t>indices[q]
                xq = data[q]
                for c in range(k):
                    z[c] += xq * W[j, c]
            m = z[0]
            for c in range(1, k):
                if z[c] > m:
                    m = z[c]
            s = 0.0
            for c in range(k):
                dl[c] = exp(z[c] - m)
                s += dl[c]
            label = <Py_ssize_t>y[i]
            sw = swp[i] if swp != NULL else 1.0
            loss_sum += sw * (log(s) + m - z[label])
            for c in range(k):
                dl[c] = sw * dl[c] / s
            dl[label] -= sw
            for q in range(start, stop):
                j = <Py_ssize_t>indices[q]
                xq = data[q]
                for c in range(k):
                    acc[j * k + c] += xq * dl[c]
            for c in range(k):
                acc[d * k + c] += dl[c]
        if floating is float:
            for j in range(d + 1):
                for c in range(k):
                    out[j, c] = <float>acc[j * k + c]
    free(scratch)
    return loss_sum


def column_squares_csr(const floating[::1] data, const csr_index[::1] indices,
                       const csr_pointer[::1] indptr, const double[::1] sample_weight,
                       double[::1] out):
    """Add ``sample_weight[i] * data[q]**2`` of each stored entry ``q`` of row ``i``
    to ``out[indices[q]]``: the diagonal of ``X^T W X`` (full-batch L-BFGS's
    preconditioner) in one pass, without the float64 copy of the values that
    scipy's ``w @ (X o X)`` needs.  ``sample_weight`` None: ones.
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1
    cdef Py_ssize_t i, q
    cdef double wi, v
    cdef const double* swp = NULL
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    with nogil:
        for i in range(n):
            wi = 1.0 if swp == NULL else swp[i]
            for q in range(<Py_ssize_t>indptr[i], <Py_ssize_t>indptr[i + 1]):
                v = <double>data[q]
                out[indices[q]] += wi * v * v
