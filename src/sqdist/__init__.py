"""sqdist: exact, fast pairwise squared Euclidean distances, the RBF kernel,
NumPy-style broadcasting explained, and k-means -- in PyTorch."""

from ._chunking import get_working_memory, set_working_memory, working_memory
from ._validation import ConvergenceWarning, SqdistError, SqdistWarning
from .broadcast import BroadcastError, broadcast_shapes, broadcast_table, explain_broadcast
from .distances import nearest, sqdist, sqdist_chunks
from .distributed import is_distributed
from .kernels import rbf
from . import datasets
from .kmeans import KMeans, KMeansResult, kmeans
from .streaming import is_out_of_core, kmeans_stream

__version__ = "0.1.0"

__all__ = [
    "BroadcastError",
    "ConvergenceWarning",
    "KMeans",
    "KMeansResult",
    "SqdistError",
    "SqdistWarning",
    "__version__",
    "broadcast_shapes",
    "broadcast_table",
    "explain_broadcast",
    "get_working_memory",
    "is_distributed",
    "is_out_of_core",
    "kmeans",
    "kmeans_stream",
    "nearest",
    "rbf",
    "set_working_memory",
    "sqdist",
    "sqdist_chunks",
    "working_memory",
]
