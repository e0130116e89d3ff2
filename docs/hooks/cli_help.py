"""MkDocs hook: write the command line's ``--help`` texts into the page that asks for them.

A page line ``<!-- policyagg-cli-help -->`` is replaced by the help of ``policyagg`` and of
each of its subcommands, taken from the parser itself at build time, so the page cannot
fall behind the code.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- policyagg-cli-help -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_markdown() -> str:
    """``policyagg --help`` and ``policyagg <command> --help``, one section each."""
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it for a stable page
    from policyagg.experiments.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    for name, sub in _subparsers(parser).items():
        parts += ["", f"### `policyagg {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, help_markdown())
