"""Atomic file writes (never a half-written output file) and the sweep of stale temporaries.

Every temporary that sqdist creates next to an output is named after it:

* ``.NAME.tmp-PID-TOKEN`` -- a file being written by :func:`atomic_write`, or a
  report folder being built (``sqdist report``); ``.NAME.old-PID-TOKEN`` -- a
  previous report moved aside for a moment;
* ``.NAME.partial`` -- a labels file being filled by a streamed fit (and
  ``..NAME.tmp-PID-TOKEN.partial`` when that labels file is itself a temporary).

A process killed with SIGKILL (or a machine that lost power) cannot remove
them, so every later write of ``NAME`` removes the stale ones
(:func:`sweep_stale`): those of our naming, owned by this user, not modified
for :data:`STALE_AFTER_S` seconds, and -- when the name records a process id
-- whose process no longer exists on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STALE_AFTER_S", "atomic_write", "is_stale", "sweep_stale", "temp_prefix"]

#: A temporary of ours untouched for this long (and whose process is gone) is stale.
STALE_AFTER_S = 3600.0

_TAGGED = re.compile(r"\.(?P<base>.+)\.(?:tmp|old)-(?P<pid>\d{1,10})-[A-Za-z0-9_]+", re.DOTALL)
_PARTIAL = re.compile(r"\.(?P<base>.+)\.partial", re.DOTALL)


def _short(base: str) -> str:
    """``base``, or for a long name its start and a digest of the whole: temporaries stay within NAME_MAX."""
    if len(base.encode("utf-8", "surrogateescape")) <= 120:
        return base
    digest = hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return base[:60] + "~" + digest


def temp_prefix(path: str | os.PathLike, tag: str = "tmp") -> str:
    """``.NAME.TAG-PID-``: the prefix of a temporary next to ``path`` (the caller adds a token)."""
    return f".{_short(os.path.basename(os.fspath(path)))}.{tag}-{os.getpid()}-"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any], *, fsync: bool = False) -> None:
    """Call ``write(fileobj)`` on a temporary binary file next to ``path``, then
    rename it to ``path`` (``os.replace``: readers see the old file or the new
    one, never a partial one).  ``fsync``: flush it to disk before the rename
    (checkpoints, which must survive a crash of the machine).  Stale
    temporaries of ``path`` left by killed runs are removed first."""
    path = os.fspath(path)
    sweep_stale(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=folder)
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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # exists but is another user's, or cannot tell
        return True
    return True


def _parse(entry: str) -> tuple[str, int | None] | None:
    """``(NAME, PID or None)`` of a temporary of ours named ``entry``, else None.

    ``.NAME.tmp-PID-TOKEN`` / ``.NAME.old-PID-TOKEN`` -> (NAME, PID); ``.NAME.partial``
    -> (NAME, None), or the NAME and PID of the temporary it belongs to when NAME
    is itself one (the labels of a streamed fit written to a temporary name).
    """
    m = _PARTIAL.fullmatch(entry)
    if m is not None:
        inner = _TAGGED.fullmatch(m.group("base"))
        if inner is not None:
            return inner.group("base"), int(inner.group("pid"))
        return m.group("base"), None
    m = _TAGGED.fullmatch(entry)
    return (m.group("base"), int(m.group("pid"))) if m is not None else None


def is_stale(entry: str, st: os.stat_result, *, now: float | None = None, max_age: float = STALE_AFTER_S) -> bool:
    """Whether the folder entry named ``entry`` (with its ``lstat``) is a stale temporary of ours."""
    parsed = _parse(entry)
    if parsed is None:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    if (time.time() if now is None else now) - st.st_mtime < max_age:
        return False
    return parsed[1] is None or not _pid_alive(parsed[1])


def sweep_stale(path: str | os.PathLike, *, max_age: float = STALE_AFTER_S) -> list[str]:
    """Remove the stale temporaries of the output ``path`` (see the module docstring); returns what was removed.

    Only names derived from ``path``'s own name are considered; symbolic links
    are removed, never followed; errors (a file vanishing meanwhile, no
    permission) leave the entry in place.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    removed: list[str] = []
    try:
        names = {base, _short(base)}
        entries = [e for e in os.scandir(folder) if e.name.startswith(tuple(f"{d}{n}." for n in names for d in (".", "..")))]
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        parsed = _parse(e.name)
        if parsed is None or parsed[0] not in names:
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not is_stale(e.name, st, now=now, max_age=max_age):
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            continue
        removed.append(e.path)
    return removed
