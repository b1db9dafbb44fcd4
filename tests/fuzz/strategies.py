"""Hypothesis strategies over the operators of ``mutators.py``, and the oracle each drawn case is judged by.

A case is a *plan*: several operators, each with its choices (which operator, where, with what value)
drawn from hypothesis through ``Drawn``, so a failing case shrinks to a minimal mutation and is replayed
from hypothesis' example database. Models: up to three structural edits (absurd shapes such as 10^12
elements, wrong element types, attributes, edges, opsets...) then optionally byte flips or a truncation of
the serialized bytes. Artifacts: member-level edits (bits flipped in any member, members added or renamed,
``../`` names, a newer format version, manifest sizes that lie, manifest edits with and without the hashes
recomputed, a tensor signature that lies consistently) then optionally bit flips or a truncation of the
whole file.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (the default: bounded, derandomized so every run tries the same
cases, no example database) and ``campaign`` (thousands of examples, random, with the database).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from .mutators import (
    _ORT_LIMITS,
    ARTIFACT_OPS,
    MANIFEST_NAME,
    STRUCTURAL_EDITS,
    _read_zip,
    _write_zip,
    bit_flips,
    build_base_artifact,
    byte_flips,
    check_lower,
    ort_refusal,
    structural_edit,
    truncate,
)

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
         HealthCheck.filter_too_much]
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_SLOW)
#: the campaign's example database (failing plans are replayed first on the next run): outside the checkout
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
DATABASE = Path(os.environ.get("LOWERING_FUZZ_DB") or _CACHE / "lowering" / "hypothesis")
settings.register_profile("campaign", deadline=None, print_blob=True, suppress_health_check=_SLOW,
                          database=DirectoryBasedExampleDatabase(DATABASE))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "ci"
#: examples per property under each profile (``LOWERING_FUZZ_EXAMPLES`` overrides both)
EXAMPLES = {"ci": {"models": 200, "artifacts": 500}, "campaign": {"models": 2000, "artifacts": 5000}}
#: why HYPOTHESIS_PROFILE cannot be used (None when it can); the callers report it in one line
PROFILE_ERROR = (None if PROFILE in EXAMPLES else
                 f"HYPOTHESIS_PROFILE={PROFILE!r} is not a profile of tests/fuzz (ci, campaign)")
#: seconds one case may take before it counts as a hang
CASE_TIMEOUT_S = float(os.environ.get("LOWERING_FUZZ_CASE_TIMEOUT", "120"))


def examples(kind: str) -> int:
    if PROFILE_ERROR:
        raise ValueError(PROFILE_ERROR)
    forced = os.environ.get("LOWERING_FUZZ_EXAMPLES")
    return int(forced) if forced else EXAMPLES.get(PROFILE, EXAMPLES["ci"])[kind]


def profile(kind: str) -> settings:
    return settings(settings.get_profile(PROFILE), max_examples=examples(kind))


class Case(tuple):
    """A drawn case, ``(what, bytes[, must_refuse])``, shown as what it did and its size (hypothesis prints
    the falsifying example: the bytes themselves would run to megabytes; the replay blob reproduces them)."""

    def __repr__(self) -> str:
        extra = f", must_refuse={self[2]}" if len(self) > 2 else ""
        return f"Case({self[0]!r}, <{len(self[1])} bytes>{extra})"


class Drawn:
    """The ``random.Random`` methods the mutation operators use, answered by hypothesis draws (integers
    that shrink towards the first choice, the smallest value)."""

    def __init__(self, draw):
        self._draw = draw

    def randrange(self, n: int) -> int:
        if n <= 0:
            raise ValueError("empty range for randrange()")
        return self._draw(st.integers(0, n - 1))

    def randint(self, a: int, b: int) -> int:
        return self._draw(st.integers(a, b))

    def choice(self, seq):
        if not len(seq):
            raise IndexError("cannot choose from an empty sequence")
        return seq[self.randrange(len(seq))]

    def sample(self, population, k: int) -> list:
        population = list(population)
        picks = self._draw(st.lists(st.integers(0, len(population) - 1), min_size=k, max_size=k, unique=True))
        return [population[i] for i in picks]

    def random(self) -> float:
        return self._draw(st.floats(0, 1, exclude_max=True))


# ---- models -------------------------------------------------------------------------------------------

@st.composite
def mutated_models(draw, data: bytes):
    """(what, bytes): 0-3 structural edits of the model ``data``, then nothing, byte flips or truncation."""
    rng = Drawn(draw)
    model = onnx.ModelProto()
    model.ParseFromString(data)
    what = []
    for choice in draw(st.lists(st.integers(0, len(STRUCTURAL_EDITS) - 1), max_size=3)):
        what.append(structural_edit(rng, model, choice))
    try:
        out = model.SerializeToString()
    except Exception:  # an edit the protobuf cannot serialize (e.g. a dimension past int64)
        what.append("unserializable, last byte dropped")
        out = data[:-1]
    raw = draw(st.sampled_from(["none", "none", "byte flips", "truncated"]))  # half the cases: edits only
    if raw == "byte flips":
        out = byte_flips(rng, out)
    elif raw == "truncated":
        out = truncate(rng, out)
    if raw != "none":
        what.append(raw)
    return Case(("+".join(what) or "unchanged", out))


class CaseTimeout(BaseException):
    """A case ran past CASE_TIMEOUT_S (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CaseTimeout in the main thread after ``seconds`` (SIGALRM; no limit off the main thread)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"no result after {seconds:.0f} s")

    try:
        old = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_model_case(mutated: bytes, workdir: Path, real_cc: bool = False) -> tuple[str, str | None]:
    """``lower`` the mutated model (compilers already set up: ``mutators.fake_compilers``). Returns (outcome,
    problem or None). Outcomes: ``ok`` (then ONNX Runtime must run the model too; with ``real_cc`` the
    artifact must also load and run, or be refused by the runtime with its own error), ``refused``,
    or a problem (``internal error``: a one-line exit 2, but from a compiler bug the model reached;
    ``crash``, ``hang``, ``exit N``, ``bad error``, ``bad artifact``, ``accepted, ORT refuses``,
    ``run failed``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model, out = workdir / "case.onnx", workdir / "case.lwr"
    for stale in (model, out):
        stale.unlink(missing_ok=True)
    model.write_bytes(mutated)
    try:
        with time_limit(CASE_TIMEOUT_S):
            outcome, problem = check_lower(model, out)
    except CaseTimeout as exc:
        return "hang", f"lower: {exc}"
    if problem is not None and "CaseTimeout" in problem:
        return "hang", problem
    if outcome != "ok":
        return outcome, problem
    from runtime.artifact import open_artifact
    from runtime.errors import RuntimeLoadError

    try:
        open_artifact(out)  # what `lower` wrote is a valid container, whatever the compiler produced
    except RuntimeLoadError as exc:
        return "bad artifact", f"lower wrote an artifact the runtime refuses: {exc}"
    refusal = ort_refusal(model)
    if refusal is not None and not any(limit in refusal for limit in _ORT_LIMITS):
        return "accepted, ORT refuses", f"built, but ONNX Runtime refuses it: {refusal}"
    if real_cc:
        return _run_built(out)
    return "ok", None


def _run_built(path: Path) -> tuple[str, str | None]:
    """Load and run a built artifact on zeros (inputs up to ORT_MAX_INPUT_ELEMENTS, else only loaded)."""
    import runtime
    from runtime.errors import RuntimeLoadError

    from .mutators import ORT_MAX_INPUT_ELEMENTS

    try:
        with time_limit(CASE_TIMEOUT_S):
            sess = runtime.load(path)
            feeds = {i.name: np.zeros(i.shape, i.dtype) for i in sess.get_inputs()
                     if math.prod(i.shape) <= ORT_MAX_INPUT_ELEMENTS}
            if len(feeds) == len(sess.get_inputs()):
                sess.run(None, feeds)
    except RuntimeLoadError:
        return "ok, not loadable here", None
    except RuntimeError as exc:
        if "lw_run failed" in str(exc):  # the generated code's own run-time check (status 3/4)
            return "ok, run refused", None
        return "run failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    except BaseException as exc:
        return "run failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    return "ok", None


# ---- artifacts ----------------------------------------------------------------------------------------

_RAW = ["none", "none", "bit flips", "truncated"]  # half the cases: member-level edits only
#: operators whose problem is known and not yet fixed (each with an xfail reproducer in
#: test_regressions.py): left out of the plans so the properties keep guarding everything else;
#: ``LOWERING_FUZZ_OPEN=1`` draws them too. None today ("signature lie" was fixed: the cpu library
#: reports its tensors' sizes).
OPEN_PROBLEMS: tuple[str, ...] = ()
PLAN_OPS = [name for name in ARTIFACT_OPS if name not in OPEN_PROBLEMS]


@st.composite
def mutated_artifacts(draw, data: bytes):
    """(what, bytes, must_refuse): 0-3 distinct member-level operators of ``mutators.ARTIFACT_OPS`` (edits
    that may load first, then the damage that must be refused, so a later edit cannot undo an earlier one's
    damage), then nothing, bit flips or a truncation of the file (at least one operator or raw damage)."""
    rng = Drawn(draw)
    names = PLAN_OPS
    # distinct operators (the same one twice could undo itself: a byte xor-ed back), in ARTIFACT_OPS' order
    ops = sorted(draw(st.lists(st.integers(0, len(names) - 1), min_size=0, max_size=3, unique=True)))
    raw = draw(st.sampled_from(_RAW))
    if not ops and raw == "none":
        ops = [draw(st.integers(0, len(names) - 1))]
    members = _read_zip(data)
    manifest = json.loads(members[MANIFEST_NAME])
    what, must_refuse, rewrite = [], False, False
    for index in ops:
        try:
            did, refuse, edited = ARTIFACT_OPS[names[index]](rng, members, manifest)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):  # an earlier edit broke its
            what.append(f"{names[index]} (n/a)")  # structure: skipped (may have half-applied, may load)
            continue
        what.append(did)
        must_refuse |= refuse
        rewrite |= edited
    if rewrite:
        members[MANIFEST_NAME] = json.dumps(manifest).encode()
    out = _write_zip(members) if ops else data
    if raw == "bit flips":  # a flip can land in harmless zip bookkeeping, or undo a name's damage
        out, must_refuse = bit_flips(rng, out), False
        what.append("bit flips")
    elif raw == "truncated":
        out, must_refuse = truncate(rng, out), True
        what.append("truncated")
    return Case(("+".join(what), out, must_refuse))


def tensor_sizes(manifest: dict) -> dict[str, list[int]]:
    """Bytes of each input and output of the artifact's signature."""
    return {role: [math.prod(t["shape"]) * np.dtype(t["dtype"]).itemsize for t in manifest[role]]
            for role in ("inputs", "outputs")}


def check_artifact_case(mutated: bytes, must_refuse: bool, workdir: Path,
                        genuine: dict) -> tuple[str, str | None]:
    """``runtime.load`` the mutated artifact, then run it on zeros. Returns (outcome, problem or None).
    ``genuine``: ``tensor_sizes`` of the unmutated artifact; the code an artifact can load is always the
    genuine code (its hash is checked), so a loaded signature smaller than the genuine one would have that
    code read or write past the caller's buffers: not run, a problem (``loaded, sizes lie``)."""
    import runtime
    from runtime.errors import InvalidInputError, RuntimeLoadError

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "case.lwr"
    path.write_bytes(mutated)
    try:
        with time_limit(CASE_TIMEOUT_S):
            try:
                sess = runtime.load(path)
            except RuntimeLoadError as exc:
                if not str(exc).strip():
                    return "refused", "refused without a message"
                return "refused", None
            if must_refuse:
                return "loaded", "loaded although it must be refused"
            sizes = tensor_sizes(sess.artifact.manifest)
            smaller = [f"{role} {i}: {n} bytes, compiled for {g}"
                       for role in sizes for i, (n, g) in enumerate(zip(sizes[role], genuine[role])) if n < g]
            if any(len(sizes[role]) != len(genuine[role]) for role in sizes) or smaller:
                return "loaded, sizes lie", ("loaded a signature that disagrees with the compiled code "
                                             f"({'; '.join(smaller) or 'tensor count'})")
            try:
                sess.run(None, {i.name: np.zeros(i.shape, i.dtype) for i in sess.get_inputs()})
            except (RuntimeLoadError, InvalidInputError) as exc:
                return "loaded, run refused", None if str(exc).strip() else "run refused without a message"
            return "loaded", None
    except CaseTimeout as exc:
        return "hang", str(exc)
    except BaseException as exc:  # the oracle: nothing else may escape load or run
        return "crash", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def tally(counts: Counter, problems: list, kind: str, what: str, outcome: str, problem: str | None) -> None:
    counts[outcome] += 1
    if problem is not None:
        counts["problem"] += 1
        problems.append(f"{kind} ({what}): {problem}")


# ---- runs ---------------------------------------------------------------------------------------------

def run_models(workdir: Path, max_examples: int | None = None, real_cc: bool = False, seed: int = 0,
               raise_on_problem: bool = True) -> tuple[Counter, list[str]]:
    """Mutated ``base_model(seed)`` into ``lower`` under the profile's settings. Returns (outcome counts,
    problems). ``raise_on_problem``: the first problem fails the property (hypothesis shrinks it to a
    minimal plan and raises); otherwise every case runs and each problem is listed, its model kept in
    ``workdir`` as problem<i>.onnx."""
    from hypothesis import given

    from .mutators import base_model, fake_compilers

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = base_model(seed).SerializeToString()
    counts: Counter = Counter()
    problems: list[str] = []
    chosen = settings(profile("models"), max_examples=max_examples) if max_examples else profile("models")

    @chosen
    @given(case=mutated_models(data))
    def prop(case):
        what, mutated = case
        outcome, problem = check_model_case(mutated, workdir / "case", real_cc)
        tally(counts, problems, "model", what, outcome, problem)
        if problem is not None:
            if raise_on_problem:
                raise AssertionError(f"{what}: {problem}")
            (workdir / f"problem{len(problems)}.onnx").write_bytes(mutated)

    with fake_compilers(workdir, real_cc):
        prop()
    return counts, problems


def run_artifacts(workdir: Path, max_examples: int | None = None, raise_on_problem: bool = True,
                  base: Path | None = None) -> tuple[Counter, list[str]]:
    """Mutated artifacts (of ``base``, else ``build_base_artifact``) into ``runtime.load`` and a run; as
    ``run_models``."""
    from hypothesis import given

    workdir = Path(workdir)
    base = base or build_base_artifact(workdir / "base")
    data = base.read_bytes()
    genuine = tensor_sizes(json.loads(_read_zip(data)[MANIFEST_NAME]))
    counts: Counter = Counter()
    problems: list[str] = []
    chosen = (settings(profile("artifacts"), max_examples=max_examples) if max_examples
              else profile("artifacts"))

    @chosen
    @given(case=mutated_artifacts(data))
    def prop(case):
        what, mutated, must_refuse = case
        outcome, problem = check_artifact_case(mutated, must_refuse, workdir / "case", genuine)
        tally(counts, problems, "artifact", what, outcome, problem)
        if problem is not None:
            if raise_on_problem:
                raise AssertionError(f"{what}: {problem}")
            (workdir / f"problem{len(problems)}.lwr").write_bytes(mutated)

    prop()
    return counts, problems
