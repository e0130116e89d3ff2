"""MkDocs hook: write the command line's ``--help`` texts into the page that asks for them.

A page line ``<!-- policyagg-cli-help -->`` is replaced by the help of ``policyagg`` and of
each of its subcommands, taken from the parser itself at build time, so the page cannot
fall behind the code. The help comes from the *installed* package: the checkout's root is
taken off ``sys.path`` first (``python -m mkdocs`` puts the working directory there, where
the folder ``policyagg/`` would shadow the installation without its subpackages).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MARKER = "<!-- policyagg-cli-help -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def drop_from_path(root: Path) -> None:
    """Remove ``root`` (and the working directory, when it is ``root``) from ``sys.path``."""
    sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != root]


def help_markdown() -> str:
    """``policyagg --help`` and ``policyagg <command> --help``, one section each."""
    from policyagg.experiments.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it for a stable page
    try:
        parser = build_parser()
        parts = ["```text", parser.format_help().rstrip(), "```"]
        for name, sub in _subparsers(parser).items():
            parts += ["", f"### `policyagg {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(parts)


def on_config(config):
    drop_from_path(Path(config.config_file_path).resolve().parent)
    return config


def on_page_markdown(markdown: str, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, help_markdown())
