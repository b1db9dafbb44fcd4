"""``runtime.load(path)`` and the session it returns (the call shape of onnxruntime.InferenceSession)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from .artifact import numpy_dtype, open_artifact
from .backends import executor_class
from .errors import InvalidArtifactError, InvalidInputError, RuntimeLoadError, TargetUnavailableError

log = logging.getLogger("lowering.runtime")

#: Automatic target choice, best first. The simulated accelerator only runs when asked for by name.
DEFAULT_PREFERENCE = ("cuda", "cpu")


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of the model: name, static shape, numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_manifest(cls, entry: dict) -> TensorInfo:
        return cls(entry["name"], tuple(int(d) for d in entry["shape"]), entry["dtype"])


class Session:
    """A loaded artifact bound to one target. ``run`` is safe to call from several threads (calls on one
    session are serialised; use one session per thread for parallel throughput)."""

    def __init__(self, path, target: str | None = None, targets=None, threads: int | None = None):
        self.artifact = open_artifact(path)
        manifest = self.artifact.manifest
        self.inputs = [TensorInfo.from_manifest(e) for e in manifest["inputs"]]
        self.outputs = [TensorInfo.from_manifest(e) for e in manifest["outputs"]]
        self.skipped: dict[str, str] = {}
        self.target, self._executor = self._choose(target, targets, threads)
        self._lock = threading.Lock()
        self._in_specs = [(i.name, numpy_dtype(i.dtype), i.shape) for i in self.inputs]
        self._out_specs = [(o.shape, numpy_dtype(o.dtype)) for o in self.outputs]
        self._out_index = {o.name: i for i, o in enumerate(self.outputs)}

    def _choose(self, target, targets, threads):
        built = self.artifact.targets
        if target is not None and targets is not None:
            raise ValueError("pass either target= or targets=, not both")
        preference = [target] if target else list(targets or DEFAULT_PREFERENCE)
        path = self.artifact.path

        def skip(kind: str, reason: str) -> None:
            self.skipped[kind] = reason
            log.info("%s: skipped target %s: %s", path, kind, reason)

        for kind in preference:
            entry = built.get(kind)
            if entry is None:
                skip(kind, "not built into this artifact")
                continue
            if not isinstance(entry, dict):
                raise InvalidArtifactError(f"{path}: manifest entry of target '{kind}' is not an object")
            cls = executor_class(entry.get("kind", kind))
            if cls is None:
                skip(kind, "this runtime has no executor for it")
                continue
            try:
                reason = cls.check_requirements(entry)
                if reason:
                    skip(kind, reason)
                    continue
                self._check_signature(kind, entry)
                executor = cls(entry, self.artifact.read, threads=threads)
            except RuntimeLoadError:
                raise
            except MemoryError:
                raise RuntimeLoadError(f"{path}: target {kind}: not enough memory to load it") from None
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                # the manifest is input: a malformed target entry is a load error, never a crash
                raise InvalidArtifactError(f"{path}: target {kind}: malformed manifest entry "
                                           f"({type(exc).__name__}: {exc})") from None
            log.info("%s: running target %s", path, kind)
            return kind, executor
        why = "; ".join(f"{k}: {r}" for k, r in self.skipped.items()) or "no targets"
        raise TargetUnavailableError(
            f"{self.artifact.path}: no usable target (built: {', '.join(sorted(built)) or 'none'}; {why})")

    def _check_signature(self, kind: str, entry: dict) -> None:
        """A target's own signature (the buffers its code reads and writes) must agree with the artifact's,
        which ``run`` checks the caller's arrays against: same count, dtypes and shapes."""
        sig = entry.get("signature")
        if sig is None:
            return
        for role, infos in (("inputs", self.inputs), ("outputs", self.outputs)):
            theirs = sig.get(role, [])
            same = isinstance(theirs, list) and len(theirs) == len(infos) and all(
                isinstance(t, dict) and t.get("dtype") == i.dtype and t.get("shape") == list(i.shape)
                for t, i in zip(theirs, infos))
            if not same:
                raise InvalidArtifactError(f"{self.artifact.path}: target {kind}: its {role} signature "
                                           "differs from the artifact's")

    @property
    def last_report(self) -> dict | None:
        """The executor's report of the last successful ``run`` (the custom target: the NPU-1 simulator's B.7
        reports per accelerator segment and their totals; see ``runtime.backends.custom``), or None when the
        target keeps none or nothing has run yet."""
        with self._lock:
            return getattr(self._executor, "last_report", None)

    def last_trace(self, *, coalesce_above: int | None = None) -> dict | None:
        """The Chrome trace-event timeline of the last run when the target records one (the custom target:
        its NPU segments), else None."""
        trace = getattr(self._executor, "trace", None)
        if not callable(trace):
            return None
        with self._lock:
            return trace(coalesce_above=coalesce_above)

    def get_inputs(self) -> list[TensorInfo]:
        return list(self.inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self.outputs)

    def _prepare(self, feed: dict) -> list[np.ndarray]:
        if type(feed) is dict and len(feed) == len(self._in_specs):  # the common case, checked cheaply
            arrays = []
            for name, dtype, shape in self._in_specs:
                a = feed.get(name)
                if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
                    break
                if not a.flags.c_contiguous:
                    break
                arrays.append(a)
            else:
                return arrays
        if not isinstance(feed, dict):
            raise InvalidInputError("inputs must be a dict of input name -> array")
        names = [i.name for i in self.inputs]
        unknown = sorted(set(feed) - set(names))
        if unknown:
            raise InvalidInputError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are "
                                    f"{', '.join(names)}")
        arrays = []
        for info in self.inputs:
            if info.name not in feed:
                raise InvalidInputError(f"missing input '{info.name}' ({info.dtype}{list(info.shape)})")
            array = np.asarray(feed[info.name])
            if array.dtype != numpy_dtype(info.dtype):
                raise InvalidInputError(f"input '{info.name}' has dtype {array.dtype}, expected {info.dtype}")
            if tuple(array.shape) != info.shape:
                raise InvalidInputError(f"input '{info.name}' has shape {list(array.shape)}, "
                                        f"expected {list(info.shape)}")
            arrays.append(np.ascontiguousarray(array))
        return arrays

    def run(self, output_names, input_feed: dict) -> list[np.ndarray]:
        """Run the model. ``output_names`` None means all outputs, in the model's order."""
        arrays = self._prepare(input_feed)
        by_name = self._out_index
        if output_names is not None:
            for name in output_names:
                if name not in by_name:
                    raise InvalidInputError(f"unknown output '{name}'; outputs are {', '.join(by_name)}")
        results = [np.empty(shape, dtype) for shape, dtype in self._out_specs]
        with self._lock:
            self._executor.run(arrays, results)
        return results if output_names is None else [results[by_name[name]] for name in output_names]

    def profile(self, input_feed: dict, runs: int = 10, warmup: int = 2) -> list[dict]:
        """Per-kernel wall time over ``runs`` inferences after ``warmup`` (targets whose executor can time
        kernels: cpu). Returns ``[{"kernel", "ms"}]`` in run order, ``ms`` the mean per inference; the
        kernel names are those of the artifact report's kernel records."""
        if runs < 1 or warmup < 0:
            raise ValueError("profile: runs must be >= 1 and warmup >= 0")
        names_of = getattr(self._executor, "kernel_names", None)
        if names_of is None:
            raise _profile_unsupported(self.target)
        arrays = self._prepare(input_feed)
        results = [np.empty(shape, dtype) for shape, dtype in self._out_specs]
        with self._lock:
            names = names_of()
            for _ in range(warmup):
                self._executor.run(arrays, results)
            seconds = np.zeros(len(names), np.float64)
            for _ in range(runs):
                self._executor.run(arrays, results, seconds=seconds)
        return [{"kernel": n, "ms": float(s) * 1e3 / runs} for n, s in zip(names, seconds)]


def _profile_unsupported(target: str) -> TargetUnavailableError:
    return TargetUnavailableError(f"target '{target}' does not support per-kernel profiling")


def load(path, target: str | None = None, targets=None, threads: int | None = None) -> Session:
    """Load an artifact. ``target`` forces one target; ``targets`` is an order of preference; by default
    cuda when usable, else cpu. ``threads`` sets the intra-op thread count (None: the library default)."""
    return Session(path, target=target, targets=targets, threads=threads)
