# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""daskgd loss/gradient kernels: portable build (baseline instruction set)."""

include "_kernels_impl.pxi"

include "_kernels_hessian.pxi"

include "_kernels_many.pxi"

include "_kernels_csr.pxi"
