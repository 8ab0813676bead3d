"""The problems of the GLM benchmark (``bench_glm.py``): data, objective, optimum.

Objectives (``n`` rows, mean over the rows, the intercept ``b`` never penalised):

* ``least_squares``: ``1/(2n) * sum (x_i @ w + b - y_i)**2 + alpha/2 * ||w||**2``;
* ``logistic`` (labels ``y`` in {-1, +1}):
  ``1/n * sum log(1 + exp(-y_i z_i)) + alpha/2 * ||w||**2``;
* ``poisson`` with an offset ``o_i = log(exposure_i)``: the mean half Poisson deviance
  ``1/n * sum (y_i log(y_i / mu_i) - y_i + mu_i)``, ``mu_i = exp(z_i + o_i)``, plus
  ``alpha/2 * ||w||**2`` (scikit-learn's PoissonRegressor objective, with an offset).

``z_i = x_i @ w + b``. The optimum ``f*`` is computed once per problem in this process, in
float64: ``lstsq`` for least squares, a damped Newton method with a Cholesky solve (to a
Newton decrement below 1e-20 of ``f``) otherwise; the relative suboptimality of a fit is
``(f - f*) / |f*|``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr
from scipy.linalg import LinAlgError, cho_factor, cho_solve

import daskgd

CHUNKS = 8  # row-chunks per problem: 4 per worker


@dataclass
class GLMProblem:
    """One benchmark problem stored as a daskgd Zarr dataset (with an ``offset`` array
    when ``has_offset``)."""

    name: str
    kind: str  # "least_squares", "logistic" or "poisson"
    path: str
    n: int
    d: int
    alpha: float = 0.0
    fit_intercept: bool = True
    has_offset: bool = False
    description: str = ""
    targets: tuple[float, float] = (1e-4, 1e-8)
    X: np.ndarray | None = field(default=None, repr=False)
    y: np.ndarray | None = field(default=None, repr=False)
    offset: np.ndarray | None = field(default=None, repr=False)
    f_star: float = float("nan")
    facts: dict = field(default_factory=dict)

    # -- data in this process (for the optimum and the objective) --------------------
    def load(self) -> None:
        self.X, self.y, self.offset = read_arrays(self)

    def release(self) -> None:
        self.X = self.y = self.offset = None

    # -- the objective -----------------------------------------------------------------
    def margins(self, coef, intercept=0.0) -> np.ndarray:
        assert self.X is not None
        z = self.X @ np.asarray(coef, dtype=np.float64).ravel() + float(intercept)
        return z + self.offset if self.offset is not None else z

    def objective(self, coef, intercept=0.0) -> float:
        assert self.y is not None
        z, y = self.margins(coef, intercept), self.y
        w = np.asarray(coef, dtype=np.float64).ravel()
        penalty = 0.5 * self.alpha * float(w @ w)
        if self.kind == "least_squares":
            return 0.5 * float(np.mean((z - y) ** 2)) + penalty
        if self.kind == "logistic":
            return float(np.mean(np.logaddexp(0.0, -y * z))) + penalty
        ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
        return float(np.mean(ylogy - y * z - y + np.exp(z))) + penalty

    def suboptimality(self, coef, intercept=0.0) -> float:
        return max((self.objective(coef, intercept) - self.f_star) / abs(self.f_star), 0.0)

    # -- the optimum -------------------------------------------------------------------
    def solve_exactly(self) -> None:
        """``f*``; also records the Hessian's condition number at the optimum."""
        assert self.X is not None and self.y is not None
        if self.kind == "least_squares" and self.alpha == 0.0:
            A = _with_ones(self.X) if self.fit_intercept else self.X
            sol = np.linalg.lstsq(A, self.y, rcond=None)[0]
        else:
            sol = self._newton()
        coef, b = (sol[:-1], sol[-1]) if self.fit_intercept else (sol, 0.0)
        self.f_star = self.objective(coef, b)
        H = self._hessian(coef, b)
        self.facts["hessian_condition"] = float(np.linalg.cond(H))
        self.facts["optimum_coef"] = coef.tolist()
        self.facts["optimum_intercept"] = float(b)

    def _grad_hess(self, beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        coef, b = (beta[:-1], beta[-1]) if self.fit_intercept else (beta, 0.0)
        z, y = self.margins(coef, b), self.y
        if self.kind == "logistic":
            s = 1.0 / (1.0 + np.exp(y * z))  # sigmoid(-y z)
            d1, d2 = -y * s, s * (1.0 - s)
        elif self.kind == "poisson":
            d1 = np.exp(z) - y
            d2 = np.exp(z)
        else:
            d1, d2 = z - y, np.ones_like(z)
        n = len(y)
        g = np.empty(len(beta))
        g[: self.d] = self.X.T @ d1 / n + self.alpha * coef
        if self.fit_intercept:
            g[-1] = d1.mean()
        return self.objective(coef, b), g, self._hessian_from(d2)

    def _hessian(self, coef, b) -> np.ndarray:
        z, y = self.margins(coef, b), self.y
        if self.kind == "logistic":
            s = 1.0 / (1.0 + np.exp(y * z))
            return self._hessian_from(s * (1.0 - s))
        if self.kind == "poisson":
            return self._hessian_from(np.exp(z))
        return self._hessian_from(np.ones_like(z))

    def _hessian_from(self, d2: np.ndarray) -> np.ndarray:
        """``A^T diag(d2) A / n + alpha * I`` (not on the intercept), in row blocks."""
        X, n, d = self.X, len(d2), self.d
        k = d + 1 if self.fit_intercept else d
        H = np.zeros((k, k))
        for lo in range(0, n, 65_536):
            A = X[lo : lo + 65_536]
            A = _with_ones(A) if self.fit_intercept else A
            H += (A * d2[lo : lo + 65_536, None]).T @ A
        H /= n
        H[np.arange(d), np.arange(d)] += self.alpha
        return H

    def _newton(self) -> np.ndarray:
        k = self.d + 1 if self.fit_intercept else self.d
        beta = np.zeros(k)
        if self.kind == "poisson" and self.fit_intercept:
            # start at the intercept-only fit: exp(b) * sum(exposure) = sum(y)
            beta[-1] = np.log(self.y.mean() / np.exp(self.offset).mean())
        iterations = 0
        while iterations < 100:
            iterations += 1
            f, g, H = self._grad_hess(beta)
            try:
                step = -cho_solve(cho_factor(H), g)
            except LinAlgError:
                step = -np.linalg.lstsq(H, g, rcond=None)[0]
            # the Newton decrement is about twice f - f*: stop far below the 1e-8 target,
            # where rounding (not the method) limits it
            decrement = float(-g @ step)
            if decrement < 1e-20 * abs(f):
                break
            t = 1.0
            while t > 1e-12:  # backtracking (Armijo) line search
                trial = beta + t * step
                coef, b = (trial[:-1], trial[-1]) if self.fit_intercept else (trial, 0.0)
                if self.objective(coef, b) <= f - 1e-4 * t * decrement:
                    break
                t *= 0.5
            else:
                break  # no decrease left to find: rounding level
            beta = beta + t * step
        self.facts["reference_newton_iterations"] = iterations
        return beta


def _with_ones(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


# --- reading the stored data, as the peers do --------------------------------------------


def read_arrays(problem: GLMProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """X (float64), y (-1/+1 labels for logistic), the offset or None."""
    g = zarr.open_group(problem.path, mode="r")
    X = np.ascontiguousarray(g["X"][:], dtype=np.float64)
    y = np.asarray(g["y"][:], dtype=np.float64)
    if problem.kind == "logistic":
        y = np.where(y > 0, 1.0, -1.0)
    offset = np.asarray(g["offset"][:], dtype=np.float64) if problem.has_offset else None
    return X, y, offset


# --- generators ----------------------------------------------------------------------------


def _rows(n: int, seed: int, draw) -> tuple[np.ndarray, ...]:
    """``draw(rng, rows)`` chunk by chunk (bounded temporaries), stacked."""
    step = max(1, -(-n // CHUNKS))
    parts = [
        draw(np.random.default_rng([seed, i]), min(step, n - lo))
        for i, lo in enumerate(range(0, n, step))
    ]
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def ill_conditioned_logistic(n: int, d: int, seed: int = 0):
    """Correlated Gaussian columns (AR(1), rho = 0.9) on scales log-uniform in
    [1e-2, 1e2], plus 10 one-hot columns (11 levels, the first dropped); 0/1 labels
    drawn from a logistic model whose margins are O(1)."""
    rng = np.random.default_rng(seed)
    n_cont, n_hot = d - 10, 10
    lags = np.abs(np.subtract.outer(np.arange(n_cont), np.arange(n_cont)))
    L = np.linalg.cholesky(0.9**lags)
    scales = rng.permutation(np.logspace(-2, 2, n_cont))
    w = np.concatenate(
        [
            2.0 * rng.standard_normal(n_cont) / (scales * np.sqrt(n_cont)),
            0.5 * rng.standard_normal(n_hot),
        ]
    )

    def draw(r, m):
        Z = (r.standard_normal((m, n_cont)) @ L.T) * scales
        level = r.integers(0, n_hot + 1, m)
        H = (level[:, None] == np.arange(1, n_hot + 1)).astype(np.float64)
        X = np.hstack([Z, H])
        p = 1.0 / (1.0 + np.exp(-(X @ w - 0.5)))
        return X, (r.random(m) < p).astype(np.int32)  # 0/1, as daskgd's generators store

    return _rows(n, seed, draw)


def poisson_with_exposure(n: int, d: int, seed: int = 1):
    """Standard-normal columns, exposure log-uniform in [0.1, 10], counts drawn from
    ``Poisson(exposure * exp(x @ w - 1))``; returns X, y and the offset log(exposure)."""
    w = 0.5 * np.random.default_rng(seed).standard_normal(d) / np.sqrt(d)

    def draw(r, m):
        X = r.standard_normal((m, d))
        offset = r.uniform(np.log(0.1), np.log(10.0), m)
        y = r.poisson(np.exp(X @ w - 1.0 + offset)).astype(np.float64)
        return X, y, offset

    return _rows(n, seed, draw)


def write(problem: GLMProblem, X, y, offset=None, client=None) -> None:
    """Write the problem's Zarr group with daskgd; the offset with daskgd when this build
    takes one, else as an ``offset`` array beside X and y (the peers read it; daskgd's
    Poisson runners then report "not available in this build")."""
    rows = -(-problem.n // CHUNKS)
    kwargs = {
        "chunk_rows": rows,
        "compressor": None,
        "overwrite": True,
        "client": client,
        "task": "classification" if problem.kind == "logistic" else "regression",
    }
    if offset is None:
        daskgd.write_zarr(problem.path, X, y, **kwargs)
        return
    try:
        daskgd.write_zarr(problem.path, X, y, offset=offset, **kwargs)
    except TypeError:
        daskgd.write_zarr(problem.path, X, y, **kwargs)
        g = zarr.open_group(problem.path, mode="a")
        a = g.create_array(
            "offset",
            shape=offset.shape,
            dtype="f8",
            chunks=(rows,),
            compressors=None,
            overwrite=True,
        )
        a[:] = offset
