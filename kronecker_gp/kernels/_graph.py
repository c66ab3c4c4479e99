r"""Graph Laplacians and Gaussian-process kernels on the nodes of a graph.

A covariance on the ``n`` nodes of a weighted undirected graph is a function
of its Laplacian :math:`L = U \operatorname{diag}(\lambda) U^T`:
:math:`K = U \operatorname{diag}(f(\lambda)) U^T`. Here ``f`` is the heat
kernel :math:`e^{-\beta\lambda}` (diffusion) or the graph Matern spectrum
:math:`(2\nu/\kappa^2 + \lambda)^{-\nu}`, scaled so that the mean prior
variance over the nodes is the amplitude.

References
----------
.. [1] Kondor, R. I. and Lafferty, J. (2002). Diffusion kernels on graphs and
   other discrete input spaces. ICML.
.. [2] Borovitskiy, V., Azangulov, I., Terenin, A., Mostowsky, P., Deisenroth,
   M. P. and Durrande, N. (2021). Matern Gaussian processes on graphs. AISTATS.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.sparse.csgraph import connected_components
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from kronecker_gp._typing import ArrayLike, FloatArray, IntArray
from kronecker_gp._validation import as_float_array, check_square, check_symmetric

#: The optional dependency that reads networkx graphs.
GRAPH_EXTRA = 'pip install "kronecker-gp[graph]"'
#: Laplacian eigenvalues below ``-NEG_EIG_ERROR * max(1, max eig)`` are an error.
NEG_EIG_ERROR = 1e-8
_EIGH_CACHE: OrderedDict[tuple[int, str], tuple[FloatArray, FloatArray]] = OrderedDict()
_EIGH_CACHE_SIZE = 8


# ---------------------------------------------------------------- Laplacians
def _import_networkx() -> Any:
    """Import networkx or raise an ``ImportError`` naming the extra."""
    try:
        import networkx  # noqa: PLC0415 - optional extra, kept off the import path
    except ImportError:
        raise ImportError(
            f"Reading a networkx graph needs networkx; install it with {GRAPH_EXTRA} "
            "or pass the adjacency matrix as a numpy array or scipy.sparse matrix."
        ) from None
    return networkx


def _is_networkx_graph(obj: object) -> bool:
    """Whether ``obj`` is a networkx graph (checked without importing networkx)."""
    return any(c.__module__.split(".")[0] == "networkx" for c in type(obj).__mro__)


def _dense_adjacency(adjacency: object, nodelist: Sequence[Any] | None) -> FloatArray:
    """Return ``adjacency`` (array, sparse matrix or networkx graph) as dense floats."""
    if _is_networkx_graph(adjacency):
        nx = _import_networkx()
        nodes = list(adjacency) if nodelist is None else list(nodelist)  # type: ignore[call-overload]
        return np.asarray(nx.to_numpy_array(adjacency, nodelist=nodes), np.float64)
    if nodelist is not None:
        raise ValueError("nodelist is only used with a networkx graph; got an array.")
    if scipy.sparse.issparse(adjacency):
        return np.asarray(adjacency.toarray(), np.float64)  # type: ignore[attr-defined]
    return as_float_array(adjacency, "adjacency", ndim=2)  # type: ignore[arg-type]


def check_adjacency(
    adjacency: object, *, nodelist: Sequence[Any] | None = None
) -> FloatArray:
    """Validate a weighted adjacency matrix and return it dense, without self-loops.

    Parameters
    ----------
    adjacency : ndarray, scipy.sparse matrix or networkx graph
        Symmetric non-negative edge weights of shape (n_nodes, n_nodes). A
        networkx graph contributes its ``"weight"`` edge attribute (default 1).
    nodelist : sequence, optional
        Node order for a networkx graph (default ``list(graph)``).

    Returns
    -------
    ndarray of shape (n_nodes, n_nodes)
        The symmetric weights with a zero diagonal.

    Raises
    ------
    ValueError
        If the matrix is not square, has NaN/inf or negative weights, or is
        not symmetric.
    ImportError
        If a networkx graph is given and networkx cannot be imported.

    Warns
    -----
    UserWarning
        If the graph is disconnected (the message gives the number of
        connected components).

    Examples
    --------
    >>> import numpy as np
    >>> check_adjacency(np.array([[1.0, 2.0], [2.0, 0.0]]))
    array([[0., 2.],
           [2., 0.]])
    """
    a = _dense_adjacency(adjacency, nodelist)
    a = check_square(a, "adjacency")
    if np.any(a < 0):
        raise ValueError(
            f"adjacency must have non-negative edge weights; got {int((a < 0).sum())} "
            f"negative entries (smallest {a.min():.3g}). Use |w| or shift the "
            "weights; a similarity graph needs weights >= 0."
        )
    a = check_symmetric(a, "adjacency")
    np.fill_diagonal(a, 0.0)  # self-loops do not change D - A
    n_comp, labels = connected_components(scipy.sparse.csr_array(a), directed=False)
    if n_comp > 1:
        sizes = np.sort(np.bincount(labels))[::-1]
        shown = ", ".join(str(s) for s in sizes[:5]) + (", ..." if n_comp > 5 else "")
        warnings.warn(
            f"The graph is disconnected: {n_comp} connected components (sizes "
            f"{shown}). The Laplacian has {n_comp} zero eigenvalues and a graph "
            "kernel makes the components independent; add edges (e.g. more "
            "neighbours) if that is not intended.",
            UserWarning,
            stacklevel=3,
        )
    return a


def graph_laplacian(
    adjacency: object,
    normalized: bool = False,
    *,
    nodelist: Sequence[Any] | None = None,
) -> FloatArray:
    r"""Return the (combinatorial or normalised) Laplacian of a weighted graph.

    Parameters
    ----------
    adjacency : ndarray, scipy.sparse matrix or networkx graph
        Symmetric non-negative edge weights ``A`` of shape (n_nodes, n_nodes).
        A networkx graph (an optional dependency, ``pip install
        "kronecker-gp[graph]"``) contributes its ``"weight"`` edge attribute
        (default 1), rows in ``nodelist`` order. Self-loops are ignored.
    normalized : bool, default=False
        Return the symmetric normalised Laplacian instead.
    nodelist : sequence, optional
        Node order for a networkx graph (default ``list(graph)``).

    Returns
    -------
    ndarray of shape (n_nodes, n_nodes)
        ``L``, dense (graph kernels need its full eigendecomposition).

    Raises
    ------
    ValueError
        If the adjacency is not square, has NaN/inf or negative weights, or
        is not symmetric.
    ImportError
        If a networkx graph is given and networkx cannot be imported.

    Warns
    -----
    UserWarning
        If the graph is disconnected, stating the number of components.

    Notes
    -----
    With degrees :math:`d_i = \sum_j A_{ij}` and :math:`D = \operatorname{diag}(d)`:

    .. math::
        L = D - A, \qquad
        L_{\mathrm{norm}} = I - D^{-1/2} A D^{-1/2},

    the latter with zero rows for isolated nodes. Both are symmetric positive
    semi-definite, with one zero eigenvalue per connected component;
    :math:`L_{\mathrm{norm}}` has its spectrum in :math:`[0, 2]`. Cost
    :math:`O(n^2)`.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.kernels import graph_laplacian
    >>> A = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])   # a path of 3 nodes
    >>> graph_laplacian(A)
    array([[ 1., -1.,  0.],
           [-1.,  2., -1.],
           [ 0., -1.,  1.]])
    >>> np.round(np.linalg.eigvalsh(graph_laplacian(A, normalized=True)), 12)
    array([0., 1., 2.])
    """
    a = check_adjacency(adjacency, nodelist=nodelist)
    deg = a.sum(axis=1)
    if not normalized:
        return np.diag(deg) - a
    scale = np.zeros_like(deg)
    np.divide(1.0, np.sqrt(deg), out=scale, where=deg > 0)
    return np.diag((deg > 0).astype(float)) - scale[:, None] * a * scale[None, :]


def chain_laplacian(n_nodes: int, *, cyclic: bool = False) -> FloatArray:
    r"""Return the Laplacian of a path (or cycle) graph, e.g. a time axis.

    Parameters
    ----------
    n_nodes : int
        Number of nodes, at least 1 (at least 3 if ``cyclic``).
    cyclic : bool, default=False
        Join the last node to the first.

    Returns
    -------
    ndarray of shape (n_nodes, n_nodes)
        The combinatorial Laplacian, tridiagonal (plus corners if cyclic).

    Raises
    ------
    ValueError
        If ``n_nodes`` is not an integer >= 1 (>= 3 for a cycle).

    Notes
    -----
    The path's eigenvalues are :math:`2 - 2\cos(\pi k / n)`, those of the
    cycle :math:`2 - 2\cos(2\pi k / n)`, :math:`k = 0..n-1`.

    Examples
    --------
    >>> from kronecker_gp.kernels import chain_laplacian
    >>> chain_laplacian(3)
    array([[ 1., -1.,  0.],
           [-1.,  2., -1.],
           [ 0., -1.,  1.]])
    """
    low = 3 if cyclic else 1
    if (
        isinstance(n_nodes, bool)
        or not isinstance(n_nodes, numbers.Integral)
        or n_nodes < low
    ):
        raise ValueError(
            f"n_nodes must be an integer >= {low}"
            f"{' for a cycle' if cyclic else ''}; got {n_nodes!r}."
        )
    n = int(n_nodes)
    a = np.eye(n, k=1) + np.eye(n, k=-1)
    if cyclic:
        a[0, -1] = a[-1, 0] = 1.0
    return np.diag(a.sum(axis=1)) - a


def check_laplacian(laplacian: object, name: str = "laplacian") -> FloatArray:
    """Return a Laplacian (dense or scipy.sparse) as a dense symmetric float array.

    Raises
    ------
    ValueError
        If it is not square, finite and symmetric.
    """
    if scipy.sparse.issparse(laplacian):
        laplacian = laplacian.toarray()  # type: ignore[attr-defined]
    return check_symmetric(laplacian, name)  # type: ignore[arg-type]


def laplacian_eigh(
    laplacian: object, name: str = "laplacian"
) -> tuple[FloatArray, FloatArray]:
    """Eigendecompose a graph Laplacian, with a small cache keyed on its values.

    Parameters
    ----------
    laplacian : array-like or scipy.sparse matrix of shape (n, n)
        A symmetric positive semi-definite matrix.
    name : str, default="laplacian"
        Name used in error messages.

    Returns
    -------
    w : ndarray of shape (n,)
        Eigenvalues, ascending, clipped at zero (read-only).
    u : ndarray of shape (n, n)
        Orthonormal eigenvectors (read-only).

    Raises
    ------
    ValueError
        If the matrix is not symmetric, finite and positive semi-definite.

    Notes
    -----
    Cost :math:`O(n^3)` on a cache miss, :math:`O(n^2)` (a hash) on a hit; the
    cache keeps the last 8 Laplacians, so cloned kernels (scikit-learn clones
    at every optimiser step) share one decomposition.

    Examples
    --------
    >>> w, u = laplacian_eigh(chain_laplacian(3))
    >>> w.round(12)
    array([0., 1., 3.])
    """
    lap = check_laplacian(laplacian, name)
    key = (lap.shape[0], hashlib.sha1(lap.tobytes()).hexdigest())
    if key in _EIGH_CACHE:
        _EIGH_CACHE.move_to_end(key)
        return _EIGH_CACHE[key]
    try:  # divide and conquer (fast); QR-based syev if it fails to converge
        w, u = scipy.linalg.eigh(lap, driver="evd", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        w, u = scipy.linalg.eigh(lap, driver="ev", check_finite=False)
    top = max(1.0, float(np.abs(w).max(initial=0.0)))
    if w.size and w[0] < -NEG_EIG_ERROR * top:
        raise ValueError(
            f"{name} must be positive semi-definite (a graph Laplacian); its "
            f"smallest eigenvalue is {w[0]:.3g}. Build it with graph_laplacian."
        )
    w = np.maximum(w, 0.0)
    w.flags.writeable = False
    u.flags.writeable = False
    _EIGH_CACHE[key] = (w, u)
    while len(_EIGH_CACHE) > _EIGH_CACHE_SIZE:
        _EIGH_CACHE.popitem(last=False)
    return w, u


# ------------------------------------------------------------------ spectra
def normalised_spectrum(
    log_f: FloatArray, dlog_f: FloatArray
) -> tuple[FloatArray, FloatArray]:
    r"""Scale a spectrum to unit mean and differentiate the scaling.

    Parameters
    ----------
    log_f : ndarray of shape (N,)
        Log spectral weights (any additive constant).
    dlog_f : ndarray of shape (N, p)
        Their derivatives w.r.t. ``p`` log-hyperparameters.

    Returns
    -------
    f : ndarray of shape (N,)
        :math:`f / \bar f`, so that ``mean(f) == 1`` (unit mean variance).
    df : ndarray of shape (N, p)
        :math:`\partial f = f (\partial \log f - \overline{f \,\partial \log f})`.

    Examples
    --------
    >>> import numpy as np
    >>> f, df = normalised_spectrum(np.log([1.0, 3.0]), np.zeros((2, 1)))
    >>> f, df[:, 0]
    (array([0.5, 1.5]), array([0., 0.]))
    """
    f = np.exp(log_f - log_f.max())
    f /= f.mean()
    df = f[:, None] * (dlog_f - np.mean(f[:, None] * dlog_f, axis=0))
    return f, df


def diffusion_log_spectrum(
    lam_parts: Sequence[FloatArray], beta: FloatArray
) -> tuple[FloatArray, list[FloatArray]]:
    r"""Log heat-kernel spectrum :math:`-\sum_d \beta_d \lambda_d` and its gradients.

    Parameters
    ----------
    lam_parts : sequence of ndarray of shape (N,)
        The per-axis eigenvalues broadcast to the product grid (one entry for
        a single graph).
    beta : ndarray of shape (len(lam_parts),)
        Diffusion times.

    Returns
    -------
    log_f : ndarray of shape (N,)
    dlog_f : list of ndarray of shape (N,)
        Derivatives w.r.t. ``log(beta_d)``: :math:`-\beta_d \lambda_d`.
    """
    grads = [-b * lam for b, lam in zip(beta, lam_parts)]
    return np.sum(grads, axis=0), grads


def matern_log_spectrum(
    lam_parts: Sequence[FloatArray], nu: float, kappa: FloatArray
) -> tuple[FloatArray, list[FloatArray], FloatArray]:
    r"""Log graph-Matern spectrum and its gradients (up to an additive constant).

    Parameters
    ----------
    lam_parts : sequence of ndarray of shape (N,)
        Per-axis eigenvalues broadcast to the product grid.
    nu : float
        Smoothness.
    kappa : ndarray of shape (len(lam_parts),)
        Length scales (in graph hops).

    Returns
    -------
    log_f : ndarray of shape (N,)
        :math:`-\nu \log t`, :math:`t = 2\nu + \sum_d \kappa_d^2 \lambda_d`,
        which equals :math:`\log (2\nu/\kappa^2 + \lambda)^{-\nu}` plus a
        constant for a single graph.
    dlog_kappa : list of ndarray of shape (N,)
        :math:`-2\nu\kappa_d^2\lambda_d / t`.
    dlog_nu : ndarray of shape (N,)
        :math:`-\nu \log t - 2\nu^2 / t`.
    """
    scaled = [k * k * lam for k, lam in zip(kappa, lam_parts)]
    t = 2.0 * nu + np.sum(scaled, axis=0)
    log_t = np.log(t)
    return -nu * log_t, [-2.0 * nu * s / t for s in scaled], -nu * log_t - 2 * nu**2 / t


# ------------------------------------------------------------------ kernels
def check_nodes(X: ArrayLike, n_nodes: int, name: str) -> IntArray:
    """Return a column of integer node indices in ``[0, n_nodes)`` or raise."""
    arr = as_float_array(X, name, ndim=(1, 2))
    arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr
    if arr.shape[1] != 1:
        raise ValueError(
            f"{name} must have one column of node indices; got shape {arr.shape}. "
            "Use KroneckerKernel(..., axes=...) to pick the node column."
        )
    col = arr[:, 0]
    bad = col != np.round(col)
    if bad.any():
        raise ValueError(
            f"{name} must hold integer node indices; got {float(col[bad][0]):g}. "
            "Pass node numbers 0..n_nodes-1 (the rows of the Laplacian)."
        )
    out = (col < 0) | (col >= n_nodes)
    if out.any():
        raise ValueError(
            f"{name} holds node index {int(col[out][0])} outside [0, {n_nodes}); "
            f"the Laplacian has {n_nodes} nodes."
        )
    return col.astype(np.intp)


def _same_param(a: object, b: object) -> bool:
    """Compare parameter values that may be arrays, sparse matrices or strings."""
    if a is b:
        return True
    if scipy.sparse.issparse(a) or scipy.sparse.issparse(b):
        a = a.toarray() if scipy.sparse.issparse(a) else a  # type: ignore[attr-defined]
        b = b.toarray() if scipy.sparse.issparse(b) else b  # type: ignore[attr-defined]
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


class _GraphKernel(Kernel):
    """Shared machinery: a spectral kernel ``U diag(s) U^T`` on node indices."""

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    laplacian: Any
    amplitude: float
    amplitude_bounds: Any

    @property
    def hyperparameter_amplitude(self) -> Hyperparameter:
        """The prior variance averaged over the nodes."""
        return Hyperparameter("amplitude", "numeric", self.amplitude_bounds)

    @property
    def n_nodes(self) -> int:
        """Number of nodes (the Laplacian's size)."""
        return int(np.shape(self.laplacian)[0])

    def _log_spectrum(self, w: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        raise NotImplementedError

    def spectrum(
        self, eval_gradient: bool = False
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return eigenvectors, spectral weights and their theta-gradients.

        Returns
        -------
        u : ndarray of shape (n_nodes, n_nodes)
            Laplacian eigenvectors.
        s : ndarray of shape (n_nodes,)
            Kernel eigenvalues, ``K = u @ diag(s) @ u.T``, ``mean(s) = amplitude``.
        ds : ndarray of shape (n_nodes, n_theta)
            ``d s / d theta`` (zero columns when ``eval_gradient`` is False).
        """
        w, u = laplacian_eigh(self.laplacian)
        log_f, grads = self._log_spectrum(w)
        names = [h.name for h in self.hyperparameters if not h.fixed]
        others = [grads[n] for n in names if n != "amplitude"]
        dlog = np.column_stack(others) if others else np.zeros((w.size, 0))
        f, df = normalised_spectrum(log_f, dlog)
        amp = float(self.amplitude)
        if not eval_gradient:
            return u, amp * f, np.zeros((w.size, 0))
        cols = iter((amp * df).T)
        ds = [amp * f if n == "amplitude" else next(cols) for n in names]
        return u, amp * f, np.column_stack(ds) if ds else np.zeros((w.size, 0))

    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, eval_gradient: bool = False
    ) -> FloatArray | tuple[FloatArray, FloatArray]:
        """Return the Gram matrix ``k(X, Y)`` and optionally its gradient.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, 1)
            Integer node indices.
        Y : array-like of shape (n_samples_Y, 1), default=None
            Integer node indices; ``None`` evaluates ``k(X, X)``.
        eval_gradient : bool, default=False
            Also return the gradient w.r.t. ``theta`` (``Y`` must be None).

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims)
            Only when ``eval_gradient`` is True.

        Raises
        ------
        ValueError
            If an index is not an integer in ``[0, n_nodes)``, or ``Y`` is
            given with ``eval_gradient``.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        u, s, ds = self.spectrum(eval_gradient)
        ux = u[check_nodes(X, self.n_nodes, "X")]
        uy = ux if Y is None else u[check_nodes(Y, self.n_nodes, "Y")]
        K = (ux * s) @ uy.T
        if not eval_gradient:
            return K
        grad = np.einsum("ip,pk,jp->ijk", ux, ds, ux, optimize=True)
        return K, grad

    def diag(self, X: ArrayLike) -> FloatArray:
        """Return ``np.diag(self(X))``: ``sum_p U[x, p]^2 s_p``, cost O(n n_X)."""
        u, s, _ = self.spectrum()
        ux = u[check_nodes(X, self.n_nodes, "X")]
        return np.asarray((ux * ux) @ s)

    def is_stationary(self) -> bool:
        """Return False: the covariance depends on the nodes, not a difference."""
        return False

    def __eq__(self, other: object) -> bool:
        """Return whether ``other`` is the same kernel with equal parameters."""
        if type(self) is not type(other):
            return False
        pa, pb = self.get_params(), other.get_params()  # type: ignore[attr-defined]
        return pa.keys() == pb.keys() and all(_same_param(pa[k], pb[k]) for k in pa)

    def _repr_params(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        """Return ``Name(n_nodes=..., <hyperparameters>)``."""
        try:
            n = str(self.n_nodes)
        except (IndexError, TypeError):
            n = "?"
        return f"{type(self).__name__}(n_nodes={n}, {self._repr_params()})"


class GraphDiffusionKernel(_GraphKernel):
    r"""Diffusion (heat) kernel ``exp(-beta L)`` on the nodes of a graph.

    The input is one column of integer node indices (the rows of ``L``).

    Parameters
    ----------
    laplacian : array-like or scipy.sparse matrix of shape (n_nodes, n_nodes)
        The graph Laplacian (see :func:`graph_laplacian`), combinatorial or
        normalised.
    beta : float, default=1.0
        Diffusion time (larger is smoother).
    beta_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on ``beta``.
    amplitude : float, default=1.0
        Mean prior variance over the nodes.
    amplitude_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on ``amplitude``; use ``"fixed"`` when another factor of a
        product carries the amplitude.

    Notes
    -----
    With :math:`L = U \operatorname{diag}(\lambda) U^T`,

    .. math::
        K = \frac{a}{\bar f}\, U \operatorname{diag}(f) U^T, \qquad
        f_i = e^{-\beta \lambda_i}, \quad
        \bar f = \tfrac1n \sum_i f_i,

    so :math:`\operatorname{tr}(K)/n = a`: the kernel is normalised to unit
    mean variance times the amplitude ``a``. :math:`K \propto e^{-\beta L}`
    (``scipy.linalg.expm``). The eigendecomposition, :math:`O(n^3)`, is
    cached per Laplacian; a Gram on ``m`` nodes costs :math:`O(m^2 n)`.
    Gradients are w.r.t. :math:`\log a` and :math:`\log\beta`.

    References
    ----------
    Kondor, R. I. and Lafferty, J. (2002). Diffusion kernels on graphs and
    other discrete input spaces. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> import scipy.linalg
    >>> from kronecker_gp.kernels import GraphDiffusionKernel, chain_laplacian
    >>> L = chain_laplacian(4)
    >>> kernel = GraphDiffusionKernel(L, beta=0.5)
    >>> K = kernel(np.arange(4)[:, None])
    >>> heat = scipy.linalg.expm(-0.5 * L)
    >>> bool(np.allclose(K, heat / np.trace(heat) * 4)), round(float(np.trace(K)), 12)
    (True, 4.0)
    """

    def __init__(
        self,
        laplacian: Any,
        beta: float = 1.0,
        *,
        beta_bounds: Any = (1e-5, 1e5),
        amplitude: float = 1.0,
        amplitude_bounds: Any = (1e-5, 1e5),
    ) -> None:
        self.laplacian = laplacian
        self.beta = beta
        self.beta_bounds = beta_bounds
        self.amplitude = amplitude
        self.amplitude_bounds = amplitude_bounds

    @property
    def hyperparameter_beta(self) -> Hyperparameter:
        """The diffusion time."""
        return Hyperparameter("beta", "numeric", self.beta_bounds)

    def _log_spectrum(self, w: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        log_f, grads = diffusion_log_spectrum([w], np.array([float(self.beta)]))
        return log_f, {"beta": grads[0]}

    def _repr_params(self) -> str:
        return f"beta={float(self.beta):.3g}, amplitude={float(self.amplitude):.3g}"


class GraphMaternKernel(_GraphKernel):
    r"""Matern kernel ``(2 nu / kappa^2 I + L)^(-nu)`` on the nodes of a graph.

    The input is one column of integer node indices (the rows of ``L``).

    Parameters
    ----------
    laplacian : array-like or scipy.sparse matrix of shape (n_nodes, n_nodes)
        The graph Laplacian (see :func:`graph_laplacian`), combinatorial or
        normalised.
    nu : float, default=1.5
        Smoothness (any positive value; not restricted to half-integers).
    kappa : float, default=1.0
        Length scale, in graph hops for a unit-weight combinatorial Laplacian.
    kappa_bounds : pair of float or "fixed", default=(1e-3, 1e3)
        Bounds on ``kappa``.
    amplitude : float, default=1.0
        Mean prior variance over the nodes.
    amplitude_bounds : pair of float or "fixed", default=(1e-5, 1e5)
        Bounds on ``amplitude``.
    nu_bounds : pair of float or "fixed", default="fixed"
        Bounds on ``nu``; ``"fixed"`` (the default) keeps ``nu`` out of
        ``theta``, as scikit-learn's ``Matern`` does.

    Notes
    -----
    With :math:`L = U \operatorname{diag}(\lambda) U^T`,

    .. math::
        K = \frac{a}{\bar f}\, U \operatorname{diag}(f) U^T, \qquad
        f_i = \Big(\frac{2\nu}{\kappa^2} + \lambda_i\Big)^{-\nu}, \quad
        \bar f = \tfrac1n \sum_i f_i,

    so :math:`\operatorname{tr}(K)/n = a`: the kernel is normalised to unit
    mean variance times the amplitude ``a`` (Borovitskiy et al. 2021, eq. 9).
    As :math:`\nu \to \infty` it tends to the diffusion kernel with
    :math:`\beta = \kappa^2/2`. The eigendecomposition, :math:`O(n^3)`, is
    cached per Laplacian; a Gram on ``m`` nodes costs :math:`O(m^2 n)`.
    Gradients are w.r.t. :math:`\log a`, :math:`\log\kappa` and (if free)
    :math:`\log\nu`.

    References
    ----------
    Borovitskiy, V., Azangulov, I., Terenin, A., Mostowsky, P., Deisenroth,
    M. P. and Durrande, N. (2021). Matern Gaussian processes on graphs.
    AISTATS.

    Examples
    --------
    >>> import numpy as np
    >>> from kronecker_gp.kernels import GraphMaternKernel, chain_laplacian
    >>> L = chain_laplacian(5, cyclic=True)
    >>> kernel = GraphMaternKernel(L, nu=2.0, kappa=1.5)
    >>> K = kernel(np.arange(5)[:, None])
    >>> M = np.linalg.matrix_power(np.linalg.inv(2 * 2.0 / 1.5**2 * np.eye(5) + L), 2)
    >>> bool(np.allclose(K, M * 5 / np.trace(M)))
    True
    >>> [h.name for h in kernel.hyperparameters if not h.fixed]
    ['amplitude', 'kappa']
    """

    def __init__(
        self,
        laplacian: Any,
        nu: float = 1.5,
        kappa: float = 1.0,
        *,
        kappa_bounds: Any = (1e-3, 1e3),
        amplitude: float = 1.0,
        amplitude_bounds: Any = (1e-5, 1e5),
        nu_bounds: Any = "fixed",
    ) -> None:
        self.laplacian = laplacian
        self.nu = nu
        self.kappa = kappa
        self.kappa_bounds = kappa_bounds
        self.amplitude = amplitude
        self.amplitude_bounds = amplitude_bounds
        self.nu_bounds = nu_bounds

    @property
    def hyperparameter_kappa(self) -> Hyperparameter:
        """The length scale."""
        return Hyperparameter("kappa", "numeric", self.kappa_bounds)

    @property
    def hyperparameter_nu(self) -> Hyperparameter:
        """The smoothness (fixed unless ``nu_bounds`` is a pair)."""
        return Hyperparameter("nu", "numeric", self.nu_bounds)

    def _log_spectrum(self, w: FloatArray) -> tuple[FloatArray, dict[str, FloatArray]]:
        nu = float(self.nu)
        if not nu > 0:
            raise ValueError(f"nu must be positive; got {self.nu!r}.")
        log_f, dk, dnu = matern_log_spectrum([w], nu, np.array([float(self.kappa)]))
        return log_f, {"kappa": dk[0], "nu": dnu}

    def _repr_params(self) -> str:
        return (
            f"nu={float(self.nu):.3g}, kappa={float(self.kappa):.3g}, "
            f"amplitude={float(self.amplitude):.3g}"
        )


__all__ = [
    "GraphDiffusionKernel",
    "GraphMaternKernel",
    "chain_laplacian",
    "check_adjacency",
    "graph_laplacian",
    "laplacian_eigh",
]
