"""Errors a user can cause. The CLI prints them as one line and exits 2; no traceback."""

from __future__ import annotations


class LoweringError(Exception):
    """Bad input or an unsupported model: the message names the model, node, op, tensor or file."""

    exit_code = 2


class UnsupportedOpsError(LoweringError):
    """Ops no target (nor the host fallback) can run. Lists all of them at once, with node names."""

    def __init__(self, model: str, nodes: list[tuple[str, str]]):
        self.nodes = nodes
        by_op: dict[str, list[str]] = {}
        for name, op in nodes:
            by_op.setdefault(op, []).append(name or "<unnamed>")
        parts = [f"{op} (nodes: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                 for op, names in sorted(by_op.items())]
        super().__init__(f"{model}: unsupported ops: {'; '.join(parts)}")
