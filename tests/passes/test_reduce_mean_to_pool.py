"""RewriteReduceMeanAsPool: spatial means become GlobalAveragePool; other reductions stay."""

import numpy as np
import pytest

from passes.cleanup.reduce_mean_to_pool import RewriteReduceMeanAsPool
from tests.helpers.graphs import GraphBuilder
from tests.helpers.parity import assert_parity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("keepdims, axes_as_input", [(1, True), (0, True), (1, False), (0, False)])
def test_spatial_mean_becomes_global_pool(keepdims, axes_as_input):
    b = GraphBuilder(opset=18 if axes_as_input else 13)
    x = b.input("x", (2, 3, 4, 5))
    if axes_as_input:
        y = b.op("ReduceMean", [x, b.const(np.array([-2, -1], np.int64))], {"keepdims": keepdims})
    else:
        y = b.op("ReduceMean", [x], {"axes": [2, 3], "keepdims": keepdims})
    b.output(b.op("Relu", [y]))
    g = assert_parity(b, [RewriteReduceMeanAsPool()], expect_modified=True)
    ops = [n.op for n in g.nodes]
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert ("Reshape" in ops) == (not keepdims)


def test_other_reductions_stay():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 5))
    b.output(b.op("ReduceMean", [x], {"axes": [1, 2], "keepdims": 1}))
    g = assert_parity(b, [RewriteReduceMeanAsPool()], expect_modified=False)
    assert [n.op for n in g.nodes] == ["ReduceMean"]
