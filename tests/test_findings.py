"""The verdict rules and intervals of kdbook.findings, and the findings file against
the stored results it is computed from."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kdbook import findings as fd

ROOT = Path(__file__).resolve().parents[1]


def run_result(seed: int, acc: float, key: str = "k") -> dict:
    return {"key": f"{key}{seed}", "name": key, "metrics": {"test_acc": acc / 100},
            "spec": {"train": {"seed": seed, "method": "ce"}}}


def test_t_interval_uses_the_t_quantile_not_the_normal_one():
    mean, (low, high) = fd.t_interval([1.0, 2.0, 3.0])
    # sd = 1, n = 3, t_{0.975, 2} = 4.302652...: half width 4.302652 / sqrt(3)
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)
    assert mean - low == pytest.approx(high - mean, rel=1e-12)


def test_one_value_has_an_unbounded_interval():
    assert fd.t_interval([0.5])[1] == (-math.inf, math.inf)


def test_pairing_removes_the_noise_the_arms_share():
    a = [70.0, 73.0, 68.0]
    b = [x + 1.0 + d for x, d in zip(a, (0.1, -0.1, 0.0))]
    est, ci = fd.paired(a, b)
    assert est == pytest.approx(1.0)
    assert ci[0] > 0  # paired: clearly positive


@pytest.mark.parametrize("ci, n, sign, expected", [
    ((0.5, 2.0), 3, 1, "supported"),
    ((0.5, 2.0), 3, -1, "contradicted"),
    ((-2.0, -0.5), 3, -1, "supported"),
    ((-0.5, 2.0), 5, 1, "inconclusive"),
    ((0.5, 2.0), 2, 1, "exploratory"),
    ((5.0, 9.0), 1, 1, "exploratory"),
])
def test_verdict_rules(ci, n, sign, expected):
    assert fd.verdict(ci, n, sign) == expected


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="predicted_sign"):
        fd.verdict((0, 1), 3, 0)
    with pytest.raises(ValueError, match="as many runs"):
        fd.paired([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="verdict must be one of"):
        fd.Finding("x", "c", "claim", 0.0, (0.0, 0.0), 3, "maybe", "m", ())


def test_compare_pairs_by_seed_and_refuses_mismatched_seeds():
    a = [run_result(s, acc, "a") for s, acc in ((0, 70.0), (1, 71.0), (2, 69.0))]
    b = [run_result(s, acc, "b") for s, acc in ((2, 71.5), (0, 72.0), (1, 73.1))]  # shuffled order
    found = fd.compare("x", "c", "claim", a, b)
    assert found.estimate == pytest.approx((2.0 + 2.1 + 2.5) / 3)
    assert found.verdict == "supported" and found.n_seeds == 3
    with pytest.raises(ValueError, match="share their seeds"):
        fd.compare("x", "c", "claim", a, b[:2] + [run_result(7, 70.0, "b")])


def test_single_seed_comparisons_are_exploratory_however_large():
    found = fd.single_seed("x", "c", "claim", [run_result(0, 50.0)], [run_result(0, 90.0)], (0.5, 10))
    assert found.verdict == "exploratory" and found.ci[0] > 0


def test_summary_names_the_replicates_a_finding_pairs():
    finding = fd.Finding("x", "c", "claim", 1.0, (0.5, 1.5), 3, "supported", "paired, t interval", ())
    assert finding.summary() == "+1.00 points, 95% CI [+0.50, +1.50], 3 seeds: supported"
    by_chain = dataclasses.replace(finding, method="paired by chain, t interval")
    assert by_chain.summary().endswith("3 chains: supported")
    one = dataclasses.replace(finding, n_seeds=1, verdict="exploratory")
    assert one.summary().endswith("1 seed: exploratory")


def test_pooled_sd():
    sd, dof = fd.pooled_sd([[1.0, 2.0, 3.0], [10.0, 12.0]])
    assert dof == 3
    assert sd == pytest.approx(math.sqrt((2 * 1.0 + 1 * 2.0) / 3))


def test_findings_file_follows_the_rules():
    entries = json.loads((ROOT / "results" / "findings.json").read_text())
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids)), "each finding is registered once"
    for e in entries:
        assert set(e) >= {"id", "chapter", "claim", "estimate", "ci", "n_seeds", "verdict"}
        assert e["verdict"] in fd.VERDICTS
        assert e["ci"][0] <= e["estimate"] <= e["ci"][1]
        if e["n_seeds"] < fd.MIN_SEEDS:
            assert e["verdict"] in ("exploratory", "inconclusive"), e["id"]
    assert "kd-gain" in ids


def test_findings_file_and_page_match_the_stored_results():
    """`python -m kdbook.findings --check` recomputes every finding from results/."""
    # The command sets the full profile itself, whatever the test configuration's.
    done = subprocess.run([sys.executable, "-m", "kdbook.findings", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_finding_whose_runs_are_missing_is_listed_as_pending(monkeypatch):
    runs = {0: 70.0, 1: 71.0, 2: 72.0}

    def fake(seed, acc):
        return {"key": f"k{seed}{acc}", "spec": {"train": {"seed": seed}}, "metrics": {"test_acc": acc / 100}}

    def ran(get):
        return fd.compare("ran", "c", "claim", [fake(s, a) for s, a in runs.items()],
                          [fake(s, a + 1) for s, a in runs.items()])

    def not_run(get):
        raise fd.MissingRun("no stored result")

    monkeypatch.setattr(fd, "REGISTRY", {"ran": ran, "not-run": not_run})
    pending: list[str] = []
    found = fd.evaluate_all(lambda spec: None, pending)
    assert [f.id for f in found] == ["ran"] and pending == ["not-run"]
    assert "Registered but not yet run" in fd.to_markdown(found, pending) and "`not-run`" in fd.to_markdown(found, pending)
    with pytest.raises(fd.MissingRun):
        fd.evaluate_all(lambda spec: None)  # without a pending list, a missing run is an error


@pytest.mark.parametrize("id, variant, generation", [("born-again", "ban", 1), ("born-again-labels-gen3", "ban_labels", 3)])
def test_born_again_findings_pair_each_generation_with_its_own_chains_generation_0(id, variant, generation):
    from kdbook import experiments
    plan = experiments.plan_born_again()
    chains = len(plan["generation_0"])
    # Generation 0 of chain c at 60 + 5c; a descendant at its chain's generation 0 + (g + c) / 10:
    # paired by chain, the differences are (g + c) / 10; paired wrongly, they would carry 5-point steps.
    accs = {s.name: 60.0 + 5 * c for c, s in enumerate(plan["generation_0"])}
    for v in experiments.BAN_ALPHAS:
        for i, s in enumerate(plan[v]):
            c, g = divmod(i, experiments.BAN_GENERATIONS)
            accs[s.name] = 60.0 + 5 * c + (g + 1 + c) / 10
    found = fd.evaluate(id, lambda spec: {"key": spec.name, "metrics": {"test_acc": accs[spec.name] / 100}})
    expected = [(generation + c) / 10 for c in range(chains)]
    assert found.estimate == pytest.approx(sum(expected) / chains)
    assert found.n_seeds == chains and found.method == "paired by chain, t interval"
    names = [n for n in found.evidence if f"generation {generation}," in n]
    assert len(names) == chains and all(("BAN+L" in n) == (variant == "ban_labels") for n in names)
