# Loss and gradient of many linear models over the same rows, in one pass.
#
# Included after _kernels_impl.pxi (whose loss functions and row-block helpers it
# uses) by _kernels.pyx and _kernels_avx2.pyx.
#
# A cross-validated path evaluates several coefficient vectors (the fold models)
# on every chunk.  One call of the single-model kernel per model reads the chunk
# from memory once per model, and that read is what a single model's pass waits
# on; here each block of ROWS rows is read once and, while it sits in L1 cache,
# every model's margins, derivatives and gradient update are computed from it.

def grad_loss_many(const floating[:, ::1] X, const double[::1] y,
                   const double[:, ::1] W, const double[::1] b,
                   const double[::1] sample_weight, const double[::1] offset,
                   double[:, ::1] out, double[::1] losses, int loss_code,
                   double epsilon, double power):
    """Summed loss of each model (row of ``W``, intercept ``b``) into ``losses``,
    its gradient of w into ``out[m, :d]`` and of b into ``out[m, d]``.

    ``sample_weight`` and ``offset`` may be None.  Inputs are assumed validated.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], M = W.shape[0]
    cdef Py_ssize_t i, r, k, m
    cdef double p[ROWS]
    cdef double dl[ROWS]
    cdef double s, loss
    cdef const double* swp = NULL
    cdef const double* offp = NULL
    cdef const floating* x0
    cdef const double* wm
    cdef double* acc
    if M == 0:
        return
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    if offset is not None and n > 0:
        offp = &offset[0]
    loss_code = _resolve(loss_code, power)
    with nogil:
        memset(&out[0, 0], 0, M * (d + 1) * sizeof(double))
        memset(&losses[0], 0, M * sizeof(double))
        i = 0
        while i < n:
            k = ROWS if i + ROWS <= n else 1
            x0 = &X[i, 0] if d > 0 else NULL
            for m in range(M):
                wm = &W[m, 0] if d > 0 else NULL
                acc = &out[m, 0]
                if k == ROWS:
                    _dots_block(x0, wm, d, b[m], p, n - i)
                else:
                    p[0] = _dot(x0, wm, d) + b[m]
                for r in range(k):
                    if offp != NULL:
                        p[r] += offp[i + r]
                    loss = _loss_and_derivative(loss_code, p[r], y[i + r], epsilon,
                                                power, &dl[r])
                    if swp != NULL:
                        s = swp[i + r]
                        loss *= s
                        dl[r] *= s
                    losses[m] += loss
                    acc[d] += dl[r]
                if k == ROWS:
                    if _any_nonzero(dl):
                        _axpy_block(dl, x0, acc, d)
                elif dl[0] != 0.0:
                    _axpy(dl[0], x0, acc, d)
            i += k
