"""The axiom audit: every rule audited, the loss-based rules' theorem-predicted failures found,
counterexamples re-verified from their JSON files, lotteries and unrunnable rules handled."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import bandit

from policyagg import solvers
from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.experiments import axioms
from policyagg.experiments.cli import main
from policyagg.lottery import single_policy
from policyagg.solvers import rank


@pytest.fixture(scope="module")
def default_audit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    return axioms.audit(folder=folder), folder


def test_default_audit_covers_every_rule_and_axiom(default_audit):
    report, folder = default_audit
    print(f"default audit: {report.seconds:.1f} s")
    rules = {c.rule for c in report.cells}
    assert rules == set(solvers.RULES) | set(rank.RANK_RULES)
    for rule in rules:
        assert {c.axiom for c in report.cells if c.rule == rule} == set(axioms.AXIOMS)
    rows = list(csv.DictReader(io.StringIO((folder / "axioms.csv").read_text())))
    assert len(rows) == len(report.cells)
    table = (folder / "axioms.md").read_text()
    assert all(f"| {rule} |" in table for rule in rules)


def test_loss_based_rules_fail_pareto_and_pmc(default_audit):
    report, folder = default_audit
    for rule, axiom in axioms.KNOWN_FAILURES:
        cell = report.cell(rule, axiom)
        assert cell.status == "fails", (rule, axiom)
        assert (folder / cell.counterexample).exists()


def test_leximax_copeland_keeps_its_theorem(default_audit):
    report, _ = default_audit
    for axiom in ("pareto", "pmc", "majority", "monotonicity"):
        cell = report.cell("leximax_copeland", axiom)
        assert cell.status == "holds" and cell.tried > 0, cell


def test_no_theorem_is_contradicted(default_audit):
    report, _ = default_audit
    assert [(c.rule, c.axiom, c.detail) for c in report.bugs] == []


def test_counterexamples_reverify_when_loaded(default_audit):
    report, folder = default_audit
    files = [c.counterexample for c in report.cells if c.status == "fails"]
    assert files
    for name in files:
        assert axioms.verify_counterexample(folder / name) is not None, name


def test_rank_counterexample_checked_independently(default_audit):
    """The saved Pareto counterexample of Bradley-Terry, read by hand: a pair every voter ranks
    one way, and the rule's ranking the other way."""
    _, folder = default_audit
    data = json.loads((folder / "bradley_terry-pareto.json").read_text())
    R = np.array(data["instance"]["rankings"])
    out = rank.bradley_terry(rank.rank_profile(data["instance"]["features"], R, data["instance"]["weights"]))
    pos = {int(c): i for i, c in enumerate(out.ranking)}
    m = R.shape[1]
    broken = [
        (a, b)
        for a in range(m)
        for b in range(m)
        if a != b and all(list(r).index(a) < list(r).index(b) for r in R) and pos[a] > pos[b]
    ]
    assert broken


def test_pareto_gap_on_a_bandit():
    problem = bandit()  # agent 0 likes action 0, agent 1 action 1: every mixture is Pareto optimal
    assert axioms.pareto_gap(problem, np.array([0.5, 0.5])) == pytest.approx(0.0, abs=1e-9)
    same = bandit(rewards=((1.0, 0.0), (2.0, 0.0)))  # both like action 0: action 1 is dominated
    assert axioms.pareto_gap(same, np.array([0.0, 1.0])) == pytest.approx(2.0, abs=1e-9)


def test_lottery_rules_are_audited_ex_ante_and_broken_rules_skipped(tmp_path):
    def lottery_dictator(call):
        """Agent 0's best policy, as a one-point lottery."""
        return single_policy(call.finish(call.maximize(call.problem.reward_matrix[0])))

    def broken(call):
        """Always refuses."""
        raise InvalidProblemError("`needed` must be given")

    with solvers.registered_rule("lottery_dictator", lottery_dictator), solvers.registered_rule("broken", broken):
        report = axioms.audit(["lottery_dictator", "broken"], policy_instances_count=2, folder=tmp_path)
    assert report.cell("lottery_dictator", "pareto").status == "holds"
    assert report.cell("lottery_dictator", "anonymity").status == "fails"  # a dictator is not anonymous
    assert report.cell("broken", "pareto").status == "skipped"
    assert "`needed` must be given" in report.cell("broken", "pareto").detail


def test_bad_requests_and_files(tmp_path):
    with pytest.raises(InvalidProblemError, match="unknown rule"):
        axioms.audit(["no_such_rule"])
    with pytest.raises(InvalidProblemError, match="unknown axiom"):
        axioms.audit(["utilitarian"], axioms=["fairness"])
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(CorruptFileError, match="not a policyagg axiom counterexample"):
        axioms.verify_counterexample(bad)


def test_command_line(tmp_path, capsys):
    code = main(
        ["axioms", "--rules", "leximax_copeland,squared_hinge", "--rank-instances", "6", "--screen", "0"]
        + ["--out", str(tmp_path)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| leximax_copeland |" in out
    assert (tmp_path / "axioms.md").exists() and (tmp_path / "axioms.csv").exists()
