"""Seeded mutations of ONNX models and artifacts, and the oracle each case is judged by.

Models go through ``lowering.cli.main`` (exit 0, or 2 with exactly one ``error:`` line; never a traceback
or another exit code). Artifacts go through ``runtime.load`` (a session, or a ``RuntimeLoadError``; never
another exception); raw byte damage must always be refused, semantic manifest edits (hashes recomputed)
may load or be refused.

Successful compiles would spend most of the time in the C compiler, which is not what is fuzzed here, so by
default ``CC`` (and ``NVCC``) is a stub that writes an empty library (``fake_cc``); ``--real-cc`` uses the
real ones.

Every operator takes its choices from ``rng``: a ``random.Random`` (the seeded campaign) or anything with
the same ``randrange``/``randint``/``choice``/``sample``/``random`` methods (``strategies.Drawn``: hypothesis
draws, so a failing case shrinks to a minimal mutation). A given seed makes the same cases as before the
operators were split out; the operators only the hypothesis plans use (``ARTIFACT_EXTRA_OPS``) are never
reached from a seed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import stat
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FAKE_CC = """#!/bin/sh
# a C compiler stand-in for fuzzing: writes an empty "library" wherever -o points
if [ "$1" = "--version" ]; then echo "fake-cc 1.0"; exit 0; fi
out=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-o" ]; then out="$2"; shift; fi
  shift
done
[ -n "$out" ] && : > "$out"
exit 0
"""


def fake_cc(folder: Path) -> Path:
    path = Path(folder) / "fake-cc"
    path.write_text(FAKE_CC)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def base_model(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax, static shapes."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((5, 64)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b"),
             numpy_helper.from_array(np.array([1, 64], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="fc", transB=1),
             helper.make_node("Softmax", ["g"], ["y"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def qdq_base_model(seed: int, workdir: Path) -> onnx.ModelProto:
    """``base_model`` quantized to int8 QDQ (what ``--target custom`` needs), calibrated on seeded
    random inputs."""
    from lowering.quantize import quantize_model
    from lowering.quantize.progress import no_progress

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(base_model(seed), workdir / "base.onnx")
    rng = np.random.default_rng(seed)
    np.savez(workdir / "calibration.npz", x=rng.standard_normal((8, 3, 8, 8)).astype(np.float32))
    quantize_model(workdir / "base.onnx", workdir / "calibration.npz", workdir / "base.int8.onnx",
                   progress=no_progress)
    return onnx.load(workdir / "base.int8.onnx")


_DTYPES = [TensorProto.INT64, TensorProto.INT8, TensorProto.BOOL, TensorProto.STRING, TensorProto.DOUBLE,
           TensorProto.FLOAT16, TensorProto.UINT8, TensorProto.COMPLEX64, 0, 99]
_ABSURD = [0, -1, -7, 10**6, 10**12, 2**31, 2**62]


#: the structural edits of ``structural_edit`` (its ``choice``), by index
STRUCTURAL_EDITS = ("input shape", "input dtype", "initializer dtype", "initializer dims", "op type",
                    "attribute", "edge", "missing initializer", "output shape", "opset", "reshape target",
                    "extra node")


@contextlib.contextmanager
def fake_compilers(folder: Path, real_cc: bool = False):
    """``CC`` and ``NVCC`` set to ``fake_cc`` (unless ``real_cc``) for the duration; restored after."""
    old = {name: os.environ.get(name) for name in ("CC", "NVCC")}
    if not real_cc:  # the cuda target's nvcc too
        os.environ["CC"] = os.environ["NVCC"] = str(fake_cc(folder))
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def structural_edit(rng, model: onnx.ModelProto, choice: int | None = None) -> str:
    """One edit of ``model`` in place (``choice``: an index into STRUCTURAL_EDITS, else drawn); returns
    what it did."""
    g = model.graph
    choice = rng.randrange(12) if choice is None else choice
    if choice == 0:  # absurd input shapes (10^12 elements and worse)
        dims = g.input[0].type.tensor_type.shape.dim
        for d in rng.sample(range(len(dims)), rng.randint(1, len(dims))):
            dims[d].dim_value = rng.choice(_ABSURD)
        return "input shape"
    if choice == 1:
        g.input[0].type.tensor_type.elem_type = rng.choice(_DTYPES)
        return "input dtype"
    if choice == 2:
        t = rng.choice(list(g.initializer))
        t.data_type = rng.choice(_DTYPES)
        return "initializer dtype"
    if choice == 3:
        t = rng.choice([t for t in g.initializer if t.dims] or [None])
        if t is None:
            return "initializer dims (none)"
        i = rng.randrange(len(t.dims))
        t.dims[i] = rng.choice(_ABSURD[:4] + [t.dims[i] + 1])
        return "initializer dims"
    if choice == 4:
        n = rng.choice(list(g.node))
        n.op_type = rng.choice(["Conv", "Relu", "Gemm", "Softmax", "MaxPool", "NoSuchOp", "Reshape", "Add",
                                "MatMul", "Concat", ""])
        return "op type"
    if choice == 5:
        n = rng.choice(list(g.node))
        name = rng.choice(["pads", "strides", "kernel_shape", "axis", "group", "dilations", "transB"])
        value = rng.choice([[-1, -1, -1, -1], [0, 0], [10**9] * 2, -5, 0, 10**9, [1]])
        del n.attribute[:]
        n.attribute.append(helper.make_attribute(name, value))
        return "attribute"
    if choice == 6:
        n = rng.choice(list(g.node))
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(["", "nowhere", "y", "x", n.output[0]])
        return "edge"
    if choice == 7:
        del g.initializer[rng.randrange(len(g.initializer))]
        return "missing initializer"
    if choice == 8:
        g.output[0].type.tensor_type.shape.dim[rng.randrange(2)].dim_value = rng.choice(_ABSURD)
        return "output shape"
    if choice == 9:
        model.opset_import[0].version = rng.choice([1, 6, 12, 22, 99, 10**6])
        return "opset"
    if choice == 10:
        shape = [t for t in g.initializer if t.name == "shape"]
        if shape:
            target = rng.choice([[-1, -1], [0, 64], [10**12, 1], [1, 63], [2**62, 2]])
            shape[0].CopyFrom(numpy_helper.from_array(np.array(target, np.int64), "shape"))
        return "reshape target"
    g.node.insert(rng.randrange(len(g.node) + 1), helper.make_node(
        rng.choice(["Relu", "Identity", "Add", "Cast"]), [rng.choice(["x", "c", "g"])] * rng.randint(1, 2),
        [rng.choice(["c", "y", "fresh"])], name="fuzz"))
    return "extra node"


def byte_flips(rng, data: bytes, max_flips: int = 8) -> bytes:
    """1..max_flips bytes of ``data`` replaced by random values."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_flips)):
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    return bytes(buf)


def truncate(rng, data: bytes) -> bytes:
    """A strict prefix of ``data`` (possibly empty)."""
    return data[: rng.randrange(len(data))]


def mutate_model(rng, data: bytes) -> tuple[str, bytes]:
    """One mutated model: raw damage of the serialized bytes, or a structural edit."""
    kind = rng.randrange(4)
    if kind == 0:
        return "byte flips", byte_flips(rng, data)
    if kind == 1:
        return "truncated", truncate(rng, data)
    model = onnx.ModelProto()
    model.ParseFromString(data)
    what = [structural_edit(rng, model) for _ in range(rng.randint(1, 2))]
    try:
        out = model.SerializeToString()
    except Exception:  # an edit the protobuf cannot even serialize: damage the bytes instead
        return "byte flips", data[:-1]
    return "+".join(what), out


def check_lower(model_path: Path, out_path: Path, target: str = "cpu") -> tuple[str, str | None]:
    """Run ``lower MODEL -o OUT --no-cache --target TARGET``; return (outcome, problem or None)."""
    from lowering.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main([str(model_path), "-o", str(out_path), "--no-cache", "--target", target])
    except BaseException as exc:  # the oracle: nothing may escape main
        import traceback

        return "crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    err = stderr.getvalue()
    if code == 0:
        return "ok", None if out_path.is_file() else "exit 0 without an artifact"
    lines = [line for line in err.splitlines() if line.strip()]
    if code != 2:
        return f"exit {code}", f"exit code {code}: {err[-2000:]}"
    if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in err:
        return "bad error", f"not a one-line error: {err[-2000:]}"
    if out_path.exists():
        return "bad error", "a failed lower left an artifact behind"
    if "internal error" in lines[0]:  # a clean exit, but a compiler bug the model exposed: counted apart
        return "internal error", lines[0]
    return "refused", None


#: ONNX Runtime's input type names -> numpy
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
#: ONNX Runtime's own limits, not a fault of the model: a missing kernel (an old opset), an opset version
#: it does not know for a domain no node uses
_ORT_LIMITS = ("NOT_IMPLEMENTED", "ValidateOpsetForDomain")
#: a model whose inputs hold more elements is not run by ONNX Runtime here (memory on a shared machine)
ORT_MAX_INPUT_ELEMENTS = 1 << 22


def ort_refusal(model_path: Path) -> str | None:
    """Why ONNX Runtime refuses the model (creating a session or running it on zeros), or None when it
    runs it, or cannot tell (inputs too large, an input type it does not name)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any refusal is the answer
        return " ".join(str(exc).split())[:300]
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in arg.shape]
        if arg.type not in _ORT_TYPES or max(shape, default=1) > ORT_MAX_INPUT_ELEMENTS \
                or math.prod(shape) > ORT_MAX_INPUT_ELEMENTS:
            return None
        feeds[arg.name] = np.zeros(shape, _ORT_TYPES[arg.type])
    try:
        sess.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        return " ".join(str(exc).split())[:300]
    return None


def fuzz_models(cases: int, seed: int, workdir: Path, real_cc: bool = False, log=print,
                report_internal: bool = True, target: str = "cpu", ort_oracle: bool = True,
                qdq: bool = False) -> Counter:
    """``cases`` mutated models through ``lower --target TARGET``. Returns outcome counts (``problem``:
    cases that broke the oracle, each logged). ``internal error``: exit 2 with one line, but from a
    compiler bug the model reached (logged when ``report_internal``, the model kept as
    ``internal<i>.onnx``). With ``ort_oracle``, a model ``lower`` builds must also be one ONNX Runtime
    runs (``accepted, ORT refuses`` is a problem: a compiler that builds an inconsistent model generates
    code whose result ONNX does not define, or that reads past a tensor). ``qdq``: mutate the int8 QDQ
    form of the model."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    data = (qdq_base_model(seed, workdir / "qdq") if qdq else base_model(seed)).SerializeToString()
    counts: Counter = Counter()
    with fake_compilers(workdir, real_cc):
        for i in range(cases):
            what, mutated = mutate_model(rng, data)
            model = workdir / f"case{i}.onnx"
            model.write_bytes(mutated)
            out = workdir / f"case{i}.lwr"
            outcome, problem = check_lower(model, out, target)
            if outcome == "ok" and ort_oracle:
                refusal = ort_refusal(model)
                if refusal is not None and not any(limit in refusal for limit in _ORT_LIMITS):
                    outcome = "accepted, ORT refuses"
                    problem = f"built, but ONNX Runtime refuses it: {refusal}"
            counts[outcome] += 1
            if outcome == "internal error":
                if report_internal:
                    log(f"model case {i} ({what}, seed {seed}): {problem}")
                (workdir / f"internal{i}.onnx").write_bytes(mutated)
                problem = None
            if problem is not None:
                counts["problem"] += 1
                log(f"model case {i} ({what}, seed {seed}): {problem}")
                (workdir / f"problem{i}.onnx").write_bytes(mutated)
            model.unlink()
            if out.exists():
                out.unlink()
    return counts


# ---- artifacts ----------------------------------------------------------------------------------------

MANIFEST_NAME = "manifest.json"


def _read_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


_JUNK = [None, -1, 0, 2**63, "x", "../../etc/passwd", [], {}, [1, "a"], 1.5, True, {"kind": "cpu"}]


def _junk(rng):
    """A value of _JUNK. Hypothesis plans get a copy: a later edit inside it must not change _JUNK, or the
    next case would be drawn differently (hypothesis refuses a strategy that depends on such state). The
    seeded campaign keeps the table's own objects, as it always has: copying would change its cases (seed 0
    from its 1,491st artifact on) since an edited _JUNK value is what later cases of the same run draw."""
    value = rng.choice(_JUNK)
    return value if isinstance(rng, random.Random) else copy.deepcopy(value)


def _poke(rng: random.Random, value, depth=0):
    """A random edit somewhere inside a JSON value (returns the new value)."""
    if isinstance(value, dict) and value and depth < 6:
        key = rng.choice(sorted(value))
        r = rng.random()
        if r < 0.15:
            del value[key]
        elif r < 0.3:
            value[key] = _junk(rng)
        else:
            value[key] = _poke(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and depth < 6:
        i = rng.randrange(len(value))
        if rng.random() < 0.2:
            del value[i]
        else:
            value[i] = _poke(rng, value[i], depth + 1)
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return rng.choice([value + 1, value - 1, -value, 0, value * 1000, 2**40])
    return _junk(rng)


def bit_flips(rng, data: bytes, max_flips: int = 6) -> bytes:
    """1..max_flips single-bit flips anywhere in ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_flips)):
        buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


# Member-level operators: each edits ``members`` (name -> bytes) and/or ``manifest`` (the parsed JSON) in
# place and returns (what, must_refuse, manifest_edited). ``manifest_edited``: ``manifest`` must be written
# back into members["manifest.json"] (otherwise the original bytes stay).

def op_member_changed(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """A member's last byte changed, the manifest untouched: the hash check must catch it."""
    name = rng.choice(sorted(n for n in members if n != MANIFEST_NAME))
    members[name] = members[name][:-1] + bytes([members[name][-1] ^ 0x55]) if members[name] else b"x"
    return f"member {name} changed", True, False


def op_extra_member(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """An extra member, or one whose name escapes the container."""
    members[rng.choice(["../evil", "/abs", "cpu/../../x", "extra.bin", "a\\b", "c:d"])] = b"payload"
    return "extra member", True, False


def op_manifest_edit(rng, members: dict, manifest, rehash: bool) -> tuple[str, bool, bool]:
    """A semantic edit somewhere in the manifest (``rehash``: the members' hashes and sizes recomputed, so
    only the edit is wrong): may load, or be refused cleanly."""
    manifest = _poke(rng, manifest)
    if rehash and isinstance(manifest, dict) and isinstance(manifest.get("members"), dict):
        for name, meta in manifest["members"].items():
            if name in members and isinstance(meta, dict):
                meta["sha256"] = hashlib.sha256(members[name]).hexdigest()
                meta["size"] = len(members[name])
    members[MANIFEST_NAME] = json.dumps(manifest).encode()
    return "manifest edit", False, False


def mutate_artifact(rng, data: bytes) -> tuple[str, bytes, bool]:
    """One damaged artifact: (what, bytes, must_refuse)."""
    kind = rng.randrange(6)
    if kind == 0:
        # a flip inside the zip's own bookkeeping (timestamps, attributes) can be harmless
        return "bit flips", bit_flips(rng, data), False
    if kind == 1:
        return "truncated", truncate(rng, data), True
    members = _read_zip(data)
    manifest = json.loads(members[MANIFEST_NAME])
    if kind == 2:
        what, must_refuse, _ = op_member_changed(rng, members, manifest)
    elif kind == 3:
        what, must_refuse, _ = op_extra_member(rng, members, manifest)
    else:  # 4: hashes kept consistent, 5: not
        what, must_refuse, _ = op_manifest_edit(rng, members, manifest, rehash=kind == 4)
    return what, _write_zip(members), must_refuse


# Operators only hypothesis plans draw (a seed never reaches them, so seeded campaigns are unchanged).

def op_member_flips(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """Bits flipped at distinct places of any member but the manifest, hashes untouched: must refuse."""
    name = rng.choice(sorted(n for n in members if n != MANIFEST_NAME))
    buf = bytearray(members[name] or b"\0")
    for i in rng.sample(range(len(buf)), min(len(buf), rng.randint(1, 4))):
        buf[i] ^= 1 << rng.randrange(8)
    members[name] = bytes(buf) if members[name] else b"\1"
    return f"bits of {name} flipped", True, False


_RENAMES = ["{}.bak", "../{}", "x/{}", "/{}", "{}/", "cpu/../{}", "{}\\", "C:{}"]


def op_member_renamed(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """A member renamed (to a plain or an escaping name); ``in the manifest too`` keeps the manifest's
    record consistent (loads when nothing reads the member, else refused: no such member)."""
    name = rng.choice(sorted(n for n in members if n != MANIFEST_NAME))
    new = rng.choice(_RENAMES).format(name)
    members[new] = members.pop(name)
    if rng.randrange(2) and isinstance(manifest.get("members"), dict) and name in manifest["members"]:
        manifest["members"][new] = manifest["members"].pop(name)
        escapes = not new.endswith(".bak") and not new.startswith("x/")
        return f"member {name} renamed to {new!r} in the manifest too", escapes, True
    return f"member {name} renamed to {new!r}", True, False


def op_newer_format(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    from runtime.artifact import FORMAT_VERSION

    manifest["format_version"] = FORMAT_VERSION + rng.choice([1, 2, 10**6, 2**63, 2**80])
    return f"format version {manifest['format_version']}", True, True


def op_lying_size(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """The manifest's size of a member is wrong (its SHA-256 right): must refuse."""
    name = rng.choice(sorted(manifest["members"]))
    meta = manifest["members"][name]
    size = meta["size"]
    meta["size"] = rng.choice([size + 1, size - 1, 0 if size else 1, -1, 2**40, 2**64, str(size), float(size),
                               None, True if size != 1 else False])
    return f"manifest size of {name}: {meta['size']!r}", True, True


def op_signature_lie(rng, members: dict, manifest) -> tuple[str, bool, bool]:
    """One dimension of an input or output changed consistently in the artifact's signature and every
    target's own: a manifest that lies about tensor sizes while agreeing with itself. Loading it is safe
    only if the runtime checks the sizes against the compiled code (see ``check_artifact_case``)."""
    role = rng.choice(["inputs", "outputs"])
    tensors = manifest[role]
    i = rng.randrange(len(tensors))
    d = rng.randrange(len(tensors[i]["shape"]))
    old = tensors[i]["shape"][d]
    new = rng.choice([max(old // 2, 1), old + 1, old * 2, 0 if old else 1])
    if new == old:
        new = old + 1
    tensors[i]["shape"][d] = new
    for entry in manifest["targets"].values():
        sig = entry.get("signature", {}).get(role)
        if isinstance(sig, list) and i < len(sig):
            sig[i]["shape"][d] = new
    return f"{role}[{i}] dim {d}: {old} -> {new} everywhere", False, True


#: member-level operators of the hypothesis plans, by name (``rehash``-ing edits first: see strategies)
ARTIFACT_OPS = {
    "manifest edit, rehashed": lambda rng, m, man: op_manifest_edit(rng, m, man, rehash=True)[:2] + (False,),
    "signature lie": op_signature_lie,
    "manifest edit": lambda rng, m, man: op_manifest_edit(rng, m, man, rehash=False)[:2] + (False,),
    "member changed": op_member_changed,
    "member bits flipped": op_member_flips,
    "extra member": op_extra_member,
    "member renamed": op_member_renamed,
    "newer format": op_newer_format,
    "lying size": op_lying_size,
}
ARTIFACT_EXTRA_OPS = ("member bits flipped", "member renamed", "newer format", "lying size", "signature lie")


def build_base_artifact(folder: Path, seed: int = 3) -> Path:
    """The unmutated artifact the artifact cases damage: ``base_model(seed)`` built for cpu with the real
    C compiler (so a loaded case also runs)."""
    from lowering.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(base_model(seed), folder / "base.onnx")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(folder / "base.onnx"), "-o", str(folder / "base.lwr"), "--no-cache"])
    if code != 0:
        raise RuntimeError(f"could not build the base artifact: {stderr.getvalue().strip()}")
    return folder / "base.lwr"


def check_load(path: Path, must_refuse: bool) -> tuple[str, str | None]:
    import runtime
    from runtime.errors import RuntimeLoadError

    try:
        sess = runtime.load(path)
    except RuntimeLoadError:
        return "refused", None
    except BaseException as exc:
        import traceback

        return "crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    del sess
    return "loaded", ("loaded although it must be refused" if must_refuse else None)


def fuzz_artifacts(cases: int, seed: int, artifact: Path, workdir: Path, log=print) -> Counter:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    data = Path(artifact).read_bytes()
    counts: Counter = Counter()
    for i in range(cases):
        what, mutated, must_refuse = mutate_artifact(rng, data)
        path = workdir / f"case{i}.lwr"
        path.write_bytes(mutated)
        outcome, problem = check_load(path, must_refuse)
        counts[outcome] += 1
        if problem is not None:
            counts["problem"] += 1
            log(f"artifact case {i} ({what}, seed {seed}): {problem}")
            (workdir / f"problem{i}.lwr").write_bytes(mutated)
        path.unlink()
    return counts
