# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fused loss-and-gradient kernels for linear models.

One pass over the rows: for each row the margin (a dot product), the loss and
its derivative, then the row is added to the gradient while it is still in L1
cache.  X is therefore read from memory exactly once, which is what bounds a
linear model's gradient (numpy's ``X @ w`` then ``X.T @ r`` reads it twice).

Why per row and not cache-blocked BLAS: a row of a typical problem (d ~ 100)
is 800 bytes, so the axpy that follows the dot product always hits L1, and the
reductions vectorise because ``setup.py`` compiles with ``-fassociative-math``
and the dot product keeps four independent accumulators.  Measured against a
numpy sketch of the blocked form this is faster and needs no BLAS at build
time; ``bench/bench_kernels.py`` keeps the evidence.

All arithmetic is carried in double precision, whatever the input dtype:
float32 inputs are widened as they are read, so the summed loss and gradient
of a float32 block are as accurate as the inputs allow.  The GIL is released
for the whole loop.

This module knows nothing about estimators or validation: ``daskgd.kernels``
checks shapes, dtypes and contiguity and then calls in here.
"""

from cython cimport floating
from libc.math cimport exp, fabs, log, log1p
from libc.stdlib cimport calloc, free

# Loss codes: must agree with daskgd.losses.
cdef enum:
    SQUARED_ERROR = 0
    HUBER = 1
    LOG_LOSS = 2
    HINGE = 3
    SQUARED_HINGE = 4

# Rows handled together by the linear kernel (see _dots_block).
cdef enum:
    ROWS = 4

# As scikit-learn's SGD: a derivative beyond this is clipped so that a huge
# margin cannot overflow the gradient.
cdef double MAX_DLOSS = 1e12


cdef inline double _dot(const floating* x, const floating* w,
                        Py_ssize_t d) noexcept nogil:
    # Four accumulators break the dependency chain of the reduction.
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef Py_ssize_t j = 0
    while j + 4 <= d:
        a0 += <double>x[j] * <double>w[j]
        a1 += <double>x[j + 1] * <double>w[j + 1]
        a2 += <double>x[j + 2] * <double>w[j + 2]
        a3 += <double>x[j + 3] * <double>w[j + 3]
        j += 4
    while j < d:
        a0 += <double>x[j] * <double>w[j]
        j += 1
    return (a0 + a1) + (a2 + a3)


cdef inline void _axpy(double a, const floating* x, double* acc,
                       Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(d):
        acc[j] += a * <double>x[j]


cdef inline double _clip(double v) noexcept nogil:
    if v > MAX_DLOSS:
        return MAX_DLOSS
    if v < -MAX_DLOSS:
        return -MAX_DLOSS
    return v


cdef inline double _loss_and_derivative(int code, double p, double y,
                                        double epsilon,
                                        double* dloss) noexcept nogil:
    """Loss of margin ``p`` against target ``y``; its derivative in dloss."""
    cdef double r, z, e
    if code == SQUARED_ERROR:
        r = p - y
        dloss[0] = _clip(r)
        return 0.5 * r * r
    if code == HUBER:
        r = p - y
        if fabs(r) <= epsilon:
            dloss[0] = r
            return 0.5 * r * r
        dloss[0] = epsilon if r > 0 else -epsilon
        return epsilon * fabs(r) - 0.5 * epsilon * epsilon
    if code == LOG_LOSS:
        # log(1 + exp(-z)) and its derivative, stable for any z.
        z = p * y
        if z > 0:
            e = exp(-z)
            dloss[0] = -y * e / (1.0 + e)
            return log1p(e)
        e = exp(z)
        dloss[0] = -y / (1.0 + e)
        return -z + log1p(e)
    if code == HINGE:
        z = p * y
        if z <= 1.0:
            dloss[0] = -y
            return 1.0 - z
        dloss[0] = 0.0
        return 0.0
    # SQUARED_HINGE
    z = 1.0 - p * y
    if z > 0:
        dloss[0] = _clip(-2.0 * y * z)
        return z * z
    dloss[0] = 0.0
    return 0.0


cdef inline void _dots_block(const floating* x, const floating* w,
                             Py_ssize_t d, double b,
                             double* p) noexcept nogil:
    """Margins of ROWS consecutive rows starting at ``x``."""
    cdef const floating* x1 = x + d
    cdef const floating* x2 = x + 2 * d
    cdef const floating* x3 = x + 3 * d
    cdef double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0, wj
    cdef Py_ssize_t j
    for j in range(d):
        wj = w[j]
        p0 += <double>x[j] * wj
        p1 += <double>x1[j] * wj
        p2 += <double>x2[j] * wj
        p3 += <double>x3[j] * wj
    p[0] = p0 + b
    p[1] = p1 + b
    p[2] = p2 + b
    p[3] = p3 + b


cdef inline void _axpy_block(const double* a, const floating* x, double* acc,
                             Py_ssize_t d) noexcept nogil:
    """acc += a[0] * row0 + ... + a[3] * row3 for ROWS consecutive rows."""
    cdef const floating* x1 = x + d
    cdef const floating* x2 = x + 2 * d
    cdef const floating* x3 = x + 3 * d
    cdef double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3]
    cdef Py_ssize_t j
    for j in range(d):
        acc[j] += (a0 * <double>x[j] + a1 * <double>x1[j]
                   + a2 * <double>x2[j] + a3 * <double>x3[j])


cdef inline double _weighted_loss(int code, double p, double y, double epsilon,
                                  const floating* swp, Py_ssize_t i,
                                  double* dloss) noexcept nogil:
    """Loss of row i times its weight; the weighted derivative in dloss."""
    cdef double loss = _loss_and_derivative(code, p, y, epsilon, dloss)
    cdef double sw
    if swp == NULL:
        return loss
    sw = swp[i]
    dloss[0] *= sw
    return sw * loss


def grad_loss_linear(const floating[:, ::1] X, const floating[::1] y,
                     const floating[::1] w, double b,
                     const floating[::1] sample_weight,
                     floating[::1] out, int loss_code, double epsilon):
    """Summed loss; gradient of w into ``out[:d]`` and of b into ``out[d]``.

    ``sample_weight`` may be None.  Inputs are assumed validated.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j, r
    cdef double loss_sum = 0.0, grad_b = 0.0
    cdef double p[ROWS]
    cdef double dl[ROWS]
    cdef const floating* wp = &w[0] if d > 0 else NULL
    cdef const floating* swp = NULL
    cdef const floating* x0
    cdef double* acc = <double*>calloc(d + 1, sizeof(double))
    if acc == NULL:
        raise MemoryError()
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    with nogil:
        i = 0
        # Blocks of ROWS rows: ROWS independent dot products share every
        # load of w[j], and the gradient is updated once per block.
        while i + ROWS <= n:
            x0 = &X[i, 0] if d > 0 else NULL
            _dots_block(x0, wp, d, b, p)
            for r in range(ROWS):
                loss_sum += _weighted_loss(loss_code, p[r], y[i + r], epsilon,
                                           swp, i + r, &dl[r])
                grad_b += dl[r]
            if dl[0] != 0.0 or dl[1] != 0.0 or dl[2] != 0.0 or dl[3] != 0.0:
                _axpy_block(dl, x0, acc, d)
            i += ROWS
        while i < n:
            x0 = &X[i, 0] if d > 0 else NULL
            p[0] = _dot(x0, wp, d) + b
            loss_sum += _weighted_loss(loss_code, p[0], y[i], epsilon, swp, i,
                                       &dl[0])
            grad_b += dl[0]
            if dl[0] != 0.0:
                _axpy(dl[0], x0, acc, d)
            i += 1
        for j in range(d):
            out[j] = <floating>acc[j]
        out[d] = <floating>grad_b
    free(acc)
    return loss_sum


def grad_loss_multinomial(const floating[:, ::1] X, const floating[::1] y,
                          const floating[:, ::1] W, const floating[::1] b,
                          const floating[::1] sample_weight,
                          floating[:, ::1] out):
    """Softmax cross-entropy for W (d x k), b (k); y holds class indices.

    The gradient of W goes to ``out[:d]`` and that of b to ``out[d]``.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], k = W.shape[1]
    cdef Py_ssize_t i, j, c, label
    cdef double loss_sum = 0.0, m, s, sw, xj
    cdef const floating* swp = NULL
    # One allocation: gradient accumulator (d+1) x k, margins k, derivatives k.
    cdef double* acc = <double*>calloc((d + 3) * k, sizeof(double))
    cdef double* z
    cdef double* dl
    if acc == NULL:
        raise MemoryError()
    z = acc + (d + 1) * k
    dl = z + k
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    with nogil:
        for i in range(n):
            for c in range(k):
                z[c] = b[c]
            for j in range(d):
                xj = X[i, j]
                for c in range(k):
                    z[c] += xj * W[j, c]
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
            for j in range(d):
                xj = X[i, j]
                for c in range(k):
                    acc[j * k + c] += xj * dl[c]
            for c in range(k):
                acc[d * k + c] += dl[c]
        for j in range(d + 1):
            for c in range(k):
                out[j, c] = <floating>acc[j * k + c]
    free(acc)
    return loss_sum
