"""Kernel benchmarks of the cpu target against numpy (BLAS) and ONNX Runtime. Not collected by pytest.

    python -m tests.targets.bench_cpu [--threads 1 2] [--repeat 20]
    python -m tests.targets.bench_cpu --peak [--threads 1 2]
    python -m tests.targets.bench_cpu --transformer [--threads 1 2]
    python -m tests.targets.bench_cpu --layers [WORD ...] [--cold] [--threads 1 2]
    python -m tests.targets.bench_cpu --ab A.lwr B.lwr [...] [--seconds 10] [--threads 1 2]

Default: GFLOP/s (best of ``repeat`` runs, after a warm-up) for GEMMs and ResNet/MobileNet-like convolutions,
and times of a few memory-bound ops. ONNX Runtime runs with ``intra_op_num_threads`` set to the same count;
numpy's BLAS uses its own thread count (set OPENBLAS_NUM_THREADS before starting to pin it).

``--peak``: the machine's fp32 FMA throughput per thread count (a register-only loop of independent FMA
chains on the widest vectors of the build's ISA level, compiled with the target's compiler and flags), the
number every GEMM efficiency is quoted against, and numpy's sgemm at 1024^3 with OPENBLAS_NUM_THREADS pinned
(in a subprocess: the BLAS reads it once, at import).

``--layers``: ResNet-18's and MobileNetV2's conv layers one at a time against ONNX Runtime (single-conv
timings: ONNX Runtime's include its NCHW <-> NCHWc reorders, which it does not pay between layers of a
model), in alternating rounds; ``--cold`` flushes the calling thread's caches before every run.

``--ab``: artifacts of the same model against each other (a change's effect on a whole model): loaded in one
process on the cpu target, run in alternating blocks of 10 timed runs after 3 untimed ones for ``--seconds``
per thread count, each side's min, quartile and median. Whole-model differences under about 1% need 10 s or
more on this VM; per-kernel differences: ``lower run X.lwr --profile N --json-profile F`` a few times each,
the minimum per kernel.

``--transformer``: the linear layers of the zoo's transformers (BERT/GPT-2 hidden 256 at sequence 128,
ViT-S/16 at 197 tokens: M = tokens, weights constant) and the ResNet GEMMs, with bias in the epilogue, as
GFLOP/s and percent of the measured peak, against ONNX Runtime's MatMul+Add; the "+gelu" row adds an erf
GELU (our epilogue; ONNX Runtime's fusion of the decomposed form). Weights are warm in cache here: in a
model they stream from memory (see kernels_gemm.c on the prefetch).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lowering.opinfo import DOMAIN
from targets.cpu.build import build_flags, choose_isa, compile_shared, find_compiler

from .cpu_harness import GraphMaker, build_cpu

#: (label, M, K, N): the transformer zoo's linear layers (M = tokens) and ResNet's GEMM-bound convolutions
TRANSFORMER_GEMMS = [
    ("bert/gpt2 qkv-sized 256->256", 128, 256, 256),
    ("gpt2 fused qkv 256->768", 128, 256, 768),
    ("bert/gpt2 ffn up 256->1024", 128, 256, 1024),
    ("bert/gpt2 ffn down 1024->256", 128, 1024, 256),
    ("vit proj 384->384", 197, 384, 384),
    ("vit qkv 384->1152", 197, 384, 1152),
    ("vit mlp up 384->1536", 197, 384, 1536),
    ("vit mlp up 384->1536 +gelu", 197, 384, 1536),
    ("vit mlp down 1536->384", 197, 1536, 384),
    ("resnet 3x3 64@56 as gemm", 64, 576, 3136),
    ("resnet 3x3 256@14 as gemm", 256, 2304, 196),
    ("resnet 3x3 512@7 as gemm", 512, 4608, 49),
]
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


PEAK_SOURCE = r"""
#include <omp.h>
typedef float lw_vf __attribute__((vector_size(VEC * 4)));
/* Each thread runs CHAINS independent FMA chains for iters steps (enough chains to cover FMA latency
 * times the FMA ports); the asm barrier keeps gcc from hoisting the loop-invariant operands. */
__attribute__((visibility("default"))) double lw_peak(int nt, long iters) {
    double total = 0.0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        lw_vf acc[CHAINS], x = (lw_vf){0} + 1.0001f, y = (lw_vf){0} + 0.9999f;
        for (int i = 0; i < CHAINS; i++) acc[i] = (lw_vf){0} + (float)i * 1e-3f;
        for (long it = 0; it < iters; it++) {
            __asm__ volatile("" : "+x"(x), "+x"(y));
#pragma GCC unroll 32
            for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * x + y;
        }
        float s = 0.0f;
        for (int i = 0; i < CHAINS; i++) s += acc[i][0];
        total += s;
    }
    return total;
}
"""
PEAK_CHAINS = 16
NUMPY_SGEMM = """
import time
import numpy as np
a, b = (np.random.default_rng(0).random((1024, 1024), np.float32) for _ in range(2))
a @ b
best = float("inf")
for _ in range(REPEAT):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(2 * 1024 ** 3 / best * 1e-9)
"""


def fma_peak(threads: int, repeat: int, seconds: float = 0.2) -> float:
    """Best-of-``repeat`` GFLOP/s of the FMA loop on ``threads`` threads (register-only: the compute peak)."""
    isa = choose_isa()
    source = PEAK_SOURCE.replace("VEC", str(isa.vec)).replace("CHAINS", str(PEAK_CHAINS))
    flags = [f for f in build_flags(isa) if f != "-fvisibility=hidden"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "peak.so")
        path.write_bytes(compile_shared(source, find_compiler({}), flags))
        lib = ctypes.CDLL(str(path))
    lib.lw_peak.restype = ctypes.c_double
    lib.lw_peak.argtypes = [ctypes.c_int, ctypes.c_long]
    flops_per_iter = threads * PEAK_CHAINS * isa.vec * 2
    iters = int(seconds * 200e9 / flops_per_iter * threads)  # about ``seconds`` at 200 GFLOP/s per thread
    best = best_time(lambda: lib.lw_peak(threads, iters), repeat)
    return flops_per_iter * iters / best * 1e-9


def numpy_sgemm(threads: int, repeat: int) -> float:
    """numpy's 1024^3 sgemm GFLOP/s with its BLAS pinned to ``threads`` threads (fresh interpreter)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    code = NUMPY_SGEMM.replace("REPEAT", str(repeat))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def peak_main(args) -> dict[int, float]:
    isa = choose_isa()
    peaks = {}
    for threads in args.threads:
        peaks[threads] = fma_peak(threads, max(5, args.repeat // 4))
        print(
            f"{threads} thread(s), {isa.name}: FMA peak {peaks[threads]:7.1f} GFLOP/s "
            f"({peaks[threads] / threads:6.1f} per thread), "
            f"numpy sgemm 1024^3 {numpy_sgemm(threads, args.repeat):7.1f} GFLOP/s"
        )
    return peaks


def _linear(m: int, k: int, n: int, fused: bool, gelu: bool = False) -> GraphMaker:
    """y = x . W + b (then erf-GELU with ``gelu``): our FusedGemm (bias and activation in the epilogue) or
    the standard MatMul + Add (+ the exporters' decomposed GELU, fused by ONNX Runtime) for ONNX Runtime."""
    maker = GraphMaker("linear")
    x, w, b = maker.input(m, k), maker.weight(k, n, scale=0.05), maker.weight(n)
    if fused:
        act, params = ("Gelu", (0.0,)) if gelu else ("", ())
        y = maker.node("FusedGemm", x, w, b, domain=DOMAIN, transA=0, transB=0, alpha=1.0, beta=1.0,
                       activation=act, activation_params=params)
    else:
        y = maker.node("Add", maker.node("MatMul", x, w), b)
        if gelu:
            erf = maker.node("Erf", maker.node("Div", y, maker.const(np.float32(np.sqrt(2.0)))))
            half = maker.node("Mul", y, maker.const(np.float32(0.5)))
            y = maker.node("Mul", half, maker.node("Add", erf, maker.const(np.float32(1.0))))
    return maker.output(y)


def transformer_main(args) -> None:
    peaks = {t: fma_peak(t, 5) for t in args.threads}
    for threads in args.threads:
        print(f"== {threads} thread(s), FMA peak {peaks[threads]:.1f} GFLOP/s ==")
        for label, m, k, n in TRANSFORMER_GEMMS:
            gelu = label.endswith("+gelu")
            flops = 2 * m * n * k
            t_ours = ours(_linear(m, k, n, True, gelu), threads, args.repeat)
            t_ort = onnxruntime_time(_linear(m, k, n, False, gelu), threads, args.repeat)
            g_ours = flops / t_ours * 1e-9
            print(
                f"{label:32s} M={m:4d} K={k:5d} N={n:5d}: ours {g_ours:7.1f} GFLOP/s "
                f"({100 * g_ours / peaks[threads]:5.1f}% of peak, {t_ours * 1e6:8.1f} us), "
                f"onnxruntime {flops / t_ort * 1e-9:7.1f} ({t_ort * 1e6:8.1f} us)"
            )


P1 = (1, 1, 1, 1)
#: ResNet-18's and MobileNetV2's conv layers (1 image): (label, input shape, weight shape, attrs), with a Relu
ZOO_LAYERS = [
    ("resnet stem 7x7/2", (1, 3, 224, 224), (64, 3, 7, 7), {"strides": (2, 2), "pads": (3, 3, 3, 3)}),
    ("resnet 3x3 64@56", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": P1}),
    ("resnet 3x3/2 64->128", (1, 64, 56, 56), (128, 64, 3, 3), {"strides": (2, 2), "pads": P1}),
    ("resnet 1x1/2 64->128", (1, 64, 56, 56), (128, 64, 1, 1), {"strides": (2, 2)}),
    ("resnet 3x3 128@28", (1, 128, 28, 28), (128, 128, 3, 3), {"pads": P1}),
    ("resnet 3x3/2 128->256", (1, 128, 28, 28), (256, 128, 3, 3), {"strides": (2, 2), "pads": P1}),
    ("resnet 3x3 256@14", (1, 256, 14, 14), (256, 256, 3, 3), {"pads": P1}),
    ("resnet 3x3/2 256->512", (1, 256, 14, 14), (512, 256, 3, 3), {"strides": (2, 2), "pads": P1}),
    ("resnet 3x3 512@7", (1, 512, 7, 7), (512, 512, 3, 3), {"pads": P1}),
    ("mnv2 stem 3x3/2", (1, 3, 224, 224), (32, 3, 3, 3), {"strides": (2, 2), "pads": P1}),
    ("mnv2 1x1 32->16@112", (1, 32, 112, 112), (16, 32, 1, 1), {}),
    ("mnv2 1x1 16->96@112", (1, 16, 112, 112), (96, 16, 1, 1), {}),
    ("mnv2 1x1 144->24@56", (1, 144, 56, 56), (24, 144, 1, 1), {}),
    ("mnv2 1x1 192->32@28", (1, 192, 28, 28), (32, 192, 1, 1), {}),
    ("mnv2 1x1 384->64@14", (1, 384, 14, 14), (64, 384, 1, 1), {}),
    ("mnv2 1x1 96->576@14", (1, 96, 14, 14), (576, 96, 1, 1), {}),
    ("mnv2 1x1 576->96@14", (1, 576, 14, 14), (96, 576, 1, 1), {}),
    ("mnv2 1x1 960->160@7", (1, 960, 7, 7), (160, 960, 1, 1), {}),
    ("mnv2 dw 96@112/2", (1, 96, 112, 112), (96, 1, 3, 3), {"strides": (2, 2), "pads": P1, "group": 96}),
    ("mnv2 dw 144@56", (1, 144, 56, 56), (144, 1, 3, 3), {"pads": P1, "group": 144}),
    ("mnv2 dw 144@56/2", (1, 144, 56, 56), (144, 1, 3, 3), {"strides": (2, 2), "pads": P1, "group": 144}),
    ("mnv2 dw 576@14/2", (1, 576, 14, 14), (576, 1, 3, 3), {"strides": (2, 2), "pads": P1, "group": 576}),
]


def layers_main(args) -> None:
    """Each zoo layer, ours and ONNX Runtime's (Conv + Relu, same weights and input, both compared), timed in
    alternating rounds (best of each side's runs: on a shared machine the least disturbed run is the most
    comparable); --cold flushes the calling thread's caches before every timed run (a layer in a model reads
    its weights, and often its input, from memory or another core)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    junk = np.ones(16 << 20, np.float32)  # 64 MiB

    def timed(fn, seconds: float = 0.15) -> float:
        fn()
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            if args.cold:
                junk[::16] += 1.0
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best

    wanted = [w.lower() for w in args.layers]
    for threads in args.threads:
        print(f"== {threads} thread(s){', caches flushed' if args.cold else ''} ==")
        for label, xs, ws, attrs in ZOO_LAYERS:
            if wanted and not any(w in label for w in wanted):
                continue
            maker = GraphMaker("layer")
            x = maker.input(*xs)
            w, b = maker.weight(*ws, scale=float(np.prod(ws[1:])) ** -0.5), maker.weight(ws[0])
            y = maker.node("FusedConv", x, w, b, None, domain=DOMAIN, activation="Relu", activation_params=(),
                           **attrs)
            maker.output(y)
            executor = build_cpu(maker.graph).executor(threads)
            out = [np.empty(y.type.shape, np.float32)]
            feed = maker.feeds[x.name]
            nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
                     helper.make_node("Relu", ["c"], ["y"])]
            graph = helper.make_graph(
                nodes,
                "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                [numpy_helper.from_array(w.const, "w"), numpy_helper.from_array(b.const, "b")],
            )
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(
                helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
                .SerializeToString(), options, providers=["CPUExecutionProvider"])
            best_ours = best_ort = float("inf")
            run_ours = lambda e=executor, f=feed, o=out: e.run([f], o)  # noqa: E731
            run_ort = lambda s=session, f=feed: s.run(None, {"x": f})  # noqa: E731
            for _ in range(args.rounds):
                best_ours = min(best_ours, timed(run_ours))
                best_ort = min(best_ort, timed(run_ort))
            want = session.run(None, {"x": feed})[0]
            np.testing.assert_allclose(out[0], want, rtol=1e-3, atol=1e-4, err_msg=label)
            flops = 2 * np.prod(y.type.shape) * np.prod(ws[1:])
            print(f"{label:24s} ours {best_ours * 1e3:7.3f} ms ({flops / best_ours * 1e-9:6.1f} GFLOP/s), "
                  f"onnxruntime {best_ort * 1e3:7.3f} ms ({flops / best_ort * 1e-9:6.1f}): "
                  f"{best_ort / best_ours:4.2f}x", flush=True)


def ab_main(args) -> None:
    """Whole-model A/B of compiled artifacts (see the module docstring)."""
    import runtime

    for threads in args.threads:
        sessions = [runtime.load(path, threads=threads, target="cpu") for path in args.ab]
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal(i.shape).astype(np.float32) if np.dtype(i.dtype).kind == "f"
                else np.ones(i.shape, i.dtype) for i in sessions[0].inputs}
        times: list[list[float]] = [[] for _ in sessions]
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            for session, t in zip(sessions, times):
                for _ in range(3):
                    session.run(None, feed)
                for _ in range(10):
                    start = time.perf_counter()
                    session.run(None, feed)
                    t.append(time.perf_counter() - start)
        print(f"== {threads} thread(s) ==")
        for path, t in zip(args.ab, times):
            ms = np.array(t) * 1e3
            print(f"{path}: min {ms.min():.3f} p25 {np.percentile(ms, 25):.3f} median {np.median(ms):.3f} ms "
                  f"({len(ms)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--peak", action="store_true", help="measure the fp32 FMA peak and numpy's sgemm")
    parser.add_argument("--transformer", action="store_true", help="transformer linear-layer GEMMs")
    parser.add_argument("--layers", nargs="*", help="the zoo's conv layers (optionally those whose label "
                        "contains one of these words), against ONNX Runtime")
    parser.add_argument("--cold", action="store_true", help="with --layers: flush the caches before each run")
    parser.add_argument("--rounds", type=int, default=5, help="with --layers: alternating rounds per side")
    parser.add_argument("--ab", nargs="+", metavar="LWR",
                        help="artifacts of one model, timed against each other")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --ab: seconds per thread count")
    args = parser.parse_args()
    if args.ab:
        ab_main(args)
        return
    if args.layers is not None:
        layers_main(args)
        return
    if args.peak:
        peak_main(args)
        return
    if args.transformer:
        transformer_main(args)
        return
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
