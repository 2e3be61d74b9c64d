"""sqdist: exact, fast pairwise squared Euclidean distances, the RBF kernel,
NumPy-style broadcasting explained, and k-means -- in PyTorch.

``import sqdist`` is light: every public name is loaded from its module on
first use (PEP 562), so the command line's ``--help`` and ``sqdist broadcast``
never import torch (~4 s), and only ``sqdist.KMeans`` imports scikit-learn.

Examples
--------
>>> import sqdist
>>> sqdist.broadcast_shapes((4, 1), (3, 1, 1, 5))
(3, 1, 4, 5)
>>> sqdist.sqdist([[0.0, 1.0]], [[1.0, 1.0]])
array([[1.]])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import ConvergenceWarning, SqdistError, SqdistWarning
from ._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import datasets
    from ._chunking import get_working_memory, set_working_memory, working_memory
    from ._comm import is_distributed
    from ._results import KMeansResult
    from ._sources import FeatherSource, ParquetSource, is_out_of_core
    from .broadcast import BroadcastError, broadcast_shapes, broadcast_table, explain_broadcast
    from .clustering import kmeans, kmeans_plusplus, kmeans_stream
    from .distances import nearest, sqdist, sqdist_chunks
    from .estimator import KMeans, NotFittedError
    from .kernels import rbf
    from .minibatch import MiniBatchKMeans

# public name -> the module that defines it ("datasets" is the module itself)
_LAZY: dict[str, str] = {
    "datasets": "datasets",
    "get_working_memory": "_chunking",
    "set_working_memory": "_chunking",
    "working_memory": "_chunking",
    "is_distributed": "_comm",
    "KMeansResult": "_results",
    "is_out_of_core": "_sources",
    "ParquetSource": "_sources",  # read a Parquet / Feather file in row chunks (needs pyarrow)
    "FeatherSource": "_sources",
    "BroadcastError": "broadcast",
    "broadcast_shapes": "broadcast",
    "broadcast_table": "broadcast",
    "explain_broadcast": "broadcast",
    "kmeans": "clustering",
    "kmeans_plusplus": "clustering",
    "kmeans_stream": "clustering",
    "nearest": "distances",
    "sqdist": "distances",
    "sqdist_chunks": "distances",
    "rbf": "kernels",
    "KMeans": "estimator",  # imports scikit-learn (~1.5 s)
    "NotFittedError": "estimator",
    "MiniBatchKMeans": "minibatch",  # imports scikit-learn too
}


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use and keep it in the package's namespace."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqdist' has no attribute {name!r}")
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{module}":  # a dependency of the module is missing: say so
            raise
        raise AttributeError(f"module 'sqdist' has no attribute {name!r} (no module sqdist.{module})") from None
    value = mod if module == name else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BroadcastError",
    "ConvergenceWarning",
    "FeatherSource",
    "KMeans",
    "KMeansResult",
    "MiniBatchKMeans",
    "NotFittedError",
    "ParquetSource",
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
