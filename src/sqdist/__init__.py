"""sqdist: exact, fast pairwise squared Euclidean distances, the RBF kernel,
NumPy-style broadcasting explained, and k-means -- in PyTorch."""

from . import datasets
from ._chunking import get_working_memory, set_working_memory, working_memory
from ._comm import is_distributed
from ._results import KMeansResult
from ._sources import is_out_of_core
from ._validation import ConvergenceWarning, SqdistError, SqdistWarning
from ._version import __version__
from .broadcast import BroadcastError, broadcast_shapes, broadcast_table, explain_broadcast
from .clustering import kmeans, kmeans_plusplus, kmeans_stream
from .distances import nearest, sqdist, sqdist_chunks
from .kernels import rbf


def __getattr__(name: str):
    """``KMeans`` and ``NotFittedError`` on first use: the estimator imports scikit-learn (~1.5 s),
    which the distance functions and ``sqdist.kmeans`` do not need."""
    if name in ("KMeans", "NotFittedError"):
        from . import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'sqdist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"KMeans", "NotFittedError"})


__all__ = [
    "BroadcastError",
    "ConvergenceWarning",
    "KMeans",
    "KMeansResult",
    "NotFittedError",
    "SqdistError",
    "SqdistWarning",
    "__version__",
    "broadcast_shapes",
    "broadcast_table",
    "datasets",
    "explain_broadcast",
    "get_working_memory",
    "is_distributed",
    "is_out_of_core",
    "kmeans",
    "kmeans_plusplus",
    "kmeans_stream",
    "nearest",
    "rbf",
    "set_working_memory",
    "sqdist",
    "sqdist_chunks",
    "working_memory",
]
