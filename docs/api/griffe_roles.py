"""A Griffe extension for the API reference: Sphinx cross-reference roles in the docstrings
(``:func:`sqdist.nearest```, ``:class:`~sqdist.KMeans```) are rendered as inline code.

The docstrings are numpydoc, written for both ``help()`` and the rendered reference; mkdocstrings
does not interpret reST roles, so without this they would show as ``:func:`` text.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|obj|exc|data|const):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
