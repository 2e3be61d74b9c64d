"""sqdist: exact, fast pairwise squared Euclidean distances, the RBF kernel,
NumPy-style broadcasting explained, and k-means -- in PyTorch."""

from ._chunking import get_working_memory, set_working_memory, working_memory
from ._validation import SqdistError
from .broadcast import BroadcastError, broadcast_shapes, broadcast_table, explain_broadcast
from .distances import nearest, sqdist, sqdist_chunks
from .kernels import rbf

__version__ = "0.1.0"

__all__ = [
    "BroadcastError",
    "SqdistError",
    "__version__",
    "broadcast_shapes",
    "broadcast_table",
    "explain_broadcast",
    "get_working_memory",
    "nearest",
    "rbf",
    "set_working_memory",
    "sqdist",
    "sqdist_chunks",
    "working_memory",
]
