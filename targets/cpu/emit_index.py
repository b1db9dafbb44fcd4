"""Indexing and data-movement lowering for the cpu target (kernels in ``kernels_index.c``)."""

from __future__ import annotations
