"""Campaigns on the simulated audience: allocation, intervals, segments, logging, inputs and exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import services
from rewards import campaign, segments, variant_file
from store import impressions as impression_log

REPO = Path(__file__).resolve().parent.parent
ITEM = "50"  # Star Wars (1977)


@pytest.fixture(scope="module")
def variants(demo_store: str) -> list[dict]:
    stuffed = {"title": "STAR WARS SCI-FI ACTION MOVIE!!!", "body": "sci-fi action movie movie movie", "cta": ""}
    return [*services.campaigns.example_variants(demo_store, ITEM), stuffed]


@pytest.fixture(scope="module")
def matrix(demo_store: str, variants: list[dict]) -> np.ndarray:
    users = services.audience.segment_table(demo_store)["user_id"].tolist()[:400]
    return services.campaigns.click_matrix(demo_store, ITEM, users, variants)


def test_thompson_reaches_lower_regret_than_ab_on_the_same_traffic(matrix: np.ndarray) -> None:
    for seed in range(3):
        ab = campaign.simulate(matrix, 20_000, "ab", seed=seed)
        thompson = campaign.simulate(matrix, 20_000, "thompson", seed=seed)
        assert thompson.regret < ab.regret
        assert thompson.total_clicks > ab.total_clicks
        best = thompson.variants.set_index("variant").loc[thompson.best_variant]
        assert best["impressions"] > 0.5 * 20_000


def test_ab_split_is_uniform_and_its_intervals_cover_the_expected_ctr(matrix: np.ndarray) -> None:
    result = campaign.simulate(matrix, 40_000, "ab", seed=1)
    shares = result.variants["impressions"] / 40_000
    assert np.allclose(shares, 1 / matrix.shape[1], atol=0.02)
    covered = (result.variants["ci_low"] <= result.variants["expected_ctr"]) & (
        result.variants["expected_ctr"] <= result.variants["ci_high"])
    assert covered.sum() >= matrix.shape[1] - 1  # 95% intervals: at most one miss among a few variants


def test_campaign_is_reproducible_and_timeline_adds_up(matrix: np.ndarray) -> None:
    first = campaign.simulate(matrix, 5_000, "thompson", seed=7)
    second = campaign.simulate(matrix, 5_000, "thompson", seed=7)
    pd.testing.assert_frame_equal(first.impressions, second.impressions)
    last = first.timeline[first.timeline["batch"] == first.timeline["batch"].max()]
    assert last["cumulative_impressions"].sum() == 5_000
    assert last["cumulative_clicks"].sum() == first.total_clicks
    assert np.isclose(first.timeline["cumulative_regret"].max(), first.regret)


def test_wilson_interval_behaves_at_the_edges() -> None:
    low, high = campaign.wilson_interval(np.array([0, 5, 50]), np.array([100, 100, 0]))
    assert low[0] == 0 and 0 < high[0] < 0.05
    assert low[1] < 0.05 < high[1]
    assert (low[2], high[2]) == (0.0, 1.0)  # no impressions: nothing is known


def test_the_chance_of_being_best_and_the_expected_lift_read_the_posteriors() -> None:
    """A clear winner (10% against 5% on 2,000 impressions each) is best with near certainty and lifts about
    +100% over the other; two identical variants split the chance and expect no lift; a variant with no data
    has its share of the chance among three; the chances always sum to 1."""
    best, lift = campaign.posterior_best(np.array([200, 100]), np.array([2000, 2000]))
    assert best[0] > 0.999 and best.sum() == pytest.approx(1.0)
    assert lift[0] == pytest.approx(1.0, abs=0.1) and lift[1] == pytest.approx(-0.5, abs=0.05)
    even, flat = campaign.posterior_best(np.array([50, 50]), np.array([1000, 1000]))
    assert even == pytest.approx([0.5, 0.5], abs=0.02) and abs(flat[0] - flat[1]) < 0.02
    unseen, _ = campaign.posterior_best(np.zeros(3), np.zeros(3))
    assert unseen == pytest.approx([1 / 3] * 3, abs=0.02)
    summary = campaign.simulate(np.full((20, 2), 0.05), 400, "ab", seed=1).variants
    assert {"p_best", "expected_lift"} <= set(summary.columns) and summary["p_best"].sum() == pytest.approx(1.0)


def test_simulate_rejects_bad_arguments(matrix: np.ndarray) -> None:
    with pytest.raises(ValueError, match="allocation"):
        campaign.simulate(matrix, 100, "greedy")
    with pytest.raises(ValueError, match="Impressions"):
        campaign.simulate(matrix, 0, "ab")
    with pytest.raises(ValueError, match="at least one"):
        campaign.simulate(np.zeros((0, 3)), 10, "ab")


def test_segments_cover_users_and_taste_groups_are_varied(demo_store: str) -> None:
    table = services.audience.segment_table(demo_store)
    assert len(table) == 943 and set(table["gender"]) == {"M", "F"}
    assert table["taste"].nunique() >= 8 and table["taste"].value_counts().iloc[0] < 0.3 * len(table)
    women = segments.members(table, "gender", "F")
    assert women and all(table.set_index("user_id").loc[women, "gender"] == "F")
    with pytest.raises(ValueError, match="No user"):
        segments.members(table, "occupation", "astronaut")
    with pytest.raises(ValueError, match="Unknown segment"):
        segments.members(table, "zodiac", "Leo")


def test_run_campaign_on_a_segment_logs_every_impression(demo_store: str, variants: list[dict]) -> None:
    before = len(impression_log.read_impressions(demo_store))
    run = services.campaigns.run_campaign(demo_store, ITEM, variants, "age_band", "25-34", impressions=3_000,
                                allocation="ab", seed=3)
    table = services.audience.segment_table(demo_store).set_index("user_id")
    assert run["users"] == int((table["age_band"] == "25-34").sum())
    assert set(table.loc[run["impressions"]["user_id"], "age_band"]) == {"25-34"}
    log = impression_log.read_impressions(demo_store)
    assert len(log) == before + 3_000
    assert run["variants"]["clicks"].sum() == int(log.tail(3_000)["click"].sum())
    gender = run["segments"]["gender"]
    assert gender["impressions"].sum() == 3_000


def test_a_counterfactual_comparison_run_logs_nothing(demo_store: str, variants: list[dict]) -> None:
    before = len(impression_log.read_impressions(demo_store))
    run = services.campaigns.run_campaign(demo_store, ITEM, variants, impressions=1_000, allocation="thompson",
                                          seed=1, max_users=100, record=False)
    assert run["variants"]["impressions"].sum() == 1_000
    assert len(impression_log.read_impressions(demo_store)) == before


def test_a_comparison_logs_the_chosen_allocation_once(demo_store: str, variants: list[dict]) -> None:
    before = len(impression_log.read_impressions(demo_store))
    runs = services.campaigns.run_campaigns(demo_store, ITEM, variants, "age_band", "25-34", impressions=2_000,
                                            allocation="ab", compare=True, seed=2)
    assert list(runs) == ["ab", "thompson"]  # the chosen one first, then the counterfactual
    assert all(r["variants"]["impressions"].sum() == 2_000 for r in runs.values())
    log = impression_log.read_impressions(demo_store)
    assert len(log) == before + 2_000  # the A/B campaign's impressions, not the comparison's
    assert int(log.tail(2_000)["click"].sum()) == runs["ab"]["variants"]["clicks"].sum()


def test_stuffed_variant_loses_in_a_campaign(demo_store: str, variants: list[dict]) -> None:
    run = services.campaigns.run_campaign(demo_store, ITEM, variants, impressions=10_000, allocation="ab", seed=0,
                                max_users=300)
    ctr = run["variants"].set_index("variant")["expected_ctr"]
    assert ctr[3] < ctr[[0, 1, 2]].min()


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"headline,copy\nHi,there\n", "'title' column is required"),
    (b"title,body,cta\n,no title,Go\n", "line 2: the title is empty"),
    (b'[{"title": "ok"}, 3]', "JSON list of objects"),
    (b'[{"title": "ok"', "invalid JSON"),
    ("title\n" + "x" * 201 + "\n", "title is 201 characters"),
    (b"title\n\xff\xfe\n", "not valid UTF-8"),
])
def test_variant_file_errors_are_clear(data: bytes | str, message: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(variant_file.VariantFileError, match=message):
        variant_file.parse(raw, "v.csv")


def test_variant_file_reads_csv_and_json() -> None:
    csv_rows = variant_file.parse(b"title,body,cta\nA,B,C\n\nD,,\n", "v.csv")
    assert csv_rows == [{"title": "A", "body": "B", "cta": "C"}, {"title": "D", "body": "", "cta": ""}]
    json_rows = variant_file.parse(json.dumps({"variants": [{"title": "A", "cta": "Go"}]}).encode(), "v.json")
    assert json_rows == [{"title": "A", "body": "", "cta": "Go"}]


def test_csv_export_neutralises_spreadsheet_formulas() -> None:
    frame = pd.DataFrame({"title": ["=cmd|' /C calc'!A0", "+1", "@SUM(A1)", "fine"], "clicks": [1, 2, 3, -4]})
    exported = pd.read_csv(pd.io.common.BytesIO(services.common.csv_export(frame)))
    assert exported["title"].tolist() == ["'=cmd|' /C calc'!A0", "'+1", "'@SUM(A1)", "fine"]
    assert exported["clicks"].tolist() == [1, 2, 3, -4]  # numbers stay numbers


def test_cli_simulate_prints_ctr_with_intervals(demo_store: str, tmp_path: Path, variants: list[dict]) -> None:
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(variants))
    done = subprocess.run([sys.executable, "cli.py", "simulate", "--variants", str(path), "--item", ITEM,
                           "--users", "200", "--impressions", "4000", "--allocation", "thompson", "--json"],
                          cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["users"] == 200 and len(report["variants"]) == len(variants)
    assert sum(v["impressions"] for v in report["variants"]) == 4000
    for v in report["variants"]:
        assert v["ci95"][0] <= v["ctr"] <= v["ci95"][1]
    bad = subprocess.run([sys.executable, "cli.py", "simulate", "--variants", str(tmp_path / "missing.csv")],
                         cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "missing.csv: file not found" in bad.stderr
