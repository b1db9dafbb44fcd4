"""Numpy semantics of the math, comparison, logical and reduction ops (see ``ops.py``)."""

from __future__ import annotations
