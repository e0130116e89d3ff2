"""Benchmarks, each reporting a ratio against a baseline measured in the same run."""

from __future__ import annotations

import resource
import time

import numpy as np

import solvers
from envs.attention import AttentionModel, one_agent_per_site
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, sample_policy_returns


def per_sample_returns(problem: Problem, policies: np.ndarray) -> np.ndarray:
    """The straightforward computation, one policy at a time: dense ``P_pi``, one solve."""
    mdp = problem.mdp
    P, S = mdp.P_dense, mdp.n_states
    out = np.empty((len(policies), problem.n_agents))
    for k, policy in enumerate(policies):
        P_pi = np.einsum("sa,sat->st", policy, P)
        if mdp.gamma < 1:
            mu = np.linalg.solve(np.eye(S) - mdp.gamma * P_pi.T, (1 - mdp.gamma) * mdp.rho)
        else:
            system = np.eye(S) - P_pi.T
            system[-1] = 1.0
            mu = np.linalg.solve(system, np.eye(S)[-1])
        out[k] = np.einsum("sa,isa->i", mu[:, None] * policy, problem.rewards)
    return out


def bench_sampler(*, n_sites=5, n_phases=3, n_samples=10_000, baseline_samples=500, workers=None, seed=0) -> dict:
    """Policies per second of each sampler method vs :func:`per_sample_returns`, same run."""
    model = AttentionModel(n_sites, n_phases, seed=seed)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(n_sites, seed)))
    policies = PolicySampler(problem).draw_policies(np.random.default_rng(seed), baseline_samples)

    start = time.perf_counter()
    baseline = per_sample_returns(problem, policies)
    baseline_rate = baseline_samples / (time.perf_counter() - start)

    rates, differences = {}, {}
    for method in ("dense", "krylov"):
        sample_policy_returns(problem, 200, rng=seed, method=method, workers=workers, progress=False)  # warm-up
        start = time.perf_counter()
        sample_policy_returns(problem, n_samples, rng=seed, method=method, workers=workers, progress=False)
        rates[method] = n_samples / (time.perf_counter() - start)
        returns = PolicySampler(problem, method=method).returns(policies)
        differences[method] = float(np.abs(returns - baseline).max())
    return {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}, A={problem.mdp.n_actions})",
        "samples": n_samples,
        "baseline_per_s": baseline_rate,
        "per_s": rates,
        "max_abs_difference": differences,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


#: (label, rule, options) timed by :func:`bench_rules`; rules not registered are skipped.
RULE_CASES = (
    ("max-quantile", "max_quantile", {}),
    ("0.9-approval", "approval", {"alpha": 0.9}),
    ("borda LP", "borda", {"solver": "lp", "fallback": "milp"}),
    ("borda MILP K=32", "borda", {"solver": "milp", "breakpoints": 32}),
    ("PVC", "pvc", {}),
    ("egalitarian", "egalitarian", {"normalize": True}),
    ("nash welfare", "nash_welfare", {}),
    ("generalized gini", "generalized_gini", {}),
    ("random dictator", "random_dictator", {}),
)


def bench_rules(*, n_sites=5, n_phases=3, n_agents=10, n_samples=100_000, seed=0, cases=RULE_CASES) -> dict:
    """Seconds per rule on the attention model (experiment b), each also as a multiple of one
    utilitarian LP over the same polytope solved in the same run (the baseline)."""
    from experiments.compare import attention_problem

    problem = solvers.with_ranges(attention_problem("b", n_sites=n_sites, n_phases=n_phases, n_agents=n_agents, seed=seed))
    samples = sample_policy_returns(problem, n_samples, rng=seed, progress=False)
    start = time.perf_counter()
    baseline_solves = solvers.utilitarian(problem, normalize=True).diagnostics["n_solves"]
    baseline = time.perf_counter() - start
    timings = {}
    for label, name, options in cases:
        if name not in solvers.RULES:
            continue
        start = time.perf_counter()
        result = solvers.get_rule(name)(problem, samples, **options)
        timings[label] = {"seconds": time.perf_counter() - start, "solves": result.diagnostics.get("n_solves"),
                          "min_rank": result.min_rank, "gini": result.gini}
    return {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}), {problem.n_agents} agents, {n_samples} samples",
        "baseline_seconds": baseline,
        "baseline_solves": baseline_solves,
        "rules": timings,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
