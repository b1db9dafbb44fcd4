"""docs/cli.md is generated from the commands' --help (docs/make_cli_md.py): the checked-in file must be what
the CLI says now. After changing an option or a help text: python docs/make_cli_md.py."""

import pytest

from .conftest import ROOT, run_script

pytestmark = [pytest.mark.unit]


def test_cli_reference_is_current():
    done = run_script(ROOT / "docs" / "make_cli_md.py", "--check")
    assert done.returncode == 0, done.stderr + " (run: python docs/make_cli_md.py)"


def test_cli_reference_covers_every_command_and_option():
    from lowering.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()
    for name, command in cli.commands.items():
        assert f"## lower {name}\n" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in text, (name, opt)
