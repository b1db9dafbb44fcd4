"""Float pooling of the cpu target (lw_pool2d, lw_global_pool in kernels_ops.c) against a brute-force numpy
pooling written here, window by window, and the reference interpreter.

The kernel pools rows in two vectorised passes (the window's input rows combined, then the combined row
split into its stride phases); the cases cover strides 1, 2 and 3, dilation, padding at either end,
ceil_mode, count_include_pad, 1-D pooling, widths below, at and across the vector width (4, 8, 16 floats),
and every instruction-set level's vector width.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from .cpu_harness import GraphMaker, build_cpu, check_against_reference


def pool(kernel, **attrs):
    return {"kernel_shape": kernel, **attrs}


CASES = [  # (op, input shape, attrs)
    # ResNet's stem pool, big enough for the threads (bands of rows of every plane)
    ("MaxPool", (1, 8, 112, 112), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ("MaxPool", (1, 2, 13, 37), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ("MaxPool", (1, 2, 10, 40), pool((3, 3), strides=(2, 2))),  # 3x3/2 without pads (lw_pool_row_3s2)
    ("MaxPool", (1, 2, 9, 70), pool((3, 3), strides=(2, 2), pads=(0, 1, 1, 0))),  # 3 blocks, pads on 2 sides
    ("MaxPool", (2, 3, 11, 35), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=1)),
    ("MaxPool", (1, 2, 9, 50), pool((3, 3), strides=(1, 1), pads=(1, 1, 1, 1))),
    ("MaxPool", (1, 2, 10, 49), pool((2, 2), strides=(2, 2))),
    ("MaxPool", (1, 2, 10, 53), pool((3, 4), strides=(3, 3), pads=(0, 2, 1, 1), ceil_mode=1)),
    ("MaxPool", (1, 2, 12, 41), pool((2, 3), dilations=(2, 2), pads=(0, 1, 1, 0))),
    ("MaxPool", (1, 2, 12, 45), pool((3, 3), strides=(2, 2), dilations=(1, 3), pads=(1, 2, 1, 2))),
    ("MaxPool", (1, 3, 7, 5), pool((3, 3), strides=(2, 1), pads=(1, 1, 1, 1))),  # narrower than a vector
    ("MaxPool", (1, 3, 67), pool((4,), strides=(3,), ceil_mode=1)),
    ("MaxPool", (1, 3, 66), pool((3,), strides=(2,), pads=(1, 1))),
    ("MaxPool", (1, 2, 8, 33), pool((5, 5), strides=(1, 1), pads=(2, 2, 2, 2))),
    ("AveragePool", (1, 2, 13, 37), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1))),
    ("AveragePool", (1, 2, 13, 37), pool((3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1)),
    ("AveragePool", (2, 2, 10, 41), pool((3, 3), strides=(2, 2), ceil_mode=1, pads=(1, 0, 0, 1),
                                         count_include_pad=1)),
    ("AveragePool", (1, 2, 10, 51), pool((2, 2), strides=(2, 2), ceil_mode=1)),
    ("AveragePool", (1, 2, 11, 53), pool((3, 2), strides=(3, 3), pads=(1, 1, 0, 1), count_include_pad=1)),
    ("AveragePool", (1, 2, 9, 40), pool((3, 3), strides=(1, 1), pads=(1, 1, 1, 1))),
    ("AveragePool", (1, 2, 12, 45), pool((2, 3), strides=(1, 3), dilations=(2, 2), pads=(1, 0, 0, 2))),
    ("AveragePool", (1, 3, 35), pool((3,), pads=(1, 1))),
    ("AveragePool", (1, 3, 7, 7), pool((7, 7))),
]


def brute_force_pool(op: str, x: np.ndarray, out_shape: tuple[int, ...], attrs: dict) -> np.ndarray:
    """Each output as the max / mean of its window's taps, straight from the ONNX definition."""
    spatial = x.ndim - 2
    kernel = attrs["kernel_shape"]
    strides = attrs.get("strides", (1,) * spatial)
    dilations = attrs.get("dilations", (1,) * spatial)
    pads = attrs.get("pads", (0,) * 2 * spatial)
    include_pad = attrs.get("count_include_pad", 0)
    y = np.zeros(out_shape, np.float64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for out in itertools.product(*(range(d) for d in out_shape[2:])):
            taps, counted = [], 0
            for k in itertools.product(*(range(d) for d in kernel)):
                pos = [o * s - p + i * d for o, s, p, i, d in zip(out, strides, pads, k, dilations)]
                inside = all(0 <= q < size for q, size in zip(pos, x.shape[2:]))
                in_padded = all(-p <= q < size + pe for q, size, p, pe in
                                zip(pos, x.shape[2:], pads[:spatial], pads[spatial:]))
                if inside:
                    taps.append(x[(n, c, *pos)])
                counted += inside or (include_pad and in_padded)
            if op == "MaxPool":
                y[(n, c, *out)] = max(taps)
            else:
                y[(n, c, *out)] = np.sum(np.asarray(taps, np.float64)) / counted
    return y.astype(np.float32)


def _graph() -> tuple[GraphMaker, list]:
    m = GraphMaker("pool_vector", seed=3)
    outs, cases = [], []
    for op, shape, attrs in CASES:
        x = m.input(*shape)
        outs.append(m.node(op, x, **attrs))
        cases.append((op, x, attrs))
    x = m.input(2, 5, 7, 6)
    wide = m.input(1, 3, 9, 37)
    outs += [m.node("GlobalAveragePool", x), m.node("GlobalMaxPool", x), m.node("GlobalAveragePool", wide),
             m.node("GlobalMaxPool", wide), m.node("GlobalAveragePool", m.input(1, 4, 9)),
             m.node("GlobalAveragePool", m.input(1, 400, 7, 7))]  # MobileNetV2-like: threads split the planes
    return m.output(*outs), cases


@pytest.mark.parametrize("isa", [None, "x86-64-v3", "x86-64-v2"])
def test_pooling_against_brute_force(isa):
    m, cases = _graph()
    options = {} if isa is None else {"isa": isa}
    built = check_against_reference(m, **options)
    got = built.run(m.feeds, threads=1)
    names = m.graph.output_names
    for (op, x, attrs), name in zip(cases, names):
        want = brute_force_pool(op, m.feeds[x.name], got[name].shape, attrs)
        if op == "MaxPool":  # a max is exact
            np.testing.assert_array_equal(got[name], want, err_msg=f"{op} {x.type.shape} {attrs}")
        else:
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{op} {x.type.shape} {attrs}")
    for threads in (2, 3):
        other = built.run(m.feeds, threads=threads)
        for name in names:
            np.testing.assert_array_equal(got[name], other[name], err_msg=f"{name} at {threads} threads")


def test_max_pooling_of_infinities_and_all_negative_windows():
    """-inf inputs and windows whose valid taps are all below the pads' -inf fill stand-in."""
    m = GraphMaker("pool_inf")
    x = m.input(1, 2, 9, 35)
    data = -np.abs(m.feeds[x.name]) - 1e30
    data[0, 0, :3, :20] = -np.inf
    data[0, 1, 4, ::3] = np.inf
    m.feeds[x.name] = data.astype(np.float32)
    m.output(m.node("MaxPool", x, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
             m.node("GlobalMaxPool", x))
    built = build_cpu(m.graph)
    got = built.run(m.feeds)
    name0, name1 = m.graph.output_names
    want = brute_force_pool("MaxPool", m.feeds[x.name], got[name0].shape,
                            {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)})
    np.testing.assert_array_equal(got[name0], want)
    np.testing.assert_array_equal(got[name1], m.feeds[x.name].max(axis=(2, 3), keepdims=True))
