"""``lower cache``: show, empty or bound the build cache (``lowering.cache``).

    lower cache [--info]                 location, entries, bytes, the size bound and where it comes from
    lower cache --clear                  delete every entry (only cache files: nothing else in the folder)
    lower cache --max-bytes 2G           record a size bound for this cache folder and trim to it now
    lower cache ... --cache-dir DIR      another folder than the default; --json for a machine-readable form
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .cache import BuildCache, default_cache_dir, format_size, parse_size
from .errors import LoweringError


@click.command("cache")
@click.option("--info", is_flag=True, help="Show the location, entries, bytes and size bound (the default).")
@click.option("--clear", is_flag=True, help="Delete every cache entry (and killed builds' temporary files).")
@click.option("--max-bytes", "max_bytes", default=None, metavar="SIZE",
              help="Record SIZE (e.g. 500M, 2G; 0: no bound) as the folder's size bound and evict the least "
                   "recently used entries beyond it now. $LOWERING_CACHE_MAX_BYTES overrides it.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="The cache folder (default: $LOWERING_CACHE_DIR, else $XDG_CACHE_HOME/lowering, else "
                   "~/.cache/lowering).")
@click.option("--json", "as_json", is_flag=True, help="Print the cache's state as JSON.")
def cache_command(info, clear, max_bytes, cache_dir, as_json):
    """Show (--info, the default), empty (--clear) or bound (--max-bytes SIZE) the build cache.

    After every store the cache deletes its least recently used entries beyond the bound (default 5 GiB).
    """
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise LoweringError(f"cache folder {root} is a file, not a folder")
    bound = None
    if max_bytes is not None:
        try:
            bound = parse_size(max_bytes)
        except ValueError as exc:
            raise LoweringError(f"--max-bytes: {exc}") from None
    cache = BuildCache(root)
    done = {}
    if clear:
        removed, freed = cache.clear()
        done["cleared"] = {"entries": removed, "bytes": freed}
        if not as_json:
            click.echo(f"cleared {root}: deleted {removed} entries ({format_size(freed)})")
    if bound is not None:
        try:
            config = cache.set_max_bytes(bound)
        except OSError as exc:
            raise LoweringError(f"cannot record the size bound in {root}: {exc.strerror or exc}") from None
        cache = BuildCache(root)
        removed, freed = cache.trim(bound)
        done["evicted"] = {"entries": removed, "bytes": freed}
        if not as_json:
            limit = format_size(bound) if bound else "none"
            click.echo(f"size bound of {root}: {limit} (recorded in {config}); evicted {removed} entries "
                       f"({format_size(freed)})")
            if os.environ.get("LOWERING_CACHE_MAX_BYTES"):
                click.echo(f"note: LOWERING_CACHE_MAX_BYTES={os.environ['LOWERING_CACHE_MAX_BYTES']} "
                           "overrides it in this environment")
    stats = cache.stats()
    if as_json:
        click.echo(json.dumps({**stats.to_json(), **done}, indent=1, sort_keys=True))
    elif info or not (clear or bound is not None):
        click.echo(f"location: {root}" + ("" if root.is_dir() else " (does not exist yet)"))
        click.echo(f"entries: {stats.entries} ({format_size(stats.bytes)})")
        limit = format_size(stats.max_bytes) if stats.max_bytes else "none"
        click.echo(f"size bound: {limit} ({stats.max_bytes_from})")
        if stats.temporary:
            click.echo(f"temporary files: {stats.temporary} (builds writing now, or killed ones: deleted "
                       "after an hour)")
