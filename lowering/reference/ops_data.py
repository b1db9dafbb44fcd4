"""Numpy semantics of the indexing and data-movement ops (see ``ops.py``)."""

from __future__ import annotations
