"""Every ``ihub …`` command the README and the docs show is one the command line accepts.

Commands are taken from fenced code blocks and inline code spans of README.md and docs/**/*.md. Each is
parsed by the real parser (``ihub.cli.build_parser``); a ``simulate`` command's own options are checked
against that simulator's ``--help``, since each simulator parses its options itself.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ihub.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# A fence tagged ``text`` holds a diagram or output, not commands.
_FENCE = re.compile(r"^```(?P<info>[^\n]*)$(?P<body>.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`(ihub [^`]+)`")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every ``ihub`` command shown, alternatives (``a|b``) expanded."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(REPO))
        for block in _FENCE.finditer(text):
            if block["info"].strip() == "text":
                continue
            for line in block["body"].splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("ihub ") or line == "ihub":
                    found.extend((where, command) for command in _expand(line.split(" #")[0].strip()))
        outside = _FENCE.sub("", text)
        for span in _INLINE.findall(outside):
            found.extend((where, command) for command in _expand(span.strip()))
    return sorted(set(found))


def _expand(command: str) -> list[str]:
    words = shlex.split(command)
    choices = [word.split("|") if "|" in word and not word.startswith("-") else [word] for word in words]
    return [shlex.join(option) for option in itertools.product(*choices)]


COMMANDS = documented_commands()


def test_the_docs_show_commands_at_all():
    shown = {command.split()[1] for _, command in COMMANDS if len(command.split()) > 1}
    assert shown >= {"simulate", "collect", "browse", "demo", "query"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_the_cli_accepts_every_documented_command(where, command):
    words = shlex.split(command)[1:]
    parser = build_parser()
    if len(words) == 1 and not words[0].startswith("-"):
        # A command named in prose (`ihub query`): it must exist; its arguments are shown elsewhere.
        assert words[0] in _subcommands(parser), f"{where}: the CLI has no command `{command}`"
        return
    try:
        args = parser.parse_args(words)
    except SystemExit as stop:
        # --help exits 0; anything else is the parser refusing the command.
        assert stop.code == 0, f"{where}: the CLI refuses `{command}`"
        return
    if args.command == "simulate" and args.options:
        _simulator_accepts(where, command, args.source, args.options)


def _simulator_accepts(where: str, command: str, source: str, options: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ihub.cli", "simulate", source, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for option in (word.split("=")[0] for word in options if word.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(option)}\b", done.stdout), (
            f"{where}: `ihub simulate {source}` has no option {option} (from `{command}`)"
        )
