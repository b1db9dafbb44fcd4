"""Int8 kernel benchmarks of the cpu target against its fp32 kernels and ONNX Runtime (not run by pytest).

    python -m tests.targets.bench_cpu_quantized [--threads 1 2] [--repeat 20] [--isa x86-64-v4-vnni ...]

Prints GOP/s (2 x multiply-accumulates per second, best of ``repeat`` runs after a warm-up) for
ResNet/MobileNet-like convolutions and GEMMs: the int8 QConv / QMatMul of this target (for each ISA level
asked for: VNNI, AVX-512BW or AVX2 multiply-adds), the fp32 Conv / MatMul of this target, and ONNX Runtime
running the same layer as QLinearConv / QLinearMatMul (uint8 activations, int8 weights, its own int8
kernels) with ``intra_op_num_threads`` set to the same count. Set OPENBLAS_NUM_THREADS=1 on small machines:
numpy's spinning BLAS threads (the reference interpreter types the graphs) steal cores from multi-threaded
runs.
"""

from __future__ import annotations

import argparse

import numpy as np

from lowering.opinfo import DOMAIN
from lowering.quantized import quantize_multipliers

from .bench_cpu import CONVS, best_time
from .cpu_harness import GraphMaker, build_cpu

GEMMS = [(128, 768, 768), (128, 3072, 768), (512, 512, 512), (1024, 1024, 1024), (1, 1000, 2048)]


def _time_ours(maker: GraphMaker, threads: int, repeat: int, **options) -> float:
    built = build_cpu(maker.graph, **options)
    executor = built.executor(threads)
    inputs = [maker.feeds[v.name] for v in maker.graph.inputs]
    outputs = [np.empty(v.type.shape, v.type.dtype.numpy) for v in maker.graph.outputs]
    return best_time(lambda: executor.run(inputs, outputs), repeat)


def _requant(m: GraphMaker, channels: int, k: int) -> dict:
    mult, shift = quantize_multipliers(0.004 / np.sqrt(k) * m.rng.uniform(0.5, 2.0, channels))
    return {"multiplier": mult, "shift": shift, "out_zero_point": 0, "clamp_min": 0, "clamp_max": 255}


def int8_conv(xs, ws, attrs) -> GraphMaker:
    m = GraphMaker("qconv")
    x = m.qinput(*xs, dtype=np.uint8)
    w = m.const(m.rng.integers(-127, 128, ws).astype(np.int8))
    b = m.const(m.rng.integers(-1000, 1000, ws[0]).astype(np.int32))
    k = int(np.prod(ws[1:]))
    y = m.node(
        "QConv",
        x,
        w,
        b,
        domain=DOMAIN,
        out_dtype=np.uint8,
        x_zero_point=128,
        w_zero_point=0,
        **attrs,
        **_requant(m, ws[0], k),
    )
    return m.output(y)


def int8_matmul(m_rows: int, n: int, k: int) -> GraphMaker:
    m = GraphMaker("qmatmul")
    a = m.qinput(m_rows, k, dtype=np.uint8)
    b = m.const(m.rng.integers(-127, 128, (k, n)).astype(np.int8))
    y = m.node(
        "QMatMul",
        a,
        b,
        None,
        domain=DOMAIN,
        out_dtype=np.uint8,
        a_zero_point=128,
        b_zero_point=0,
        **_requant(m, n, k),
    )
    return m.output(y)


def float_conv(xs, ws, attrs) -> GraphMaker:
    m = GraphMaker("conv")
    y = m.node(
        "FusedConv",
        m.input(*xs),
        m.weight(*ws),
        m.weight(ws[0]),
        None,
        domain=DOMAIN,
        activation="Relu",
        activation_params=(),
        **attrs,
    )
    return m.output(y)


def float_matmul(m_rows: int, n: int, k: int) -> GraphMaker:
    m = GraphMaker("matmul")
    return m.output(m.node("MatMul", m.input(m_rows, k), m.weight(k, n)))


def ort_session(node_proto, inputs, outputs, inits, threads: int):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(
        helper.make_graph([node_proto], "bench", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_qlinear_conv(xs, ws, attrs, threads: int, repeat: int) -> float | None:
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, xs).astype(np.uint8)
    w = rng.integers(-127, 128, ws).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array((rng.uniform(0.5, 2.0, ws[0]) * 0.01).astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(ws[0], np.int8), "wz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
        numpy_helper.from_array(rng.integers(-1000, 1000, ws[0]).astype(np.int32), "b"),
    ]
    y_shape = list(int8_conv(xs, ws, attrs).graph.outputs[0].type.shape)
    node = helper.make_node(
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs
    )
    session = ort_session(
        node,
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(xs))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, y_shape)],
        inits,
        threads,
    )
    return best_time(lambda: session.run(None, {"x": x}), repeat)


def ort_qlinear_matmul(m_rows: int, n: int, k: int, threads: int, repeat: int) -> float | None:
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m_rows, k)).astype(np.uint8)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "as"),
        numpy_helper.from_array(np.array(128, np.uint8), "az"),
        numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "b"),
        numpy_helper.from_array(np.array(0.01, np.float32), "bs"),
        numpy_helper.from_array(np.array(0, np.int8), "bz"),
        numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    session = ort_session(
        node,
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m_rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [m_rows, n])],
        inits,
        threads,
    )
    return best_time(lambda: session.run(None, {"a": a}), repeat)


def _gops(ops: float, t: float | None) -> str:
    return "    n/a" if t is None else f"{ops / t * 1e-9:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--isa", nargs="+", default=["x86-64-v4-vnni", "x86-64-v4", "x86-64-v3"])
    args = parser.parse_args()
    head = " ".join(f"{'int8 ' + isa.replace('x86-64-', ''):>12s}" for isa in args.isa)
    layers = [("conv", name, (xs, ws, attrs)) for name, xs, ws, attrs in CONVS]
    layers += [("gemm", f"MatMul {m}x{k} . {k}x{n}", (m, n, k)) for m, n, k in GEMMS]
    for threads in args.threads:
        # all of ours first, then ONNX Runtime: its spinning pool threads would steal our cores
        rows = []
        for kind, name, spec in layers:
            if kind == "conv":
                xs, ws, attrs = spec
                ops = (
                    2 * float(np.prod(int8_conv(xs, ws, attrs).graph.outputs[0].type.shape)) * np.prod(ws[1:])
                )
                ints = [_time_ours(int8_conv(*spec), threads, args.repeat, isa=isa) for isa in args.isa]
                t_float = _time_ours(float_conv(*spec), threads, args.repeat)
            else:
                ops = 2.0 * spec[0] * spec[1] * spec[2]
                ints = [_time_ours(int8_matmul(*spec), threads, args.repeat, isa=isa) for isa in args.isa]
                t_float = _time_ours(float_matmul(*spec), threads, args.repeat)
            rows.append((kind, name, spec, ops, ints, t_float))
        print(f"== {threads} thread(s), GOP/s ==")
        print(f"{'layer':34s} {head} {'fp32 ours':>10s} {'ORT int8':>9s}")
        for kind, name, spec, ops, ints, t_float in rows:
            if kind == "conv":
                t_ort = ort_qlinear_conv(*spec, threads, args.repeat)
                name = f"Conv {name}"
            else:
                t_ort = ort_qlinear_matmul(*spec, threads, args.repeat)
            cells = " ".join(f"{_gops(ops, t):>12s}" for t in ints)
            print(f"{name:34s} {cells} {_gops(ops, t_float):>10s} {_gops(ops, t_ort):>9s}")


if __name__ == "__main__":
    main()
