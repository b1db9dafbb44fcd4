"""The pass manager: preconditions, verification after each pass, fixed points, reports, disabling."""

import pytest

from lowering.ir import DType, Graph, Node, TensorType, Value
from lowering.passmanager import (
    FixedPoint,
    Pass,
    PassContext,
    PassFailed,
    PassManager,
    PassResult,
    PreconditionError,
)

pytestmark = pytest.mark.unit
T = TensorType(DType.FLOAT32, (4,))


def _graph():
    g = Graph()
    x = Value("x", T)
    g.inputs.append(x)
    y = Value("y", T)
    g.append(Node("Relu", [x], [y], name="relu"))
    g.outputs.append(y)
    g.output_names.append("y")
    return g


class Breaks(Pass):
    name = "breaks"

    def run(self, graph, ctx):
        graph.nodes[0].outputs[0].type = None
        return PassResult(True, ["broke it"])


class Noop(Pass):
    name = "noop"
    provides = frozenset({"shiny"})

    def run(self, graph, ctx):
        return PassResult(False)


class NeedsShiny(Noop):
    name = "needs_shiny"
    requires = frozenset({"shiny"})
    provides = frozenset()


class AlwaysChanges(Pass):
    name = "always"

    def run(self, graph, ctx):
        return PassResult(True, ["changed"])


def test_verify_each_names_the_pass_and_its_history():
    with pytest.raises(PassFailed, match=r"pass 'breaks' broke the IR \(after \['noop'\]\)"):
        PassManager([Noop(), Breaks()]).run(_graph(), PassContext(verify_each=True))


def test_preconditions_are_checked_before_running():
    with pytest.raises(PreconditionError, match="needs_shiny.*shiny"):
        PassManager([NeedsShiny()]).run(_graph(), PassContext())
    records = PassManager([Noop(), NeedsShiny()]).run(_graph(), PassContext())
    assert [r.name for r in records] == ["noop", "needs_shiny"]


def test_fixed_point_that_does_not_converge_is_an_error():
    with pytest.raises(PassFailed, match="did not converge in 3 rounds"):
        FixedPoint([AlwaysChanges()], max_steps=3, name="loop").run(_graph(), PassContext())


def test_disabled_passes_are_skipped_and_logged():
    log = []
    records = PassManager([Breaks(), Noop()]).run(
        _graph(), PassContext(verify_each=True, disabled=frozenset({"breaks"}), log=log.append))
    assert [r.name for r in records] == ["noop"]
    assert "pass breaks: disabled" in log


def test_records_and_print_after():
    log = []
    records = PassManager([Noop()]).run(_graph(), PassContext(print_after=frozenset({"noop"}),
                                                             log=log.append))
    (r,) = records
    assert r.to_json()["nodes_before"] == 1 and r.bytes_before == 32 and not r.modified
    assert any("// IR after noop" in line and "Relu" in line for line in log)
