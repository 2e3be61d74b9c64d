"""Data for the exercise and the examples: Gaussian blobs and point files.

The exercise's data set (Task 3) is five 2-D Gaussian blobs of 50 points
each.  :func:`make_blobs` reproduces it with fixed, documented means:

* ``dim >= 2`` -- the blob means lie on a circle of radius ``radius`` in the
  first two coordinates, at angles ``2 pi b / n_blobs`` (b = 0, 1, ...), all
  other coordinates 0.  With the defaults (radius 5, std 0.5) neighbouring
  means are 5.9 apart, about 12 standard deviations: well separated.
* ``dim == 1`` -- the means are ``radius * b``.

Rows are ordered by blob: blob ``b`` occupies rows
``b * n_per_blob ... (b + 1) * n_per_blob - 1``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from ._files import read_points
from ._validation import SqdistError, check_positive_int, check_positive_number, make_generator

__all__ = ["make_blobs", "exercise_init_indices", "EXERCISE_INIT_INDICES", "load_points"]


def blob_means(n_blobs: int = 5, dim: int = 2, radius: float = 5.0) -> np.ndarray:
    """The fixed blob means of :func:`make_blobs`, of shape (n_blobs, dim).

    Examples
    --------
    >>> from sqdist.datasets import blob_means
    >>> blob_means(4, 2, radius=1.0).round(6).tolist()
    [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-0.0, -1.0]]
    """
    means = np.zeros((n_blobs, dim))
    b = np.arange(n_blobs)
    if dim == 1:
        means[:, 0] = radius * b
    else:
        ang = 2 * math.pi * b / n_blobs
        means[:, 0] = radius * np.cos(ang)
        means[:, 1] = radius * np.sin(ang)
    return means


def make_blobs(
    n_blobs: int = 5,
    n_per_blob: int = 50,
    dim: int = 2,
    std: float = 0.5,
    seed: Any = 0,
    *,
    radius: float = 5.0,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian blobs with fixed means -- the exercise's data set by default.

    Parameters
    ----------
    n_blobs : int, default 5
    n_per_blob : int, default 50
    dim : int, default 2
    std : float, default 0.5
        Standard deviation of every coordinate within a blob.
    seed : int or torch.Generator, default 0
        The draws use a private ``torch.Generator`` (float64 normal samples),
        so the data are the same on every platform and thread count.
    radius : float, default 5.0
        Radius of the circle the means lie on (see the module docstring).
    dtype : NumPy dtype, default float64

    Returns
    -------
    points : ndarray of shape (n_blobs * n_per_blob, dim)
    blob_ids : int64 ndarray of shape (n_blobs * n_per_blob,)
        The blob each point was drawn from (rows ordered by blob).

    Examples
    --------
    >>> from sqdist.datasets import make_blobs
    >>> X, y = make_blobs()
    >>> X.shape, y.shape, y[[0, 49, 50, 249]].tolist()
    ((250, 2), (250,), [0, 0, 1, 4])
    """
    n_blobs = check_positive_int(n_blobs, "n_blobs")
    n_per_blob = check_positive_int(n_per_blob, "n_per_blob")
    dim = check_positive_int(dim, "dim")
    std = check_positive_number(std, "std", allow_zero=True)
    radius = check_positive_number(radius, "radius", allow_zero=True)
    gen = make_generator(seed)
    noise = torch.randn((n_blobs * n_per_blob, dim), generator=gen, dtype=torch.float64).numpy()
    ids = np.repeat(np.arange(n_blobs, dtype=np.int64), n_per_blob)
    X = blob_means(n_blobs, dim, radius)[ids] + std * noise
    return X.astype(dtype, copy=False), ids


def exercise_init_indices(n_clusters: int, n_points: int = 250) -> list[int]:
    """Fixed, evenly spaced row indices ``j * n_points // n_clusters`` (j = 0 .. K-1).

    On the blob data (rows ordered by blob) this picks the first point of
    every blob when ``n_clusters == n_blobs`` and spreads the centres over the
    blobs otherwise -- deterministic, so anyone can reproduce the run.

    Examples
    --------
    >>> from sqdist.datasets import exercise_init_indices
    >>> exercise_init_indices(5)
    [0, 50, 100, 150, 200]
    >>> exercise_init_indices(8)
    [0, 31, 62, 93, 125, 156, 187, 218]
    """
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    n_points = check_positive_int(n_points, "n_points")
    if n_clusters > n_points:
        raise SqdistError(f"n_clusters: expected at most n_points={n_points}, got {n_clusters}")
    return [j * n_points // n_clusters for j in range(n_clusters)]


#: The exercise's fixed initial indices for P = 2, 5, 8 on the default blobs (250 points).
EXERCISE_INIT_INDICES: dict[int, list[int]] = {p: exercise_init_indices(p) for p in (2, 5, 8)}


def load_points(path: str | os.PathLike) -> np.ndarray:
    """Read points of shape (N, D) from ``.npy`` (no pickle) or ``.csv`` (comma separated,
    with or without one header line).  A 1-D file gives shape (N, 1).

    The header line is recognised only when none of its fields is a number; a
    UTF-8 byte-order mark is ignored.  A ``.npy`` file must hold exactly the
    data its header declares (see :mod:`sqdist._files`, the one reader of files).

    Raises
    ------
    SqdistError
        Unknown extension, malformed or non-numeric content, empty file.
    OSError
        Missing or unreadable file.
    """
    return read_points(path, "--data")
