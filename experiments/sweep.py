"""Sweeps: one base configuration, a grid over any of its keys, one run per grid point.

A sweep file (TOML)::

    name = "alpha-sweep"
    base = "attention-a-paper"         # a shipped configuration's name, or a TOML path
                                        # (relative to this file)
    output = "results/alpha-sweep"     # one subfolder per grid point, plus the combined table

    [set]                               # optional: keys changed at every point
    "measure.samples" = 10000
    rules = [{ label = "approval", rule = "approval", options = { alpha = 0.9 } }]

    [grid]                              # the grid: every combination of these values
    "rules.approval.alpha" = [0.5, 0.8, 0.9]
    "agents.n_agents" = [5, 10]

Keys are dotted paths into the base configuration (``environment.kwargs.n_sites``,
``measure.name``, ``agents``, ``seeds``, ...); ``rules.<label or rule name>.<option>`` sets an
option of the one rule with that label (or, failing that, that rule name). A ``seeds`` grid
value may be one seed or a list of seeds. Every grid point is validated when the sweep is read
(:func:`load_sweep`), so a bad key or value fails at once with an :class:`InvalidConfigError`
naming it and the point.

Each point runs as an ordinary experiment (:func:`policyagg.experiments.run.run_config`) in
``<output>/<point>``, the point's name made of its grid values (``alpha=0.9``; stable across
runs), so a stopped sweep resumes: finished points are read back, not run again. Points whose
seed gives the same MDP and sample a reward-free measure alike share their sampled policies
(as :func:`~policyagg.experiments.run.run_configs`). The sweep writes ``sweep.csv`` and
``sweep.md`` (one row per point and rule: the grid values and the fairness figures, mean and
s.e. over seeds) and, for a numeric grid key, ``sweep-<key>.png/.svg``: that key against the
Gini index and the minimum normalised return, one line per rule (the paper's alpha sweep).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from policyagg.experiments.checkpoints import output_lock
from policyagg.experiments.config import CONFIGS, ExperimentConfig, InvalidConfigError, parse_config
from policyagg.experiments.tables import COLUMNS, display_label
from policyagg.io import atomic_write_bytes
from policyagg.parallel import Executor, resolve_executor

_TOP_KEYS = ("name", "output", "seeds", "environment", "agents", "measure", "rules")
_SWEEP_KEYS = {"name", "base", "output", "set", "grid"}


@dataclass(frozen=True)
class GridPoint:
    """One run of a sweep: its name (the output subfolder), its grid values, its configuration."""

    name: str
    values: dict[str, Any]
    config: ExperimentConfig


@dataclass(frozen=True)
class Sweep:
    name: str
    output: Path
    keys: tuple[str, ...]
    points: tuple[GridPoint, ...]


def load_sweep(path, *, output=None) -> Sweep:
    """Read a sweep file and validate every grid point's configuration; ``output`` replaces
    the file's output folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfigError(f"{path}: not valid TOML: {exc}") from None
    except FileNotFoundError:
        raise InvalidConfigError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"{path}: cannot read the sweep file ({exc})") from None
    if output is not None:
        data["output"] = str(output)
    return parse_sweep(data, source=str(path), folder=path.parent)


def parse_sweep(data: dict, *, source: str = "sweep", folder: Path | None = None) -> Sweep:
    """Validate a sweep dict (see the module docstring) into a :class:`Sweep`; ``base`` may be
    a path (relative to ``folder``), a shipped configuration's name, or a configuration table."""
    if not isinstance(data, dict):
        raise InvalidConfigError(f"{source}: a sweep must be a table of keys")
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise InvalidConfigError(
            f"{source}: unknown key `{unknown[0]}`; a sweep has: " + ", ".join(f"`{k}`" for k in sorted(_SWEEP_KEYS))
        )
    base = _base(data.get("base"), source, folder or Path("."))
    name = data.get("name", base.get("name", "sweep"))
    if not isinstance(name, str) or not name:
        raise InvalidConfigError(f"{source}: `name` must be a non-empty string; got {name!r}")
    output = Path(data.get("output", f"results/{name}"))
    fixed = data.get("set", {})
    if not isinstance(fixed, dict):
        raise InvalidConfigError(f"{source}: `set` must be a table of dotted keys")
    for key, value in _flatten(fixed, lambda v: not isinstance(v, dict)).items():
        _assign(base, key, value, f"{source}: `set.{key}`")
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise InvalidConfigError(
            f'{source}: `[grid]` must be a table of dotted keys and value arrays, e.g. "rules.approval.alpha" = [0.8, 0.9]'
        )
    axes = _flatten(grid, lambda v: isinstance(v, list))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise InvalidConfigError(f"{source}: `grid.{key}` must be a non-empty array of values; got {values!r}")
    keys = tuple(axes)
    labels = _short_names(keys)
    points, names = [], set()
    for combination in itertools.product(*(axes[key] for key in keys)):
        values = dict(zip(keys, combination))
        point_name = "_".join(f"{labels[key]}={_value_text(value)}" for key, value in values.items())
        point_name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", point_name)
        if point_name in names:
            raise InvalidConfigError(
                f"{source}: two grid points are both named {point_name!r}; make the values distinct"
            )
        names.add(point_name)
        raw = copy.deepcopy(base)
        where = f"{source} [grid point {point_name}]"
        for key, value in values.items():
            _assign(raw, key, [value] if key == "seeds" and isinstance(value, int) else value, f"{where}: `grid.{key}`")
        raw["name"] = f"{name}-{point_name}"
        raw["output"] = str(output / point_name)
        points.append(GridPoint(point_name, values, parse_config(raw, source=where)))
    return Sweep(name, output, keys, tuple(points))


def _base(value, source: str, folder: Path) -> dict:
    if isinstance(value, dict):
        return copy.deepcopy(value)
    if not isinstance(value, str) or not value:
        raise InvalidConfigError(
            f"{source}: `base` must be a configuration: a TOML path, a shipped name such as "
            f"'attention-a-paper', or a table; got {value!r}"
        )
    candidates = [folder / value, CONFIGS / value, CONFIGS / f"{value}.toml"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        shipped = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.toml")))
        raise InvalidConfigError(
            f"{source}: `base` = {value!r} is neither a file nor a shipped configuration ({shipped})"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"{source}: `base` {path}: not valid TOML: {exc}") from None


def _flatten(table: dict, is_leaf, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": leaf}}`` -> ``{"a.b": leaf}``; TOML reads ``a.b = ...`` as nested tables."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not is_leaf(value):
            flat |= _flatten(value, is_leaf, dotted + ".")
        else:
            flat[dotted] = value
    return flat


def _assign(config: dict, key: str, value: Any, where: str) -> None:
    """Set the dotted ``key`` of a raw configuration to ``value`` (see the module docstring)."""
    parts = key.split(".")
    if parts[0] not in _TOP_KEYS:
        raise InvalidConfigError(
            f"{where}: unknown key {parts[0]!r}; a configuration's keys are: " + ", ".join(_TOP_KEYS)
        )
    if parts[0] == "rules" and len(parts) > 1:
        if len(parts) != 3:
            raise InvalidConfigError(f"{where}: a rule's key is `rules.<label or rule>.<option>`; got `{key}`")
        rule = _find_rule(config.get("rules"), parts[1], where)
        rule.setdefault("options", {})[parts[2]] = value
        return
    table = config
    for depth, part in enumerate(parts[:-1]):
        inner = table.setdefault(part, {})
        if not isinstance(inner, dict):
            raise InvalidConfigError(f"{where}: `{'.'.join(parts[: depth + 1])}` is not a table")
        table = inner
    table[parts[-1]] = copy.deepcopy(value)


def _find_rule(rules, name: str, where: str) -> dict:
    if not isinstance(rules, list):
        raise InvalidConfigError(f"{where}: the base configuration has no `rules` array")
    tables = [rule for rule in rules if isinstance(rule, dict)]
    for field in ("label", "rule"):
        found = [rule for rule in tables if rule.get(field, rule.get("rule")) == name]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidConfigError(
                f"{where}: {len(found)} rules have {field} {name!r}; give each a distinct `label` and use it"
            )
    labels = [str(rule.get("label", rule.get("rule"))) for rule in tables]
    raise InvalidConfigError(f"{where}: no rule is labelled or named {name!r}; the rules are: {', '.join(labels)}")


def _short_names(keys: tuple[str, ...]) -> dict[str, str]:
    """Each grid key's name in point names: its last part, or more parts where that is ambiguous."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for length in range(1, len(parts) + 1):
            short = ".".join(parts[-length:])
            if sum(other.endswith(short) for other in keys) == 1 and short not in ("name", "id", "kwargs"):
                break
        names[key] = short
    return names


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_value_text(v) for v in value)
    if isinstance(value, dict):
        return "+".join(f"{k}-{_value_text(v)}" for k, v in sorted(value.items()))
    return str(value).lower() if isinstance(value, bool) else str(value)


# --------------------------------------------------------------------------- running
def run_sweep(
    sweep: Sweep | str | Path,
    *,
    executor: Executor | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    figures: bool = True,
) -> dict[str, Any]:
    """Run every grid point not yet finished (on ``executor``; default a local pool of
    ``workers``), then write the combined table and figures. Returns ``{"rows", "files"}``."""
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    executor = resolve_executor(executor, workers)
    from policyagg.experiments.run import _share_samples, run_config

    configs = [point.config for point in sweep.points]
    bar = tqdm(total=len(configs), desc=f"sweep {sweep.name}: grid points", disable=progress is False, unit="point")
    runs = []
    with ExitStack() as locks, bar:
        for config in configs:
            locks.enter_context(output_lock(Path(config.output)))
        bar.set_postfix_str("sampling (shared by points with the same MDP)")
        built = _share_samples(configs, False, executor)
        for point, problems in zip(sweep.points, built):
            bar.set_postfix_str(point.name)
            runs.append(run_config(point.config, progress=False, figures=figures, executor=executor, problems=problems))
            bar.update()
    rows = sweep_rows(sweep, runs)
    out = sweep.output
    files = [
        atomic_write_bytes(out / "sweep.csv", _csv(sweep, rows).encode()),
        atomic_write_bytes(out / "sweep.md", _markdown(sweep, rows).encode()),
    ]
    if figures:
        for key in sweep.keys:
            if all(_is_number(point.values[key]) for point in sweep.points) and len(_axis(sweep, key)) > 1:
                files += sweep_figure(sweep, rows, key, out / f"sweep-{_short_names(sweep.keys)[key]}")
    return {"rows": rows, "files": files}


def sweep_rows(sweep: Sweep, runs) -> list[dict[str, Any]]:
    """One row per (grid point, rule): the point, its grid values, the rule's label and
    ``(mean, s.e.)`` over seeds of each fairness figure."""
    from policyagg.experiments.run import summarize

    rows = []
    for point, run in zip(sweep.points, runs):
        for label, figures in summarize(run.seeds).items():
            rows.append(
                {
                    "point": point.name,
                    **{key: point.values[key] for key in sweep.keys},
                    "rule": display_label(label, figures.get("options", {})),
                    **{column: figures[column] for column, _ in COLUMNS},
                    "seeds": len(run.seeds),
                }
            )
    return rows


def _csv(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    header = ["point", *sweep.keys, "rule", "seeds"]
    for column, _ in COLUMNS:
        header += [column, f"{column}_se"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [
            row["point"],
            *(json.dumps(row[key]) if isinstance(row[key], (list, dict)) else row[key] for key in sweep.keys),
        ]
        cells += [row["rule"], row["seeds"]]
        for column, _ in COLUMNS:
            cells += [repr(row[column][0]), repr(row[column][1])]
        writer.writerow(cells)
    return buffer.getvalue()


def _markdown(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    titles = [title for _, title in COLUMNS]
    lines = [
        f"# sweep {sweep.name}: {len(sweep.points)} grid point(s), mean ± s.e. over seeds",
        "",
        "| " + " | ".join([*sweep.keys, "rule", *titles]) + " |",
        "|" + "---|" * (len(sweep.keys) + 1 + len(titles)),
    ]
    for row in rows:
        cells = [_value_text(row[key]) for key in sweep.keys] + [row["rule"]]
        for column, _ in COLUMNS:
            mean, se = row[column]
            cells.append("–" if math.isnan(mean) else f"{mean:.3f}" + (f" ± {se:.3f}" if row["seeds"] > 1 else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _axis(sweep: Sweep, key: str) -> list:
    return sorted({point.values[key] for point in sweep.points})


def sweep_figure(sweep: Sweep, rows: list[dict[str, Any]], key: str, path) -> list[Path]:
    """``key`` against the Gini index and the minimum normalised return (mean ± s.e.), one
    line per rule and per combination of the other grid keys; PNG and SVG."""
    import matplotlib.pyplot as plt

    from policyagg.experiments.plots import _save, _style

    others = [k for k in sweep.keys if k != key]
    lines: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        extra = ", ".join(f"{k}={_value_text(row[k])}" for k in others)
        lines.setdefault(row["rule"] + (f" ({extra})" if extra else ""), []).append(row)
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
        for label, members in lines.items():
            members = sorted(members, key=lambda row: row[key])
            x = [row[key] for row in members]
            for ax, column in zip(axes, ("gini", "min_normalized")):
                mean = [row[column][0] for row in members]
                se = [row[column][1] for row in members]
                ax.errorbar(x, mean, yerr=se if any(se) else None, marker="o", markersize=3, capsize=2, label=label)
        axes[0].set_ylabel("Gini index of normalised returns (lower is fairer)")
        axes[1].set_ylabel("minimum normalised return")
        for ax in axes:
            ax.set_xlabel(key)
        axes[1].legend(fontsize="small", loc="best")
        fig.suptitle(f"sweep {sweep.name}: {key}")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
