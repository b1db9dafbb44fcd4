"""Math, comparison, logical and reduction lowering for the cpu target (kernels in ``kernels_math.c``)."""

from __future__ import annotations
