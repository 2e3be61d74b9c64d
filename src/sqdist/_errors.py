"""The error and warning classes of sqdist: the bottom layer, importing nothing.

They live apart from the validation helpers (:mod:`sqdist._validation`, which
needs torch and NumPy and re-exports them) so that the torch-free parts -- the
broadcasting rules and the ``sqdist`` command line up to the point where a
sub-command needs torch -- can raise them without importing torch (~4 s).
Their ``__module__`` is ``sqdist``, the public name they are documented and
pickled under.

Examples
--------
>>> issubclass(SqdistError, ValueError), issubclass(ConvergenceWarning, SqdistWarning)
(True, True)
>>> SqdistError("X: expected 2 dimensions, got 1")
SqdistError('X: expected 2 dimensions, got 1')
>>> SqdistError.__module__
'sqdist'
"""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "SqdistError", "SqdistWarning"]


class SqdistError(ValueError):
    """The one error type of sqdist: bad input, named with what was given and expected."""

    __module__ = "sqdist"


class SqdistWarning(UserWarning):
    """Base class of the warnings sqdist emits."""

    __module__ = "sqdist"


class ConvergenceWarning(SqdistWarning):
    """An iterative method (k-means) ended in a degenerate or unconverged state, e.g. fewer
    distinct points than clusters.  :class:`sqdist.KMeans` emits it as a subclass that is
    also scikit-learn's ``ConvergenceWarning`` (scikit-learn is imported only with the estimator)."""

    __module__ = "sqdist"
