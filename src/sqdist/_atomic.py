"""Atomic file writes: never a half-written output file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], *, fsync: bool = False) -> None:
    """Call ``write(fileobj)`` on a temporary binary file next to ``path``, then
    rename it to ``path`` (``os.replace``: readers see the old file or the new
    one, never a partial one).  ``fsync``: flush it to disk before the rename
    (checkpoints, which must survive a crash of the machine)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path)[-32:], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
