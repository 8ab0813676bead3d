# Loss, gradient and Hessian of a linear model over a block of rows, in one pass.
#
# Included after _kernels_impl.pxi (whose loss functions and row-block helpers
# it uses) by _kernels.pyx and _kernels_avx2.pyx.
#
# Per block of HESS_ROWS rows: margins (_dots_block), l' and l'' of each row,
# the gradient update (_axpy_block), then each row with h = s l'' != 0 goes to a
# float64 scratch block scaled by sqrt(|h|), with a last column sqrt(|h|) for
# the intercept; dsyrk adds scratch^T scratch to the upper triangle of the
# Hessian (rows with h < 0, possible only for Tweedie powers above 2, are
# packed from the scratch's end and subtracted by a second dsyrk).  The block's
# rows are read from memory once: they are still in cache for the copy.  The
# lower triangle is filled from the upper one at the end.
#
# dsyrk comes from scipy's BLAS (scipy.linalg.cython_blas), looked up at the
# first call so that importing the kernels does not import scipy.linalg.

ctypedef void (*_dsyrk_t)(char* uplo, char* trans, int* n, int* k, double* alpha,
                          double* a, int* lda, double* beta, double* c,
                          int* ldc) noexcept nogil
ctypedef void (*_ssyrk_t)(char* uplo, char* trans, int* n, int* k, float* alpha,
                          float* a, int* lda, float* beta, float* c,
                          int* ldc) noexcept nogil

cdef _dsyrk_t _dsyrk = NULL
cdef _ssyrk_t _ssyrk = NULL


cdef int _load_dsyrk() except -1:
    global _dsyrk, _ssyrk
    if _dsyrk == NULL:
        from scipy.linalg import cython_blas
        capsule = cython_blas.__pyx_capi__["dsyrk"]
        _dsyrk = <_dsyrk_t>PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
        capsule = cython_blas.__pyx_capi__["ssyrk"]
        _ssyrk = <_ssyrk_t>PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    return 0


cdef inline void _scaled_row32(const floating* x, Py_ssize_t d, double scale,
                               bint ones, float* dst) noexcept nogil:
    """dst = scale * [x, 1] (the 1 only with ``ones``), rounded to float32."""
    cdef Py_ssize_t j
    for j in range(d):
        dst[j] = <float>(scale * <double>x[j])
    if ones:
        dst[d] = <float>scale


cdef void _block_ssyrk(float* scratch, int m, int npos, int nneg, float* C,
                       double* H, int ldc) noexcept nogil:
    """H += (positive rows)^T (positive rows) - (negative rows)^T (negative rows), the
    block's products in float32 (ssyrk into ``C``, m x m), added to H in float64: a block
    of HESS_ROWS rows rounds each entry by about HESS_ROWS float32 roundings at most."""
    cdef char uplo = b"U"
    cdef char trans = b"N"
    cdef float one = 1.0, minus_one = -1.0, zero = 0.0
    cdef float beta = 0.0
    cdef Py_ssize_t i, j
    if npos > 0:
        _ssyrk(&uplo, &trans, &m, &npos, &one, scratch, &m, &zero, C, &m)
        beta = 1.0
    if nneg > 0:
        _ssyrk(&uplo, &trans, &m, &nneg, &minus_one,
               scratch + (HESS_ROWS - nneg) * m, &m, &beta, C, &m)
    for j in range(m):
        for i in range(j + 1):
            H[j * ldc + i] += <double>C[j * m + i]


cdef inline void _scaled_row(const floating* x, Py_ssize_t d, double scale,
                             bint ones, double* dst) noexcept nogil:
    """dst = scale * [x, 1] (the 1 only with ``ones``), widened to float64."""
    cdef Py_ssize_t j
    for j in range(d):
        dst[j] = scale * <double>x[j]
    if ones:
        dst[d] = scale


def grad_hess(const floating[:, ::1] X, const double[::1] y,
              const double[::1] w, double b,
              const double[::1] sample_weight, const double[::1] offset,
              double[::1] grad, double[:, ::1] hess, int loss_code,
              double epsilon, double power, bint fit_intercept,
              bint single=False):
    """Summed loss; its gradient into ``grad`` (d+1) and Hessian into ``hess``.

    ``hess`` is ``A^T diag(s l'') A`` with ``A = [X, 1]`` (last row and column
    left zero without ``fit_intercept``); ``grad`` and ``hess`` are overwritten.
    ``sample_weight`` and ``offset`` may be None.  Inputs are assumed validated.
    With ``single`` each block's Hessian is computed in float32 (ssyrk, twice
    dsyrk's speed) and summed in float64; the loss and gradient are not affected.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef Py_ssize_t start, rows, r, i, j
    cdef int m = <int>(d + 1 if fit_intercept else d)
    cdef int ldc = <int>(d + 1)
    cdef int npos, nneg
    cdef double one = 1.0, minus_one = -1.0
    cdef char uplo = b"U"
    cdef char trans = b"N"
    cdef double loss_sum = 0.0, grad_b = 0.0, sw, hr
    cdef const floating* x0
    cdef const double* wp = &w[0] if d > 0 else NULL
    cdef const double* swp = NULL
    cdef const double* offp = NULL
    cdef double* acc = &grad[0]
    cdef double* H = &hess[0, 0]
    cdef double* work
    cdef double* p
    cdef double* dl
    cdef double* h
    cdef double* scratch
    cdef float* scratch32
    cdef float* C32
    _load_dsyrk()
    # margins, l' and l'' of one block, then the block's scaled rows (float64 scratch,
    # or a float32 scratch and its m x m float32 product)
    work = <double*>malloc((3 * HESS_ROWS + HESS_ROWS * (d + 1)) * sizeof(double)
                           + (((d + 1) * (d + 1)) * sizeof(float) if single else 0))
    if work == NULL:
        raise MemoryError()
    p = work
    dl = p + HESS_ROWS
    h = dl + HESS_ROWS
    scratch = h + HESS_ROWS
    scratch32 = <float*>scratch
    C32 = scratch32 + HESS_ROWS * (d + 1)
    if sample_weight is not None and n > 0:
        swp = &sample_weight[0]
    if offset is not None and n > 0:
        offp = &offset[0]
    loss_code = _resolve(loss_code, power)
    with nogil:
        memset(acc, 0, (d + 1) * sizeof(double))
        memset(H, 0, (d + 1) * (d + 1) * sizeof(double))
        start = 0
        while start < n:
            rows = min(<Py_ssize_t>HESS_ROWS, n - start)
            r = 0
            while r + ROWS <= rows:
                x0 = &X[start + r, 0] if d > 0 else NULL
                _dots_block(x0, wp, d, b, &p[r], n - start - r)
                r += ROWS
            while r < rows:
                x0 = &X[start + r, 0] if d > 0 else NULL
                p[r] = _dot(x0, wp, d) + b
                r += 1
            for r in range(rows):
                i = start + r
                if offp != NULL:
                    p[r] += offp[i]
                sw = swp[i] if swp != NULL else 1.0
                loss_sum += sw * _loss_and_derivative(loss_code, p[r], y[i],
                                                      epsilon, power, &dl[r])
                dl[r] *= sw
                grad_b += dl[r]
                h[r] = sw * _second_derivative(loss_code, p[r], y[i], epsilon,
                                               power)
            r = 0
            while r + ROWS <= rows:
                x0 = &X[start + r, 0] if d > 0 else NULL
                if _any_nonzero(&dl[r]):
                    _axpy_block(&dl[r], x0, acc, d)
                r += ROWS
            while r < rows:
                x0 = &X[start + r, 0] if d > 0 else NULL
                if dl[r] != 0.0:
                    _axpy(dl[r], x0, acc, d)
                r += 1
            if m > 0:
                npos = 0
                nneg = 0
                for r in range(rows):
                    hr = h[r]
                    if hr == 0.0:
                        continue  # hinge, Huber's linear zone...: no work
                    x0 = &X[start + r, 0] if d > 0 else NULL
                    if single:
                        if hr > 0.0:
                            _scaled_row32(x0, d, sqrt(hr), fit_intercept,
                                          scratch32 + npos * m)
                            npos += 1
                        else:
                            nneg += 1
                            _scaled_row32(x0, d, sqrt(-hr), fit_intercept,
                                          scratch32 + (HESS_ROWS - nneg) * m)
                    elif hr > 0.0:
                        _scaled_row(x0, d, sqrt(hr), fit_intercept,
                                    scratch + npos * m)
                        npos += 1
                    else:
                        nneg += 1
                        _scaled_row(x0, d, sqrt(-hr), fit_intercept,
                                    scratch + (HESS_ROWS - nneg) * m)
                # Column-major, the row-major scratch is the m x k matrix whose
                # columns are the scaled rows: dsyrk "N" adds it times its
                # transpose, into the column-major upper triangle of H (the
                # row-major lower one).
                if single:
                    if npos > 0 or nneg > 0:
                        _block_ssyrk(scratch32, m, npos, nneg, C32, H, ldc)
                elif npos > 0:
                    _dsyrk(&uplo, &trans, &m, &npos, &one, scratch, &m, &one,
                           H, &ldc)
                if nneg > 0 and not single:
                    _dsyrk(&uplo, &trans, &m, &nneg, &minus_one,
                           scratch + (HESS_ROWS - nneg) * m, &m, &one, H, &ldc)
            start += rows
        acc[d] = grad_b
        for i in range(d + 1):
            for j in range(i + 1, d + 1):
                H[i * (d + 1) + j] = H[j * (d + 1) + i]
    free(work)
    return loss_sum
