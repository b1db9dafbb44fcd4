"""Numpy semantics of normalisation ops and the fused transformer ops (see ``ops.py``)."""

from __future__ import annotations
