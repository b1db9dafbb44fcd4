"""Makes the ``zoo`` fixture available to tests under ``tests/zoo``; elsewhere import it from ``fixtures``."""

from .fixtures import zoo  # noqa: F401
