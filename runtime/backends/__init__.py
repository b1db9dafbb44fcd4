"""Executors by target kind, imported lazily so a missing target's dependencies never break loading."""

from __future__ import annotations

from importlib import import_module

EXECUTORS = {"cpu": "runtime.backends.cpu:CpuExecutor", "custom": "runtime.backends.custom:CustomExecutor",
             "cuda": "runtime.backends.cuda:CudaExecutor"}


def executor_class(kind: str):
    spec = EXECUTORS.get(kind)
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    return getattr(import_module(module), name)
