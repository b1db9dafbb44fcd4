"""Run the ONNX backend node test suite for a target and write the conformance table.

    python -m tests.conformance.run --out docs/conformance.md [--jobs 2] [--constant-inputs]
                                    [--filter REGEX] [--json results.json] [--timeout 120]
                                    [--baseline docs/results/conformance_passed.json] [--write-baseline]

Every node test ``onnx.backend.test`` builds is either excluded (``exclusions.py``, with its reason) or
run: compiled by the backend (``lowering.onnx.backend``) and checked against the expected outputs. Tests
run in worker processes (one test at a time each, fed over a pipe), so a test that crashes the process
(a signal in generated code) or hangs is recorded as a failure (``crash``/``timeout``) and the worker is
replaced; nothing a test does stops the run. ``--constant-inputs`` runs each test a second time with its
inputs bound as constants (the constant-folding path) and adds that column to the table.

``--baseline FILE`` is the merge gate CI runs: FILE lists, per mode, the tests that passed when it was
written (``--write-baseline`` rewrites it from this run); the run exits 1, naming them, if any of those
tests ran and did not pass. New passes never fail the gate; they are reported so the file can be updated.

The table (Markdown): totals per target and mode next to ONNX Runtime's own backend, the exclusions by
reason, the failures grouped by the first line of their error, and the missing ops ranked by how many
tests they fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from .cases import ONNXRUNTIME_PASSED, ONNXRUNTIME_TOTAL, Outcome, node_cases
from .exclusions import excluded_reason

ROOT = Path(__file__).resolve().parents[2]
MODES = {"inputs": False, "constants": True}


# ---------------------------------------------------------------------------------------------- worker


def _worker(fd: int, target: str) -> None:
    """Read ``MODE NAME`` lines on stdin; write one JSON outcome per line to ``fd``."""
    from lowering.onnx.backend import LoweringBackend

    from .cases import run_case

    backend = type(f"{target}Backend", (LoweringBackend,), {"target": target})
    results = os.fdopen(fd, "w", buffering=1)
    os.dup2(2, 1)  # anything printed (by us or native code) must not reach the results channel
    cases = node_cases()
    results.write(json.dumps({"ready": len(cases)}) + "\n")
    crash_on = os.environ.get("LOWERING_CONFORMANCE_CRASH_ON")  # for the runner's own test
    for line in sys.stdin:
        mode, name = line.split()
        if name == crash_on:
            import ctypes

            ctypes.string_at(0)  # a read of address 0, as a bad kernel would do: SIGSEGV
        outcome = run_case(cases[name], backend, constant_inputs=MODES[mode])
        results.write(json.dumps(outcome.to_json()) + "\n")


class _Worker:
    def __init__(self, target: str, env: dict, log: Path, startup_timeout: float):
        read, write = os.pipe()
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.conformance.run", "--worker-fd", str(write),
                 "--target", target],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env,
                pass_fds=(write,), text=True)
        os.close(write)
        self.results = os.fdopen(read, "r")
        self.task: tuple[str, str] | None = None
        self.deadline = 0.0
        self.ready = False
        self.startup_deadline = time.monotonic() + startup_timeout

    def send(self, mode: str, name: str, timeout: float) -> None:
        self.task = (mode, name)
        self.deadline = time.monotonic() + timeout
        self.proc.stdin.write(f"{mode} {name}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.results.close()

    def death(self) -> str:
        code = self.proc.wait()
        if code < 0:
            import signal

            try:
                return f"the test process died of signal {signal.Signals(-code).name}"
            except ValueError:
                return f"the test process died of signal {-code}"
        return f"the test process exited with status {code}"


def run_tests(names: list[str], modes: list[str], target: str = "cpu", jobs: int = 2,
              timeout: float = 120.0, progress=None) -> dict[str, dict[str, Outcome]]:
    """Run ``names`` in every mode of ``modes`` in ``jobs`` worker processes. Returns mode -> name ->
    outcome."""
    queue = [(mode, name) for name in names for mode in modes]
    queue.reverse()
    results: dict[str, dict[str, Outcome]] = {mode: {} for mode in modes}
    scratch = Path(tempfile.mkdtemp(prefix="lowering-conformance-"))
    env = dict(os.environ, TMPDIR=str(scratch), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    selector = selectors.DefaultSelector()
    workers: list[_Worker] = []
    done = 0
    total = len(queue)

    def start() -> None:
        worker = _Worker(target, env, scratch / f"worker{len(workers)}.log", startup_timeout=300.0)
        workers.append(worker)
        selector.register(worker.results, selectors.EVENT_READ, worker)

    def retire(worker: _Worker) -> None:
        selector.unregister(worker.results)
        worker.stop()
        workers.remove(worker)

    def record(outcome: Outcome, mode: str) -> None:
        nonlocal done
        results[mode][outcome.name] = outcome
        done += 1
        if progress:
            progress(done, total, mode, outcome)

    def feed(worker: _Worker) -> None:
        if queue:
            worker.send(*queue.pop(), timeout)
        else:
            worker.task = None

    try:
        for _ in range(max(1, min(jobs, len(queue)))):
            start()
        while queue or any(w.task for w in workers):
            for key, _ in selector.select(timeout=1.0):
                worker: _Worker = key.data
                line = worker.results.readline()
                if not line:  # the worker died: the test it was running is a crash
                    if worker.task:
                        mode, name = worker.task
                        record(Outcome(name, "failed", "crash", worker.death()), mode)
                    elif not worker.ready:
                        raise RuntimeError(f"a test worker failed to start; see {worker.log}: "
                                           + worker.log.read_text()[-2000:])
                    retire(worker)
                    if queue:
                        start()
                    continue
                message = json.loads(line)
                if "ready" in message:
                    worker.ready = True
                    feed(worker)
                    continue
                mode, _ = worker.task
                record(Outcome(**message), mode)
                feed(worker)
            now = time.monotonic()
            for worker in list(workers):
                if worker.task and now > worker.deadline:
                    mode, name = worker.task
                    record(Outcome(name, "failed", "timeout", f"timed out after {timeout:.0f} s", timeout),
                           mode)
                    worker.task = None
                    retire(worker)
                    if queue:
                        start()
                elif not worker.ready and now > worker.startup_deadline:
                    raise RuntimeError(f"a test worker did not start within 300 s; see {worker.log}")
    finally:
        for worker in list(workers):
            retire(worker)
        shutil.rmtree(scratch, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------------------------- report


def _group_key(error: str) -> str:
    """Failures group by their first line, with what varies per test (tensor and node names, numbers in
    mismatch reports) blanked out."""
    key = re.sub(r"^(\w+Error: )?model\.onnx: ", r"\1", error)
    key = re.sub(r" \(nodes?: [^)]*\)", "", key)
    key = re.sub(r"'[^']*'", "'…'", key)
    key = re.sub(r"(rtol|atol)=[\d.e+-]+", r"\1=…", key)
    key = re.sub(r"cannot run \d+ node\(s\)", "cannot run N node(s)", key)
    key = re.sub(r"(timed out after) \d+ s", r"\1 … s", key)
    return key


_UNSUPPORTED = re.compile(r"unsupported ops: (.*)$")
_CANNOT_RUN = re.compile(r"\(([\w:]+)\): \1 is not supported by the")


def missing_ops(error: str) -> list[str]:
    """The ops an error says are unsupported (by the importer or by the target)."""
    match = _UNSUPPORTED.search(error)
    if match:
        return [part.split(" (nodes")[0].strip() for part in match.group(1).split("; ")]
    if "is not supported by the" in error:
        return sorted(set(_CANNOT_RUN.findall(error)))
    return []


def write_report(path: Path, target: str, names: list[str], excluded: dict[str, str],
                 results: dict[str, dict[str, Outcome]], seconds: float) -> str:
    lines = [f"# ONNX backend conformance: node tests, `{target}` target", "",
             "Generated by `python -m tests.conformance.run` (do not edit by hand). Each of the node tests",
             "`onnx.backend.test` builds is compiled by `lowering.onnx.backend` and run through the runtime,",
             "or excluded for the reason given in `tests/conformance/exclusions.py`. A compile error (an",
             "unsupported op, a tensor type the target cannot hold) is a failure, never an exclusion.", "",
             "## Totals", "",
             "| target | inputs | tests | passed | failed | excluded |", "|---|---|---:|---:|---:|---:|"]
    labels = {"inputs": "fed at run time", "constants": "bound as constants"}
    for mode, outcomes in results.items():
        passed = sum(o.status == "passed" for o in outcomes.values())
        failed = sum(o.status == "failed" for o in outcomes.values())
        lines.append(f"| {target} | {labels[mode]} | {len(names)} | {passed} | {failed} | {len(excluded)} |")
    lines.append(f"| onnxruntime (reference) | fed at run time | {ONNXRUNTIME_TOTAL} | {ONNXRUNTIME_PASSED} "
                 f"| {ONNXRUNTIME_TOTAL - ONNXRUNTIME_PASSED} | 0 |")
    lines += ["", f"Run time: {seconds / 60:.1f} min.", ""]

    by_reason: dict[str, list[str]] = defaultdict(list)
    for name, reason in excluded.items():
        by_reason[reason].append(name)
    lines += ["## Excluded, by reason", "", "| reason | tests |", "|---|---:|"]
    for reason, members in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {reason} | {len(members)} |")

    for mode, outcomes in results.items():
        failures = [o for o in outcomes.values() if o.status == "failed"]
        ops = Counter(op for o in failures for op in missing_ops(o.error))
        lines += ["", f"## Missing ops (inputs {labels[mode]}): failing tests that name them", ""]
        if ops:
            lines += ["| op | tests |", "|---|---:|"]
            lines += [f"| {op} | {count} |" for op, count in ops.most_common()]
        else:
            lines.append("None.")
        stages = Counter(o.stage for o in failures)
        lines += ["", f"## Failures (inputs {labels[mode]}), grouped by the first line of their error", "",
                  "Stages: " + (", ".join(f"{stage} {count}" for stage, count in stages.most_common())
                                or "none") + ".", ""]
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for o in failures:
            groups[(o.stage, _group_key(o.error))].append(o.name)
        if groups:
            lines += ["| tests | stage | error | failing tests |", "|---:|---|---|---|"]
        for (stage, key), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            cell = key.replace("|", "\\|")
            lines.append(f"| {len(members)} | {stage} | {cell} | {', '.join(sorted(members))} |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def compare_with_baseline(baseline: dict[str, list[str]],
                          results: dict[str, dict[str, Outcome]]) -> tuple[list[str], list[str]]:
    """(regressions, new passes) as ``mode name`` strings: tests the baseline lists as passed that ran
    and failed, and tests that passed here without being listed. Tests this run did not run (a
    ``--filter``) are neither."""
    regressions, new = [], []
    for mode, outcomes in results.items():
        before = set(baseline.get(mode, ()))
        for name, outcome in sorted(outcomes.items()):
            if outcome.status == "passed" and name not in before:
                new.append(f"{mode} {name}")
            elif outcome.status != "passed" and name in before:
                regressions.append(f"{mode} {name}: {outcome.stage}: {outcome.error[:200]}")
    return regressions, new


def passed_by_mode(results: dict[str, dict[str, Outcome]]) -> dict[str, list[str]]:
    return {mode: sorted(n for n, o in outcomes.items() if o.status == "passed")
            for mode, outcomes in results.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/conformance.md"), help="the Markdown table")
    parser.add_argument("--json", type=Path, help="also write every outcome as JSON")
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test (default 120)")
    parser.add_argument("--filter", help="only tests whose name matches this regular expression")
    parser.add_argument("--constant-inputs", action="store_true",
                        help="also run every test with its inputs bound as constants")
    parser.add_argument("--baseline", type=Path,
                        help="JSON of the tests that passed before (per mode): exit 1 if any now fails")
    parser.add_argument("--write-baseline", action="store_true",
                        help="rewrite the --baseline file from this run's passes instead of checking")
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_fd is not None:
        _worker(args.worker_fd, args.target)
        return 0

    start = time.perf_counter()
    cases = node_cases()
    names = sorted(n for n in cases if not args.filter or re.search(args.filter, n))
    excluded = {n: r for n in names if (r := excluded_reason(n))}
    to_run = [n for n in names if n not in excluded]
    modes = ["inputs", "constants"] if args.constant_inputs else ["inputs"]
    print(f"{len(names)} node tests: {len(excluded)} excluded, running {len(to_run)} "
          f"x {len(modes)} mode(s) with {args.jobs} worker(s)", flush=True)

    def progress(done, total, mode, outcome):  # every outcome: the record of a run stopped early
        status = "ok" if outcome.status == "passed" else f"FAIL {outcome.stage}: {outcome.error[:140]}"
        print(f"[{done}/{total}] {mode} {outcome.name}: {status} ({outcome.seconds:.1f} s)", flush=True)

    results = run_tests(to_run, modes, args.target, args.jobs, args.timeout, progress)
    seconds = time.perf_counter() - start
    write_report(args.out, args.target, names, excluded, results, seconds)
    if args.json:
        args.json.write_text(json.dumps(
            {"target": args.target, "excluded": excluded,
             "results": {m: [o.to_json() for o in sorted(r.values(), key=lambda o: o.name)]
                         for m, r in results.items()}}, indent=1) + "\n")
    for mode, outcomes in results.items():
        passed = sum(o.status == "passed" for o in outcomes.values())
        print(f"{args.target} ({mode}): {passed} passed, {len(outcomes) - passed} failed, "
              f"{len(excluded)} excluded of {len(names)} node tests "
              f"(onnxruntime: {ONNXRUNTIME_PASSED} of {ONNXRUNTIME_TOTAL}) in {seconds / 60:.1f} min")
    print(f"wrote {args.out}")
    if args.baseline and args.write_baseline:
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        args.baseline.write_text(json.dumps(passed_by_mode(results), indent=0) + "\n")
        print(f"wrote {args.baseline}")
    elif args.baseline:
        try:
            baseline = json.loads(args.baseline.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read the baseline {args.baseline}: {exc}", file=sys.stderr)
            return 2
        regressions, new = compare_with_baseline(baseline, results)
        if new:
            print(f"{len(new)} test(s) pass that {args.baseline} does not list (rerun with --write-baseline "
                  f"to record them): {', '.join(new[:20])}{' ...' if len(new) > 20 else ''}")
        if regressions:
            print(f"error: {len(regressions)} test(s) that passed in {args.baseline} fail now:",
                  file=sys.stderr)
            for line in regressions:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(f"no regression against {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
