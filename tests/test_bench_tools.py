"""The benchmark's own tools: the optimum it measures everyone against, the README's tables
copied from the results, the suite's script selection.

The optimum (``bench/glm_problems.py``) is the yardstick of ``bench_glm.py``: a wrong f*
would make every system look better or worse than it is, so it is checked against
scikit-learn's solvers at a tight tolerance on small problems of each kind, written to
Zarr and read back as the benchmark does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import glm_problems  # noqa: E402
import run as bench_run  # noqa: E402
import update_readme  # noqa: E402


def _sklearn_optimum(p) -> float:
    """The same objective's optimum by scikit-learn, an independent implementation."""
    from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor

    n = len(p.y)
    if p.kind == "least_squares":
        m = LinearRegression().fit(p.X, p.y)
    elif p.kind == "logistic":
        m = LogisticRegression(
            C=1.0 / (n * p.alpha), solver="newton-cholesky", tol=1e-14, max_iter=1000
        ).fit(p.X, p.y)
    else:  # the offset as a rate with exposure weights (scikit-learn has no offset)
        e = np.exp(p.offset)
        m = PoissonRegressor(
            alpha=p.alpha * n / e.sum(), solver="newton-cholesky", tol=1e-14, max_iter=1000
        ).fit(p.X, p.y / e, sample_weight=e)
    return p.objective(np.ravel(m.coef_), float(np.ravel(m.intercept_)[0]))


@pytest.mark.parametrize("kind", ["logistic", "poisson", "least_squares"])
def test_the_optimum_is_the_optimum(tmp_path, kind):
    n, d = 3_000, 6
    if kind == "logistic":
        X, y = glm_problems.ill_conditioned_logistic(n, 16, seed=3)
        d = 16
        p = glm_problems.GLMProblem("p", kind, str(tmp_path / "p.zarr"), n, d, alpha=1e-3)
        glm_problems.write(p, X, y)
    elif kind == "poisson":
        X, y, offset = glm_problems.poisson_with_exposure(n, d, seed=4)
        p = glm_problems.GLMProblem(
            "p", kind, str(tmp_path / "p.zarr"), n, d, alpha=1e-4, has_offset=True
        )
        glm_problems.write(p, X, y, offset)
    else:
        rng = np.random.default_rng(5)
        X = rng.standard_normal((n, d))
        y = X @ rng.standard_normal(d) + rng.standard_normal(n) + 2.0
        p = glm_problems.GLMProblem("p", kind, str(tmp_path / "p.zarr"), n, d)
        glm_problems.write(p, X, y)
    p.load()
    p.solve_exactly()
    reference = _sklearn_optimum(p)
    # f* is as low as scikit-learn's, up to rounding
    assert p.f_star <= reference + 1e-13 * abs(reference)
    assert reference - p.f_star <= 1e-11 * abs(reference)
    if kind == "poisson":  # the offset is read back and used
        assert p.offset is not None and np.ptp(p.offset) > 1.0
    if kind == "logistic":
        assert set(np.unique(p.y)) == {-1.0, 1.0}
        assert p.facts["hessian_condition"] > 1e4  # the scales make it ill-conditioned
    coef = np.asarray(p.facts["optimum_coef"])
    assert p.suboptimality(coef, p.facts["optimum_intercept"]) == 0.0
    assert p.suboptimality(coef * 1.01, p.facts["optimum_intercept"]) > 1e-8


def test_readme_blocks_come_from_the_results(tmp_path):
    md = (
        "# title\n\nMeasured 2026-01-01 on a CPU. Command: `python bench/bench_x.py`.\n\n"
        "intro\n\n## Summary\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## other\n\nrest\n"
        "## Cross-validated path: 5 folds\n\ntext\n\n| c |\n|---|\n| 3 |\n"
    )
    assert update_readme.section(md, "## Summary") == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert update_readme.section(md, "## Cross-validated path").startswith(
        "*Cross-validated path: 5 folds*\n\ntext"
    )
    assert update_readme.section(md, "## Missing") == ""


def test_the_suite_runs_the_scripts_asked_for():
    assert bench_run.select(["--quick"]) == (None, ["--quick"])
    assert bench_run.select(["--quick", "--scripts", "glm", "peers", "--budget", "5"]) == (
        ["glm", "peers"],
        ["--quick", "--budget", "5"],
    )
    assert bench_run.main(["--scripts", "nonesuch"]) == 2


def test_the_sparse_optimum_is_the_optimum(tmp_path):
    """``bench_sparse.py``'s f* (L-BFGS in scaled columns) is scikit-learn's optimum of the
    same objective at ``C = 1 / (n alpha)``, on sparse data written and read back as the
    benchmark does; and Vowpal Wabbit's hash bits keep every column apart from its constant."""
    import bench_sparse
    from sklearn.linear_model import LogisticRegression

    import daskgd

    n, d, alpha = 4_000, 2**10, 1e-3
    p = bench_sparse.Problem(n, d, alpha, str(tmp_path / "s.zarr"))
    daskgd.make_sparse_classification(p.path, n, d, 12, chunk_rows=1_000, random_state=2)
    oracle = bench_sparse.Oracle(p)
    assert oracle.X.nnz == n * 12 and set(np.unique(oracle.y)) == {-1.0, 1.0}
    oracle.solve()
    m = LogisticRegression(C=1.0 / (n * alpha), solver="newton-cholesky", tol=1e-14, max_iter=1000)
    m.fit(oracle.X, oracle.y01)
    reference = oracle.objective(m.coef_.ravel(), m.intercept_[0])
    assert oracle.f_star <= reference + 1e-13 * abs(reference)
    assert reference - oracle.f_star <= 1e-11 * abs(reference)
    assert oracle.facts["gap_bound"] <= 1e-10 * abs(oracle.f_star)
    for width in (2**10, 2**16, 2**22, 11_650_396):
        bits, constant = bench_sparse.vw_bits(width)
        assert width <= 2**bits and width <= constant < 2**bits
    with pytest.raises(ValueError, match="constant"):
        bench_sparse.vw_bits(2**24)
