"""Reference plans against the hand-checked gold set (40 commits of click and commander, see gold/README.md)."""

from pathlib import Path

import pytest

from distill_assets.plans.gold import load_gold, reference_plans_for_commits, score_plans

GOLD = Path(__file__).resolve().parent / "gold"


@pytest.fixture(scope="module")
def scores(real_repo):
    out = {}
    for name in ("click", "commander"):
        gold = load_gold(GOLD / f"{name}.yaml")
        shas = [c["sha"] for c in gold["commits"]]
        plans = reference_plans_for_commits(real_repo(name), shas, name)
        assert set(plans) == set(shas), "every gold commit gets a reference plan"
        out[name] = score_plans(plans, gold["commits"])
    return out


def test_the_gold_set_is_large_enough_and_well_formed():
    commits = [c for name in ("click", "commander") for c in load_gold(GOLD / f"{name}.yaml")["commits"]]
    assert len(commits) >= 30
    for c in commits:
        listed = {f"{p}:{s}" for p, syms in c["files"].items() for s in (syms or {})}
        for e in c.get("edges") or []:
            a, b = e.split(" -> ")
            assert a in listed and b in listed, (c["sha"], e)


@pytest.mark.parametrize("name", ["click", "commander"])
def test_files_and_symbols_match_the_gold_set(scores, name):
    s = scores[name]
    assert s.files.precision == 1.0 and s.files.recall == 1.0, s.misses
    assert s.symbols.precision >= 0.95 and s.symbols.recall >= 0.95, s.misses
    assert s.actions_right / s.actions_total >= 0.95, s.misses


def test_edges_match_the_gold_set(scores):
    both = scores["click"].edges.tp + scores["commander"].edges.tp
    fp = scores["click"].edges.fp + scores["commander"].edges.fp
    fn = scores["click"].edges.fn + scores["commander"].edges.fn
    precision, recall = both / (both + fp), both / (both + fn)
    misses = scores["click"].misses + scores["commander"].misses
    assert precision >= 0.85, misses
    assert recall >= 0.8, misses
    for name in ("click", "commander"):
        assert scores[name].edges.precision >= 0.8 and scores[name].edges.recall >= 0.7, scores[name].misses
