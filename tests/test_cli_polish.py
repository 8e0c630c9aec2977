"""Issue 13 item 8: the command line's polish (help, plurals, zones, widths, pipes, JSON)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from commhistory.cli import build_parser, main


def _walk(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def test_every_command_has_a_description_and_every_option_help() -> None:
    missing: list[str] = []
    for name, parser in _walk(build_parser(), "commhistory"):
        if not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{name} {choice.dest}: no help line")
                continue
            if not action.help:
                label = "/".join(action.option_strings) or action.dest
                missing.append(f"{name} {label}: no help")
    assert missing == []
