"""A progress bar on stderr when stderr is a terminal; nothing otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

#: ``progress(total, label)`` is a context manager yielding ``update(n)``.
Progress = Callable[[int, str], contextlib.AbstractContextManager]


@contextlib.contextmanager
def terminal_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    stream = sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=stream) as bar:
        yield bar.update


@contextlib.contextmanager
def no_progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    yield lambda n: None
