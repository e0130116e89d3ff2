"""``policyagg bench convert``: how fast Gymnasium environments become tabular models (issue 15, item 5).

Each case is converted by :func:`policyagg.envs.tabular.from_gymnasium` in a forked process of
its own (:func:`~policyagg.experiments.bench_agents.in_fresh_process`), so its peak RSS is the
conversion's plus what the process inherited (both are given). The baseline, measured in the
same process just before, is the floor of any conversion that steps the environment: a plain
Gymnasium loop of ``S x A`` steps (``S`` the model's states, ``A`` its actions; random actions,
``reset`` when an episode ends) on the environment as made, so

    ratio = conversion seconds / floor seconds,   states/s = S / seconds.

Benchmarks print; they never assert. Other jobs on the machine slow every figure, so each row
carries the load average.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policyagg.experiments.bench import cpu_seconds, peak_rss_mb

#: ``(environment id, route)`` or ``(environment id, route, make keywords)`` converted by default;
#: four-room (about 594k states) and Taxi with a fickle passenger (sampled, about a minute) only with ``full``.
Case = tuple[str, str] | tuple[str, str, dict[str, Any]]
CASES: tuple[Case, ...] = (
    ("deep-sea-treasure-v0", "auto"),
    ("resource-gathering-v0", "auto"),
    ("FrozenLake-v1", "auto"),
    ("FrozenLake-v1", "enumerate"),
    ("Taxi-v4", "auto"),
)
FULL_CASES: tuple[Case, ...] = (("four-room-v0", "auto"), ("Taxi-v4", "auto", {"fickle_passenger": True}))
#: Discount of every converted model, and the state limit (four-room needs more than the default).
GAMMA = 0.99
MAX_STATES = 1_000_000
#: A conversion still running after this many seconds is killed and reported as such.
KILL_AFTER_SECONDS = 1800.0

COLUMNS = (
    "env",
    "route",
    "states",
    "actions",
    "exact",
    "seconds",
    "cpu_seconds",
    "states_per_s",
    "floor_seconds",
    "ratio",
    "peak_rss_mb",
    "own_rss_mb",
    "load",
    "status",
)


def floor_seconds(env_id: str, steps: int, seed: int = 0, options: dict[str, Any] | None = None) -> float:
    """Seconds of a plain loop of ``steps`` random-action steps on ``make_env(env_id, **options)`` (resets when an episode ends)."""
    from policyagg.envs.tabular import make_env

    env = make_env(env_id, **(options or {}))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    started = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return time.perf_counter() - started


def case_label(env_id: str, options: dict[str, Any] | None = None) -> str:
    """``env_id``, followed by its make keywords if any (``Taxi-v4 fickle_passenger=True``)."""
    return " ".join([env_id, *(f"{k}={v!r}" for k, v in (options or {}).items())])


def convert(env: Any, route: str = "auto", seed: int = 0) -> Any:
    """The benchmarks' conversion of ``env``: :func:`~policyagg.envs.tabular.from_gymnasium` at
    :data:`GAMMA` and :data:`MAX_STATES`, its warnings silenced (the model's info says how exact it is)."""
    from policyagg.envs.tabular import from_gymnasium

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return from_gymnasium(env, gamma=GAMMA, route=route, max_states=MAX_STATES, rng=seed)


def convert_case(env_id: str, route: str, seed: int = 0, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One conversion, timed, with its floor (run in the calling process; see :func:`bench_convert`)."""
    from policyagg.envs.tabular import make_env

    start_rss = peak_rss_mb()
    env = make_env(env_id, **(options or {}))
    wall, cpu = time.perf_counter(), cpu_seconds()
    model = convert(env, route, seed)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    peak = peak_rss_mb()
    S, A = model.mdp.n_states, model.mdp.n_actions
    floor = floor_seconds(env_id, S * A, seed, options)
    return {
        "env": case_label(env_id, options),
        "route": model.route,
        "states": S,
        "actions": A,
        "exact": bool(model.info.get("exact", False)),
        "seconds": wall,
        "cpu_seconds": cpu,
        "states_per_s": S / wall if wall > 0 else float("inf"),
        "floor_seconds": floor,
        "ratio": wall / floor if floor > 0 else float("inf"),
        "peak_rss_mb": peak,
        "own_rss_mb": peak - start_rss,
        "load": float(os.getloadavg()[0]),
        "status": "ok",
    }


def bench_convert(
    *,
    full: bool = False,
    cases: Sequence[Case] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rows of :data:`COLUMNS`, one per case (default :data:`CASES`, plus :data:`FULL_CASES` with ``full``)."""
    from policyagg.experiments.bench_agents import in_fresh_process

    todo = list(cases if cases is not None else CASES + (FULL_CASES if full else ()))
    rows = []
    for env_id, route, *more in todo:
        options = more[0] if more else None
        row = in_fresh_process(
            lambda: convert_case(env_id, route, seed, options),  # noqa: B023 (run at once)
            kill_after_seconds=KILL_AFTER_SECONDS,
        )
        if "env" not in row:  # the process failed or was killed: what it said, in the same columns
            row = {"env": case_label(env_id, options), "route": route, "load": float(os.getloadavg()[0]), **row}
        rows.append(row)
        if progress is not None:
            progress(format_row(row))
    return {"rows": rows, "markdown": format_convert(rows), "seed": seed}


def _cell(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return format(value, spec) if spec else str(value)


_FORMATS = {
    "seconds": ".2f",
    "cpu_seconds": ".2f",
    "states_per_s": ",.0f",
    "floor_seconds": ".3f",
    "ratio": ".1f",
    "peak_rss_mb": ".0f",
    "own_rss_mb": ".0f",
    "load": ".1f",
}


def format_row(row: dict[str, Any]) -> str:
    """One markdown table row of :data:`COLUMNS`."""
    return "| " + " | ".join(_cell(row, key, _FORMATS.get(key, "")) for key in COLUMNS) + " |"


def format_convert(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table (header and rows); ``ratio`` is conversion seconds / floor seconds."""
    header = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    return "\n".join([header, rule, *(format_row(row) for row in rows)])
