"""Kernel benchmarks of the cpu target against numpy (BLAS) and ONNX Runtime. Not collected by pytest.

    python -m tests.targets.bench_cpu [--threads 1 2] [--repeat 20]

Prints GFLOP/s (best of ``repeat`` runs, after a warm-up) for GEMMs and ResNet/MobileNet-like convolutions,
and times a few memory-bound ops. ONNX Runtime runs with ``intra_op_num_threads`` set to the same count;
numpy's BLAS uses its own thread count (set OPENBLAS_NUM_THREADS before starting to pin it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lowering.opinfo import DOMAIN

from .cpu_harness import GraphMaker, build_cpu

GEMMS = [(512, 512, 512), (1024, 1024, 1024), (64, 3136, 576), (256, 784, 2304), (1, 1000, 2048)]
CONVS = [  # name, input shape, weight shape, attrs
    ("resnet conv1 7x7/2", (1, 3, 224, 224), (64, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),
    ("resnet 3x3 64@56", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": (1, 1, 1, 1)}),
    ("resnet 1x1 256->64@56", (1, 256, 56, 56), (64, 256, 1, 1), {}),
    ("resnet 3x3 128@28", (1, 128, 28, 28), (128, 128, 3, 3), {"pads": (1, 1, 1, 1)}),
    ("resnet 3x3 256@14", (1, 256, 14, 14), (256, 256, 3, 3), {"pads": (1, 1, 1, 1)}),
    ("resnet 3x3 512@7", (1, 512, 7, 7), (512, 512, 3, 3), {"pads": (1, 1, 1, 1)}),
    ("depthwise 3x3 144@56", (1, 144, 56, 56), (144, 1, 3, 3), {"pads": (1, 1, 1, 1), "group": 144}),
]


def _add_bias_relu(m: GraphMaker) -> None:
    m.output(m.node("Relu", m.node("Add", m.input(1, 64, 112, 112), m.weight(64, 1, 1))))


def _maxpool(m: GraphMaker) -> None:
    m.output(
        m.node("MaxPool", m.input(1, 64, 112, 112), kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1))
    )


def _softmax(m: GraphMaker) -> None:
    m.output(m.node("Softmax", m.input(12, 128, 128), axis=-1))


def _transpose(m: GraphMaker) -> None:
    m.output(m.node("Transpose", m.input(1, 128, 12, 64), perm=(0, 2, 1, 3)))


OTHER_OPS = [
    ("Add(bias)+Relu 64x112x112", _add_bias_relu),
    ("MaxPool 3x3/2 64x112x112", _maxpool),
    ("Softmax 12x128x128", _softmax),
    ("Transpose 128x12x64 (0,2,1,3)", _transpose),
]


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def ours(maker: GraphMaker, threads: int, repeat: int) -> float:
    built = build_cpu(maker.graph)
    executor = built.executor(threads)
    inputs = [maker.feeds[v.name] for v in maker.graph.inputs]
    outputs = [np.empty(v.type.shape, np.float32) for v in maker.graph.outputs]
    return best_time(lambda: executor.run(inputs, outputs), repeat)


def onnxruntime_time(maker: GraphMaker, threads: int, repeat: int) -> float | None:
    try:
        import onnx
        import onnxruntime as ort
        from onnx import helper, numpy_helper
    except ImportError:
        return None
    nodes, inits = [], []
    for node in maker.graph.nodes:
        attrs = {k: a.value for k, a in node.attrs.items()}
        inputs = [v.name if v is not None else "" for v in node.inputs]
        nodes.append(helper.make_node(node.op, inputs, [v.name for v in node.outputs], **attrs))
    for v in maker.graph.constants():
        inits.append(numpy_helper.from_array(v.const, v.name))
    info = [
        helper.make_tensor_value_info(v.name, onnx.TensorProto.FLOAT, v.type.shape)
        for v in maker.graph.inputs
    ]
    outs = [
        helper.make_tensor_value_info(v.name, onnx.TensorProto.FLOAT, v.type.shape)
        for v in maker.graph.outputs
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "bench", info, outs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return best_time(lambda: session.run(None, maker.feeds), repeat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    for threads in args.threads:
        print(f"== {threads} thread(s) ==")
        for m, n, k in GEMMS:
            maker = GraphMaker("gemm")
            a, b = maker.input(m, k), maker.weight(k, n)
            maker.output(maker.node("MatMul", a, b))
            flops = 2 * m * n * k
            t_ours = ours(maker, threads, args.repeat)
            t_np = best_time(lambda lhs=maker.feeds[a.name], rhs=b.const: lhs @ rhs, args.repeat)
            t_ort = onnxruntime_time(maker, threads, args.repeat)
            print(
                f"MatMul {m}x{k} . {k}x{n}: ours {flops / t_ours * 1e-9:7.1f} GFLOP/s, "
                f"numpy (OpenBLAS, all cores) {flops / t_np * 1e-9:7.1f}, "
                f"onnxruntime {flops / t_ort * 1e-9:7.1f}"
            )
        for name, xs, ws, attrs in CONVS:
            maker = GraphMaker("conv")
            x = maker.input(*xs)
            y = maker.node(
                "FusedConv",
                x,
                maker.weight(*ws),
                maker.weight(ws[0]),
                None,
                domain=DOMAIN,
                activation="Relu",
                activation_params=(),
                **attrs,
            )
            maker.output(y)
            flops = 2 * np.prod(y.type.shape) * np.prod(ws[1:])
            t_ours = ours(maker, threads, args.repeat)
            ref = GraphMaker("conv_ort")
            rx = ref.input(*xs)
            ref.output(ref.node("Relu", ref.node("Conv", rx, ref.weight(*ws), ref.weight(ws[0]), **attrs)))
            t_ort = onnxruntime_time(ref, threads, args.repeat)
            print(
                f"Conv {name:24s}: ours {flops / t_ours * 1e-9:7.1f} GFLOP/s ({t_ours * 1e3:6.2f} ms), "
                f"onnxruntime {flops / t_ort * 1e-9:7.1f} ({t_ort * 1e3:6.2f} ms)"
            )
        for name, make in OTHER_OPS:
            maker = GraphMaker(name)
            make(maker)
            t_ours, t_ort = ours(maker, threads, args.repeat), onnxruntime_time(maker, threads, args.repeat)
            print(f"{name:29s}: ours {t_ours * 1e3:6.3f} ms, onnxruntime {t_ort * 1e3:6.3f} ms")


if __name__ == "__main__":
    main()
