"""Property-based fuzzing with hypothesis (``strategies.py``): a mutation plan drawn per case, shrunk to a
minimal one when it breaks the oracle.

(a) a mutated model into ``lower`` (in process, ``fake_cc`` for the compiler) ends in exit 0, then a valid
artifact and a model ONNX Runtime runs, or exit 2 with one ``error:`` line; never a traceback, a hang, an
internal error or another exit code. (b) a mutated artifact into ``runtime.load`` and a run on zeros ends in
a session and outputs, or the runtime's own error with a message; never another exception, a hang, a load
of damage that must be refused, or a load whose signature disagrees with the compiled code.

``HYPOTHESIS_PROFILE=campaign`` (or ``python -m tests.fuzz --hypothesis N``) runs the long campaign; the
default ``ci`` profile is bounded and derandomized (the same cases every run).
"""

import json
import time
import zipfile

import pytest

pytest.importorskip("hypothesis", reason="the dev extra's hypothesis is not installed")

from .strategies import (  # noqa: E402
    PROFILE,
    PROFILE_ERROR,
    CaseTimeout,
    build_base_artifact,
    check_artifact_case,
    examples,
    run_artifacts,
    run_models,
    tensor_sizes,
    time_limit,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _known_profile():
    if PROFILE_ERROR:
        pytest.fail(PROFILE_ERROR, pytrace=False)


@pytest.fixture(scope="module")
def base_artifact(tmp_path_factory):
    return build_base_artifact(tmp_path_factory.mktemp("base"))


def test_mutated_models_end_in_success_or_one_line_error(tmp_path):
    counts, problems = run_models(tmp_path)
    print(f"hypothesis ({PROFILE}) models: {dict(sorted(counts.items()))}")
    assert not problems, "\n".join(problems)
    assert sum(counts.values()) >= min(examples("models"), 20)
    assert counts["ok"] > 0 and counts["refused"] > 0  # the plans reach both outcomes


def test_mutated_artifacts_load_and_run_or_are_refused(tmp_path, base_artifact):
    counts, problems = run_artifacts(tmp_path, base=base_artifact)
    print(f"hypothesis ({PROFILE}) artifacts: {dict(sorted(counts.items()))}")
    assert not problems, "\n".join(problems)
    assert sum(counts.values()) >= min(examples("artifacts"), 20)
    assert counts["refused"] > 0 and counts["loaded"] > 0


# ---- the oracle itself can fail -------------------------------------------------------------------------

def test_artifact_oracle_flags_a_load_that_must_be_refused(tmp_path, base_artifact):
    data = base_artifact.read_bytes()
    with zipfile.ZipFile(base_artifact) as zf:
        genuine = tensor_sizes(json.loads(zf.read("manifest.json")))
    assert check_artifact_case(data, False, tmp_path, genuine) == ("loaded", None)
    outcome, problem = check_artifact_case(data, True, tmp_path, genuine)
    assert outcome == "loaded" and problem == "loaded although it must be refused"


def test_artifact_oracle_flags_a_signature_smaller_than_the_code(tmp_path, base_artifact):
    from .test_regressions import _lie_about

    genuine = {"inputs": [768 * 2], "outputs": [20]}  # as if the code were compiled for a larger input
    outcome, problem = check_artifact_case(base_artifact.read_bytes(), False, tmp_path, genuine)
    assert outcome == "loaded, sizes lie" and "inputs 0: 768 bytes, compiled for 1536" in problem
    # any disagreement with the compiled sizes is refused at load, even a harmless larger output
    lie = _lie_about(base_artifact.read_bytes(), "outputs", 1, 6)
    assert check_artifact_case(lie, False, tmp_path, {"inputs": [768], "outputs": [20]}) == ("refused", None)


def test_a_case_past_its_time_limit_is_a_hang():
    with pytest.raises(CaseTimeout):
        with time_limit(0.05):
            time.sleep(30)
