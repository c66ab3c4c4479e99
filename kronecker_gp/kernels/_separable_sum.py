"""A sum of separable (product) kernels over the same grid axes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from kronecker_gp._typing import ArrayLike, FloatArray
from kronecker_gp.kernels._kronecker import KroneckerKernel

_TERM_KEY = re.compile(r"t(\d+)")


def _check_terms(terms: object) -> list[list[Any]]:
    """Return ``terms`` as a list of equally long lists of kernels, or raise."""
    if (
        not isinstance(terms, (list, tuple))
        or not terms
        or not all(isinstance(t, (list, tuple)) for t in terms)
    ):
        raise TypeError(
            "terms must be a non-empty list of terms, each a list of scikit-learn "
            "kernels (one per grid axis), e.g. [[ConstantKernel(), Matern(nu=0.5)], "
            f"[RBF(), Matern(nu=1.5)]]; got {type(terms).__name__}."
        )
    for r, term in enumerate(terms):
        bad = [type(k).__name__ for k in term if not isinstance(k, Kernel)]
        if bad or not term:
            raise TypeError(
                f"terms[{r}] must be a non-empty list of scikit-learn kernels, one "
                f"per grid axis; got {[type(k).__name__ for k in term]}."
            )
    sizes = [len(t) for t in terms]
    if len(set(sizes)) > 1:
        raise ValueError(
            "every term must have one kernel per grid axis (the same number of "
            f"factors); got {sizes} factors per term. Use ConstantKernel() for an "
            "axis on which a term does not vary."
        )
    return [list(t) for t in terms]


class SeparableSum(Kernel):
    r"""Sum of separable kernels: each term a product of one kernel per grid axis.

    Parameters
    ----------
    terms : list of list of Kernel
        ``terms[r][d]`` is term ``r``'s kernel on grid axis ``d``; every term
        has one kernel per axis (use ``ConstantKernel()`` on an axis a term
        does not vary along).
    axes : list of (list of int or int), default=None
        The columns of ``X`` of each grid axis, shared by all terms (as in
        :class:`KroneckerKernel`); ``None`` gives axis ``d`` the column ``d``.

    Notes
    -----
    The kernel and its Gram matrix on a grid (C order):

    .. math::
        k(x, x') = \sum_r \prod_d k^r_d(x_{A_d}, x'_{A_d}), \qquad
        K = \sum_r K^r_1 \otimes \cdots \otimes K^r_D.

    ``K + sI`` has no Kronecker eigenbasis once there are two terms;
    :class:`~kronecker_gp.KroneckerGP` solves it exactly by the Woodbury
    identity when all terms but one have low-rank factors (a
    ``ConstantKernel`` axis: a regional effect costs
    :math:`O(\sum_d n_d^3 + N \sum_d n_d)`, as one product kernel), else by
    conjugate gradients preconditioned by the nearest Kronecker product, with
    the LML and gradient estimated and their standard errors in
    ``solver_info_`` (see ``kronecker_gp.solvers._separable_sum``).
    ``__call__`` forms the dense
    Gram, :math:`O(N^2 R D)`, so the kernel also works in
    ``GaussianProcessRegressor`` (the dense reference). Hyperparameters are
    named ``t{r}__k{d}__<name>``.

    Examples
    --------
    A regional day effect (the same on every site) plus a local field:

    >>> import numpy as np
    >>> from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern
    >>> from kronecker_gp import KroneckerGP
    >>> from kronecker_gp.kernels import SeparableSum
    >>> kernel = SeparableSum(
    ...     [[ConstantKernel(), Matern(1.0, nu=0.5)], [RBF(1.0), Matern(3.0, nu=1.5)]]
    ... )
    >>> [hp.name for hp in kernel.hyperparameters][:2]
    ['t0__k0__constant_value', 't0__k1__length_scale']
    >>> sites, days = np.linspace(0, 3, 6), np.arange(8.0)
    >>> X = np.array([[s, t] for s in sites for t in days])
    >>> bool(np.allclose(kernel(X), sum(np.kron(*g) for g in
    ...      kernel.term_grams([sites, days]))))
    True
    >>> Y = np.sin(sites)[:, None] + np.cos(days)[None, :]
    >>> gp = KroneckerGP(kernel, noise=0.01, optimizer=None).fit_grid([sites, days], Y)
    >>> gp.solver_info_.path
    'separable-sum-woodbury'
    >>> bool(np.abs(gp.predict_grid([sites, days]) - Y).max() < 0.1)
    True
    """

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init__(
        self,
        terms: Sequence[Sequence[Kernel]],
        axes: Sequence[int | Sequence[int]] | None = None,
    ) -> None:
        self.terms = terms
        self.axes = axes

    # -- structure ---------------------------------------------------------------
    def products(self) -> list[KroneckerKernel]:
        """Return the terms as product kernels sharing this kernel's factor objects."""
        terms = _check_terms(self.terms)
        axes = KroneckerKernel(terms[0], axes=self.axes).resolved_axes
        return [KroneckerKernel(t, axes=axes) for t in terms]

    @property
    def resolved_axes(self) -> list[list[int]]:
        """The validated column groups, one list of ints per grid axis."""
        return self.products()[0].resolved_axes

    @property
    def n_terms(self) -> int:
        """The number of separable terms."""
        return len(_check_terms(self.terms))

    @property
    def kernels(self) -> list[list[Any]]:
        """Per grid axis, that axis' kernel in each term (``kernels[d][r]``)."""
        terms = _check_terms(self.terms)
        return [[t[d] for t in terms] for d in range(len(terms[0]))]

    def term_grams(
        self, coords: Sequence[ArrayLike], eval_gradient: bool = False
    ) -> list[Any]:
        """Return each term's per-axis Grams (see ``KroneckerKernel.factor_grams``)."""
        if eval_gradient:
            return [p.factor_grams(coords, True) for p in self.products()]
        return [p.factor_grams(coords) for p in self.products()]

    def term_cross(
        self, coords_a: Sequence[ArrayLike], coords_b: Sequence[ArrayLike]
    ) -> list[list[FloatArray]]:
        """Return each term's per-axis cross-covariances."""
        return [p.factor_cross(coords_a, coords_b) for p in self.products()]

    # -- the scikit-learn kernel protocol ----------------------------------------
    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, eval_gradient: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return the dense Gram ``k(X, Y)`` (the terms' sum), optionally its gradient.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
            Left argument.
        Y : array-like of shape (n_samples_Y, n_features), default=None
            Right argument; ``None`` evaluates ``k(X, X)``.
        eval_gradient : bool, default=False
            Also return the gradient with respect to ``theta`` (``Y`` must be None).

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims)
            Only when ``eval_gradient`` is True.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        products = self.products()
        if not eval_gradient:
            return np.sum([np.asarray(p(X, Y)) for p in products], axis=0)
        pairs: list[Any] = [p(X, eval_gradient=True) for p in products]
        grams = np.sum([K for K, _ in pairs], axis=0)
        return grams, np.concatenate([g for _, g in pairs], axis=2)

    def diag(self, X: ArrayLike) -> FloatArray:
        """Return ``np.diag(self(X))``: the sum of the terms' diagonals."""
        return np.asarray(sum(p.diag(X) for p in self.products()))

    def is_stationary(self) -> bool:
        """Return whether every term is stationary."""
        return all(p.is_stationary() for p in self.products())

    @property
    def requires_vector_input(self) -> bool:
        """Always True: the kernel slices columns of a numeric ``X``."""
        return True

    # -- hyperparameter plumbing -------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the parameters; ``deep`` adds ``t{r}__k{d}`` and their parameters."""
        params: dict[str, Any] = {"terms": self.terms, "axes": self.axes}
        if deep and isinstance(self.terms, (list, tuple)):
            for r, term in enumerate(self.terms):
                if not isinstance(term, (list, tuple)):
                    continue
                for d, k in enumerate(term):
                    if isinstance(k, Kernel):
                        key = f"t{r}__k{d}"
                        params[key] = k
                        params.update(
                            (f"{key}__{n}", v) for n, v in k.get_params().items()
                        )
        return params

    def set_params(self, **params: Any) -> SeparableSum:
        """Set parameters; ``t{r}__k{d}`` and ``t{r}__k{d}__<name>`` reach factors."""
        nested = {
            k: params.pop(k)
            for k in list(params)
            if _TERM_KEY.fullmatch(k.split("__")[0])
        }
        if nested:
            terms = _check_terms(self.terms)
            for key, value in nested.items():
                head, _, rest = key.partition("__")
                r = int(head[1:])
                if r >= len(terms) or not rest:
                    raise ValueError(
                        f"Invalid parameter {key} for {self!r}: the terms are "
                        f"t0..t{len(terms) - 1}, each with factors k0..k"
                        f"{len(terms[0]) - 1}."
                    )
                factor = re.fullmatch(r"k(\d+)", rest)
                if factor and int(factor.group(1)) < len(terms[r]):
                    terms[r][int(factor.group(1))] = value
                else:
                    KroneckerKernel(terms[r]).set_params(**{rest: value})
            self.terms = terms
        super().set_params(**params)
        return self

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        """The factors' hyperparameters, named ``t{r}__k{d}__<name>``."""
        return [
            Hyperparameter(
                f"t{r}__{h.name}", h.value_type, h.bounds, h.n_elements, h.fixed
            )
            for r, p in enumerate(self.products())
            for h in p.hyperparameters
        ]

    @property
    def theta(self) -> FloatArray:
        """The log-transformed free hyperparameters, term by term."""
        return np.concatenate([p.theta for p in self.products()])

    @theta.setter
    def theta(self, theta: ArrayLike) -> None:
        for p, piece in zip(self.products(), self.split_theta(theta), strict=True):
            p.theta = piece

    @property
    def bounds(self) -> FloatArray:
        """The log-transformed bounds of ``theta``, shape (n_dims, 2)."""
        return np.vstack([np.reshape(p.bounds, (-1, 2)) for p in self.products()])

    @property
    def n_theta_per_term(self) -> list[int]:
        """The number of free hyperparameters of each term."""
        return [int(np.size(p.theta)) for p in self.products()]

    def split_theta(self, theta: ArrayLike) -> list[FloatArray]:
        """Split a ``theta`` (or gradient) vector into the terms' pieces."""
        arr = np.asarray(theta, dtype=np.float64)
        sizes = self.n_theta_per_term
        if arr.ndim != 1 or arr.shape[0] != sum(sizes):
            raise ValueError(
                f"theta must be 1-D with {sum(sizes)} entries ({sizes} per term); "
                f"got shape {arr.shape}."
            )
        return list(np.split(arr, np.cumsum(sizes)[:-1]))

    # -- comparison and display --------------------------------------------------
    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` has equal terms on the same columns."""
        if not isinstance(other, SeparableSum):
            return False
        try:
            a, b = self.products(), other.products()
        except (TypeError, ValueError):
            return self is other
        return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))

    def __repr__(self) -> str:
        """Return ``SeparableSum([k_00, k_01] + [k_10, k_11] @ axes)``."""
        try:
            terms = _check_terms(self.terms)
            axes = self.resolved_axes
        except (TypeError, ValueError):
            return f"SeparableSum(terms={self.terms!r}, axes={self.axes!r})"
        body = " + ".join("[" + ", ".join(map(repr, t)) + "]" for t in terms)
        return f"SeparableSum({body} @ {axes})"
