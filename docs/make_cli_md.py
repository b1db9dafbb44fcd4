"""Write docs/cli.md, the CLI reference, from the commands' own ``--help`` text.

    python docs/make_cli_md.py            # rewrite docs/cli.md
    python docs/make_cli_md.py --check    # exit 1 when docs/cli.md is not what the CLI says now

The help is rendered at a fixed width (100 columns), so the file does not depend on the terminal.
``tests/examples/test_docs.py`` fails when the checked-in file is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"
WIDTH = 100


def render() -> str:
    sys.path.insert(0, str(ROOT))
    import click

    from lowering.cli import cli

    top = click.Context(cli, info_name="lower", terminal_width=WIDTH, max_content_width=WIDTH,
                        **cli.context_settings)
    parts = ["# The `lower` command line", "",
             "Generated from `--help` by `python docs/make_cli_md.py`; do not edit by hand.", "",
             "Exit codes: 0 ok, 1 verification or performance gate failed, 2 bad input (a one-line error).",
             "", "Commands: " + ", ".join(f"[`{name}`](#lower-{name})" for name in cli.list_commands(top)),
             "", "```text", "$ lower --help", cli.get_help(top).rstrip(), "```"]
    for name in cli.list_commands(top):
        command = cli.get_command(top, name)
        ctx = click.Context(command, info_name=name, parent=top, terminal_width=WIDTH,
                            max_content_width=WIDTH)
        parts += ["", f"## lower {name}", "", "```text", f"$ lower {name} --help",
                  command.get_help(ctx).rstrip(), "```"]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.is_file() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python docs/make_cli_md.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} is current")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
