"""Target registry. Targets are found through the ``lowering.targets`` entry-point group (so a vendor's
target can ship as its own package), with the built-in ones as a fallback when the package is not
installed as a distribution (running from a source tree)."""

from __future__ import annotations

from importlib import import_module, metadata

from lowering.errors import LoweringError

_BUILTIN = {"cpu": "targets.cpu.target:CpuTarget", "custom": "targets.custom.target:CustomTarget",
            "cuda": "targets.cuda.target:CudaTarget"}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(import_module(module), attr)


def available_targets() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in metadata.entry_points(group="lowering.targets"):
        found[ep.name] = ep.value
    return found


def get_target(name: str):
    specs = available_targets()
    if name not in specs:
        raise LoweringError(f"unknown target '{name}' (available: {', '.join(sorted(specs))})")
    return _load(specs[name])()
