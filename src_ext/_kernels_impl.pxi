# Fused loss-and-gradient kernels for linear models: the shared implementation.
#
# Included by _kernels.pyx (portable build) and _kernels_avx2.pyx (built with
# AVX2 and FMA); daskgd.kernels picks one at import by the CPU's features.
#
# One pass over the rows: margins, loss derivatives, then the rows are added to
# the gradient while they are still in L1 cache, so X is read from memory once
# (numpy's ``X @ w`` then ``X.T @ r`` reads it twice).  Rows go eight at a time
# (ROWS): eight independent dot products share every load of w[j] and break the
# dependency chain of a single reduction, and the gradient accumulator is
# loaded and stored once per eight rows.  The rows a few blocks ahead are
# prefetched so that memory traffic overlaps the arithmetic (rows past the end
# are not: for wide rows that was a third of a million useless requests).  The
# gradient's last update goes straight to the output in its type, so a batch of
# one block (wide, short batches) needs no float64 accumulator and no conversion
# pass: 8 x 1,000,000 float32 went from 3.6 to 2.2 ms.  The reductions
# vectorise because setup.py compiles with -fassociative-math.  The per-row
# loop was measured against a cache-blocked BLAS variant (bench/NOTES.md).
#
# All arithmetic is carried in double precision whatever the input dtype:
# float32 inputs are widened as they are read, so the summed loss and gradient
# of a float32 block are as accurate as the inputs allow.  The GIL is released
# for the whole loop.  Validation lives in daskgd.kernels, not here.
#
# grad_hess adds the Hessian A^T diag(s l'') A (A = [X, 1]) in the same pass:
# per block of HESS_ROWS rows (in cache) margins, l' and l'' and the gradient as
# above, then the rows scaled by sqrt(|s l''|) are copied (widened to float64,
# with the intercept's column of ones) to a scratch block that BLAS's dsyrk adds
# to the upper triangle: a rank-k update at BLAS speed, not n rank-1 updates.

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from cython cimport floating
from libc.math cimport exp, fabs, log, log1p, sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define DASKGD_PREFETCH(p) __builtin_prefetch((p), 0, 3)
    #else
    #define DASKGD_PREFETCH(p) ((void)(p))
    #endif
    """
    void DASKGD_PREFETCH(const void* p) noexcept nogil

# The weights' type, apart from the rows' (``floating``): grad_loss_linear takes
# weights of X's dtype, grad_hess float64 weights whatever X's dtype.
ctypedef fused wfloating:
    float
    double

# Loss codes: must agree with the families in daskgd.objective.losses (Loss.code).
cdef enum:
    SQUARED_ERROR = 0
    HUBER = 1
    LOG_LOSS = 2
    HINGE = 3
    SQUARED_HINGE = 4
    POISSON = 5
    GAMMA = 6
    TWEEDIE = 7

# Rows handled together by the linear kernel (see _dots_block).
cdef enum:
    ROWS = 8
    # Rows ahead of the current block that are requested from memory early:
    # without it the loop waits on memory, then computes, instead of both.
    PF = 16
    # Rows per block of grad_hess: the block's rows stay in cache from the margins
    # to the copy into the scratch, and each dsyrk call gets a rank-HESS_ROWS update.
    HESS_ROWS = 256

# As scikit-learn's SGD: a derivative beyond this is clipped so that a huge
# margin cannot overflow the gradient.
cdef double MAX_DLOSS = 1e12


cdef inline double _dot(const floating* x, const wfloating* w,
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


cdef inline double _times(double a, double f) noexcept nogil:
    # a * f where a = 0 gives 0 even when f overflowed to infinity: the term of a
    # zero target, or a bracket that underflowed to 0, is 0 (as in the reference).
    if a == 0.0:
        return 0.0
    return a * f


cdef inline int _resolve(int code, double power) noexcept nogil:
    # Tweedie's general formula divides by 1 - power and 2 - power: at those
    # powers the family is Poisson or Gamma, whose formulas the kernel uses.
    if code == TWEEDIE:
        if power == 1.0:
            return POISSON
        if power == 2.0:
            return GAMMA
    return code


cdef inline void _tweedie_parts(double p, double power, double* f, double* e,
                                bint* lead) noexcept nogil:
    # exp((2-r) p) and exp((1-r) p) factored as f * (a bracket with e <= 1): for
    # p >= 0 f = exp((2-r) p), e = exp(-p); else f = exp((1-r) p), e = exp(p).
    # A term that overflows then makes f infinite times a finite bracket, never
    # inf - inf (daskgd.objective.loglink.Tweedie is the same computation).
    lead[0] = p >= 0.0
    if lead[0]:
        f[0] = exp((2.0 - power) * p)
        e[0] = exp(-p)
    else:
        f[0] = exp((1.0 - power) * p)
        e[0] = exp(p)


cdef inline double _loss_and_derivative(int code, double p, double y,
                                        double epsilon, double power,
                                        double* dloss) noexcept nogil:
    """Loss of margin ``p`` against target ``y``; its derivative in dloss.

    ``code`` is resolved (_resolve): TWEEDIE here means a power other than 1, 2.
    """
    cdef double r, z, e, f
    cdef bint lead
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
    if code == SQUARED_HINGE:
        z = 1.0 - p * y
        if z > 0:
            dloss[0] = _clip(-2.0 * y * z)
            return z * z
        dloss[0] = 0.0
        return 0.0
    if code == POISSON:
        e = exp(p)
        dloss[0] = _clip(e - y)
        return e - y * p
    if code == GAMMA:
        e = _times(y, exp(-p))
        dloss[0] = _clip(1.0 - e)
        return p + e
    # TWEEDIE, power not 1 or 2
    _tweedie_parts(p, power, &f, &e, &lead)
    if lead:
        dloss[0] = _clip(_times(1.0 - y * e, f))
        return _times(1.0 / (2.0 - power) - y * e / (1.0 - power), f)
    dloss[0] = _clip(_times(e - y, f))
    return _times(e / (2.0 - power) - y / (1.0 - power), f)


cdef inline double _second_derivative(int code, double p, double y,
                                      double epsilon, double power) noexcept nogil:
    """The loss's second derivative in the margin (code resolved), clipped."""
    cdef double e, f
    cdef bint lead
    if code == SQUARED_ERROR:
        return 1.0
    if code == HUBER:
        return 1.0 if fabs(p - y) <= epsilon else 0.0
    if code == LOG_LOSS:
        # sigmoid(p) * (1 - sigmoid(p)) = e / (1 + e)**2 with e = exp(-|p|)
        e = exp(-fabs(p))
        return e / ((1.0 + e) * (1.0 + e))
    if code == HINGE:
        return 0.0
    if code == SQUARED_HINGE:
        return 2.0 if 1.0 - p * y > 0 else 0.0
    if code == POISSON:
        return _clip(exp(p))
    if code == GAMMA:
        return _clip(_times(y, exp(-p)))
    _tweedie_parts(p, power, &f, &e, &lead)
    if lead:
        return _clip(_times((2.0 - power) - (1.0 - power) * y * e, f))
    return _clip(_times((2.0 - power) * e - (1.0 - power) * y, f))


cdef inline void _dots_block(const floating* x, const wfloating* w,
                             Py_ssize_t d, double b, double* p,
                             Py_ssize_t left) noexcept nogil:
    """Margins of ROWS consecutive rows starting at ``x``, ``left`` rows from ``x`` to
    the end of the rows (those past the end are not prefetched)."""
    cdef const floating* x1 = x + 1 * d
    cdef const floating* x2 = x + 2 * d
    cdef const floating* x3 = x + 3 * d
    cdef const floating* x4 = x + 4 * d
    cdef const floating* x5 = x + 5 * d
    cdef const floating* x6 = x + 6 * d
    cdef const floating* x7 = x + 7 * d
    cdef double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0, p4 = 0.0, p5 = 0.0, p6 = 0.0, p7 = 0.0, wj
    cdef Py_ssize_t j, k
    cdef const char* ahead = <const char*>(x + PF * d)
    cdef Py_ssize_t nbytes = 0
    if left > PF:
        nbytes = min(left - PF, <Py_ssize_t>ROWS) * d * <Py_ssize_t>sizeof(floating)
    k = 0
    while k < nbytes:
        DASKGD_PREFETCH(ahead + k)
        k += 64
    for j in range(d):
        wj = w[j]
        p0 += <double>x[j] * wj
        p1 += <double>x1[j] * wj
        p2 += <double>x2[j] * wj
        p3 += <double>x3[j] * wj
        p4 += <double>x4[j] * wj
        p5 += <double>x5[j] * wj
        p6 += <double>x6[j] * wj
        p7 += <double>x7[j] * wj
    p[0] = p0 + b
    p[1] = p1 + b
    p[2] = p2 + b
    p[3] = p3 + b
    p[4] = p4 + b
    p[5] = p5 + b
    p[6] = p6 + b
    p[7] = p7 + b


cdef inline void _axpy_block(const double* a, const floating* x, double* acc,
                             Py_ssize_t d) noexcept nogil:
    """acc += a[0] * row0 + ... + a[ROWS-1] * row(ROWS-1)."""
    cdef const floating* x1 = x + 1 * d
    cdef const floating* x2 = x + 2 * d
    cdef const floating* x3 = x + 3 * d
    cdef const floating* x4 = x + 4 * d
    cdef const floating* x5 = x + 5 * d
    cdef const floating* x6 = x + 6 * d
    cdef const floating* x7 = x + 7 * d
    cdef double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3]
    cdef double a4 = a[4], a5 = a[5], a6 = a[6], a7 = a[7]
    cdef Py_ssize_t j
    for j in range(d):
        acc[j] += (a0 * <double>x[j] + a1 * <double>x1[j]
                   + a2 * <double>x2[j] + a3 * <double>x3[j]
                   + a4 * <double>x4[j] + a5 * <double>x5[j]
                   + a6 * <double>x6[j] + a7 * <double>x7[j])


cdef inline void _axpy_block_out(const double* a, const floating* x, const double* acc,
                                 floating* out, Py_ssize_t d) noexcept nogil:
    """out = acc + a[0] * row0 + ... + a[ROWS-1] * row(ROWS-1), rounded to the output's
    type: the last update of the gradient fused with its conversion (acc NULL: zeros)."""
    cdef const floating* x1 = x + 1 * d
    cdef const floating* x2 = x + 2 * d
    cdef const floating* x3 = x + 3 * d
    cdef const floating* x4 = x + 4 * d
    cdef const floating* x5 = x + 5 * d
    cdef const floating* x6 = x + 6 * d
    cdef const floating* x7 = x + 7 * d
    cdef double a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3]
    cdef double a4 = a[4], a5 = a[5], a6 = a[6], a7 = a[7]
    cdef Py_ssize_t j
    if acc == NULL:
        for j in range(d):
            out[j] = <floating>(a0 * <double>x[j] + a1 * <double>x1[j]
                                + a2 * <double>x2[j] + a3 * <double>x3[j]
                                + a4 * <double>x4[j] + a5 * <double>x5[j]
                                + a6 * <double>x6[j] + a7 * <double>x7[j])
        return
    for j in range(d):
        out[j] = <floating>(acc[j] + (a0 * <double>x[j] + a1 * <double>x1[j]
                                      + a2 * <double>x2[j] + a3 * <double>x3[j]
                                      + a4 * <double>x4[j] + a5 * <double>x5[j]
                                      + a6 * <double>x6[j] + a7 * <double>x7[j]))


cdef inline void _axpy_out(double a, const floating* x, const double* acc,
                           floating* out, Py_ssize_t d) noexcept nogil:
    """out = acc + a * x rounded to the output's type (acc NULL: zeros)."""
    cdef Py_ssize_t j
    if acc == NULL:
        for j in range(d):
            out[j] = <floating>(a * <double>x[j])
        return
    for j in range(d):
        out[j] = <floating>(acc[j] + a * <double>x[j])


cdef inline bint _any_nonzero(const double* a) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(ROWS):
        if a[r] != 0.0:
            return True
    return False


cdef inline double _weighted_loss(int code, double p, double y, double epsilon,
                                  double power, const floating* swp, Py_ssize_t i,
                                  double* dloss) noexcept nogil:
    """Loss of row i times its weight; the weighted derivative in dloss."""
    cdef double loss = _loss_and_derivative(code, p, y, epsilon, power, dloss)
    cdef double sw
    if swp == NULL:
        return loss
    sw = swp[i]
    dloss[0] *= sw
    return sw * loss


def grad_loss_linear(const floating[:, ::1] X, const floating[::1] y,
                     const floating[::1] w, double b,
                     const floating[::1] sample_weight,
                     floating[::1] out, int loss_code, double epsilon,
                     const floating[::1] offset=None, double power=1.5):
    """Summed loss; gradient of w into ``out[:d]`` and of b into ``out[d]``.

    ``sample_weight`` and ``offset`` (added to the margins) may be None;
    ``power`` is the Tweedie power.  Inputs are assumed validated.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j, r
    cdef double loss_sum = 0.0, grad_b = 0.0
    cdef double p[ROWS]
    cdef double dl[ROWS]
    cdef const floating* wp = &w[0] if d > 0 else NULL
    cdef const floating* swp = NULL
    cdef const floating* offp = NULL
    cdef const floating* x0
    # The gradient's last update (the last block, or the last row after the blocks) is
    # written straight to ``out`` in its type; the float64 accumulator holds the ones
    # before it, and a batch of at most one update needs none: for wide, short batches
    # its zeroing, write and conversion were a third of the memory traffic.
    cdef Py_ssize_t updates = n // ROWS + n % ROWS
    cdef bint written = False
    cdef double* acc = NULL
    if updates > 1:
        acc = <double*>calloc(d + 1, sizeof(double))
        if acc == NULL:
            raise MemoryError()
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    if offset is not None and n > 0:
        offp = &offset[0]
    loss_code = _resolve(loss_code, power)
    with nogil:
        i = 0
        # Blocks of ROWS rows: ROWS independent dot products share every
        # load of w[j], and the gradient is updated once per block.
        while i + ROWS <= n:
            x0 = &X[i, 0] if d > 0 else NULL
            _dots_block(x0, wp, d, b, p, n - i)
            if offp != NULL:
                for r in range(ROWS):
                    p[r] += offp[i + r]
            for r in range(ROWS):
                loss_sum += _weighted_loss(loss_code, p[r], y[i + r], epsilon,
                                           power, swp, i + r, &dl[r])
                grad_b += dl[r]
            if _any_nonzero(dl):
                if i + ROWS == n:
                    _axpy_block_out(dl, x0, acc, &out[0], d)
                    written = True
                else:
                    _axpy_block(dl, x0, acc, d)
            i += ROWS
        while i < n:
            x0 = &X[i, 0] if d > 0 else NULL
            p[0] = _dot(x0, wp, d) + b
            if offp != NULL:
                p[0] += offp[i]
            loss_sum += _weighted_loss(loss_code, p[0], y[i], epsilon, power,
                                       swp, i, &dl[0])
            grad_b += dl[0]
            if dl[0] != 0.0:
                if i + 1 == n:
                    _axpy_out(dl[0], x0, acc, &out[0], d)
                    written = True
                else:
                    _axpy(dl[0], x0, acc, d)
            i += 1
        if not written and acc != NULL:
            for j in range(d):
                out[j] = <floating>acc[j]
        elif not written:  # no row added anything (every derivative zero)
            memset(&out[0], 0, d * sizeof(floating))
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
