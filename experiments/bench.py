"""Benchmarks, each reporting a ratio against a baseline measured in the same run."""

from __future__ import annotations

import resource
import time

import numpy as np

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
