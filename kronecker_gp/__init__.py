"""kronecker_gp: exact Gaussian-process regression on grids.

The covariance of data on a grid of ``D`` axes with a product kernel is a
Kronecker product ``K_1 (x) ... (x) K_D``; :class:`KroneckerGP` does exact GP
inference through the eigendecompositions of the small factors.
"""

from kronecker_gp import kernels, linalg
from kronecker_gp.models import (
    KroneckerGP,
    KroneckerGPClassifier,
    KroneckerLaplaceGP,
    MultiTaskGP,
    ProductGraphGP,
)

try:
    from kronecker_gp._version import __version__
except ImportError:  # pragma: no cover - running from a tree without a build
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("kronecker-gp")
    except PackageNotFoundError:
        __version__ = "0.0.0"

__all__ = [
    "KroneckerGP",
    "KroneckerGPClassifier",
    "KroneckerLaplaceGP",
    "MultiTaskGP",
    "ProductGraphGP",
    "__version__",
    "kernels",
    "linalg",
]
