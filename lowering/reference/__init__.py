"""The numpy reference interpreter of the graph IR (belongs to the compiler, not the runtime)."""

from .interpreter import ReferenceError, evaluate_node, run_graph

__all__ = ["ReferenceError", "evaluate_node", "run_graph"]
