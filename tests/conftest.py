"""Test-session settings: compiles through the CLI use a build cache; keep it in a temporary folder so the
suite never reads a developer's cache (a stale hit would hide a change) nor fills it."""

import os
import shutil
import tempfile

_CACHE = None


def pytest_configure(config):
    global _CACHE
    if "LOWERING_CACHE_DIR" not in os.environ:
        _CACHE = tempfile.mkdtemp(prefix="lowering-test-cache-")
        os.environ["LOWERING_CACHE_DIR"] = _CACHE


def pytest_unconfigure(config):
    if _CACHE is not None:
        os.environ.pop("LOWERING_CACHE_DIR", None)
        shutil.rmtree(_CACHE, ignore_errors=True)
