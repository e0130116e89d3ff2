"""Griffe extension: read the package's reST-flavoured numpy docstrings as Markdown.

The docstrings are written for readers of the source: ``.. math::`` blocks, ``:func:`` roles
and free paragraphs after a ``Parameters`` section. Before griffe parses a docstring this
extension rewrites, in the documentation build only (the sources are untouched):

* ``.. math:: ...`` blocks (and their indented continuation lines) into ``$$ ... $$`` blocks,
  ``:math:`x``` into ``$x$`` (rendered by ``pymdownx.arithmatex`` and MathJax);
* Sphinx roles such as ``:class:`~policyagg.result.Result``` into code spans;
* a paragraph that follows a numpy ``Parameters``/``Returns``/... section but is not an entry of
  it into a ``Notes`` section, so that griffe does not read its first word as a parameter.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`~?([^`]+)`")
INLINE_MATH = re.compile(r":math:`([^`]+)`")
MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
#: numpy sections whose body is a list of entries ``name : type`` with indented descriptions.
ITEM_SECTIONS = {"parameters", "other parameters", "returns", "yields", "receives", "raises", "warns", "attributes"}
#: An entry line of such a section: ``name``, ``a, b``, ``*args`` or ``name : type``; a bare
#: type (``Result``, ``array (S, A)``) for returns.
ENTRY = re.compile(r"^\*{0,2}[A-Za-z_][\w.]*(\s*,\s*\*{0,2}[A-Za-z_][\w.]*)*(\s+:\s+.*|\s*\(.*\)|\s+\w+\s*\(.*\))?$")


def _tex(text: str) -> str:
    """ASCII decorations used in the sources' maths: ``F~_i`` (tilde) and ``F^_i`` (hat)."""
    text = re.sub(r"([A-Za-z])~_", r"\\tilde{\1}_", text)
    return re.sub(r"([A-Za-z])\^_", r"\\hat{\1}_", text)


def convert_math(lines: list[str]) -> list[str]:
    """``.. math::`` directives -> ``$$`` blocks at the directive's indentation."""
    out: list[str] = []
    k = 0
    while k < len(lines):
        match = MATH_DIRECTIVE.match(lines[k])
        if not match:
            out.append(lines[k])
            k += 1
            continue
        indent, first = match.group(1), match.group(2)
        body = [first] if first.strip() else []
        k += 1
        while k < len(lines) and (
            not lines[k].strip()
            and not body
            or lines[k].strip()
            and len(lines[k]) - len(lines[k].lstrip()) > len(indent)
        ):
            if lines[k].strip():
                body.append(lines[k].strip())
            k += 1
        if out and out[-1].strip():
            out.append("")
        out += [indent + "$$", *(indent + _tex(line) for line in body), indent + "$$"]
        if k < len(lines) and lines[k].strip():
            out.append("")
    return out


def close_item_sections(lines: list[str]) -> list[str]:
    """Start a ``Notes`` section at the first free paragraph after an item section's entries."""
    out: list[str] = []
    section = None
    for k, line in enumerate(lines):
        nxt = lines[k + 1] if k + 1 < len(lines) else ""
        if line.strip() and set(nxt.strip()) == {"-"} and not line.startswith(" "):
            section = line.strip().lower()
        elif (
            section in ITEM_SECTIONS
            and line.strip()
            and not line.startswith(" ")
            and out
            and not out[-1].strip()
            and not ENTRY.match(line.strip())
            and set(line.strip()) != {"-"}
        ):
            out += ["Notes", "-----"]
            section = "notes"
        out.append(line)
    return out


def to_markdown(text: str) -> str:
    """The whole rewrite of one docstring (see the module docstring)."""
    lines = convert_math(text.splitlines())
    text = "\n".join(close_item_sections(lines))
    text = INLINE_MATH.sub(lambda m: "$" + _tex(m.group(1)) + "$", text)
    return ROLE.sub(_role, text)


def _role(match: re.Match) -> str:
    """``:class:`~a.b.C``` -> ```C```; ``:class:`a.b.C``` -> ```a.b.C```."""
    target = match.group(1)
    return f"`{target.rsplit('.', 1)[-1] if '~' in match.group(0) else target}`"


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring with :func:`to_markdown` as soon as griffe has read it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
