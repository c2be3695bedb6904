"""Paired comparisons of two modes on the same items (tflow/tools/stats.py, evaluate's `paired` section)."""
from __future__ import annotations

import pytest

from tflow.tools.evaluate import comparisons, format_table
from tflow.tools.stats import paired


def test_mcnemar_counts_only_the_discordant_items_and_tests_them_at_one_half():
    a = [True] * 10 + [True] * 30 + [False] * 60
    b = [False] * 10 + [True] * 30 + [False] * 60  # A right and B wrong on 10 items, never the reverse
    got = paired(a, b)
    assert (got["a_only"], got["b_only"], got["n"]) == (10, 0, 100)
    assert got["difference"] == pytest.approx(0.10)
    assert got["mcnemar_p"] == pytest.approx(2 * 0.5**10)  # two-sided exact binomial test of 10 of 10
    low, high = got["difference_ci95"]
    assert 0 < low <= 0.10 <= high  # every resample has A >= B: the interval excludes zero


def test_a_mode_against_itself_differs_by_exactly_nothing():
    a = [i % 3 == 0 for i in range(60)]
    assert paired(a, a) == {"difference": 0.0, "difference_ci95": [0.0, 0.0], "a_only": 0, "b_only": 0,
                            "mcnemar_p": 1.0, "n": 60}


def test_the_paired_interval_is_seeded_and_holds_the_difference():
    a = [i % 2 == 0 for i in range(200)]
    b = [i % 3 == 0 for i in range(200)]
    first, again = paired(a, b, seed=4), paired(a, b, seed=4)
    assert first == again
    low, high = first["difference_ci95"]
    assert low < first["difference"] < high
    assert first["a_only"] - first["b_only"] == round(200 * first["difference"])


def test_unequal_item_lists_are_one_clear_error():
    with pytest.raises(ValueError, match="same items"):
        paired([True, False], [True])


def test_evaluate_reports_tflow_against_every_mode_on_the_same_items():
    def mode(correct: list[bool]) -> dict:
        k = sum(correct)
        return {"accuracy": k / len(correct), "accuracy_ci95": [0.0, 1.0], "tokens_per_query": 10.0,
                "paper_tokens_per_query": 10.0, "seconds_per_query": 1.0, "n": len(correct),
                "items": [{"id": str(i), "correct": c} for i, c in enumerate(correct)]}

    results = {"single": mode([False] * 8 + [True] * 2), "tflow": mode([True] * 6 + [False] * 4),
               "static": mode([True] * 6 + [False] * 4), "tflow_shuffled": mode([True] * 5 + [False] * 5)}
    got = comparisons(results)
    assert set(got) == {"tflow_vs_single", "tflow_vs_static", "tflow_vs_tflow_shuffled"}
    assert got["tflow_vs_single"]["difference"] == pytest.approx(0.4)
    assert got["tflow_vs_static"]["difference_ci95"] == [0.0, 0.0]
    table = format_table("rg:x", results)
    assert "tflow_vs_single: +40.0 points [" in table and "McNemar p" in table
    del results["tflow"]
    assert comparisons(results) == {}
