"""Normalisation and fused transformer kernels for the cpu target (kernels in ``kernels_transformer.c``)."""

from __future__ import annotations
