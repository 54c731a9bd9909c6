"""End to end with the embedded models on MovieLens-100k: the profile service and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import services
import settings
from generation import intent
from store import repository

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.embedded


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run cli.py in a fresh process with this session's environment (ADLOOP_HOME, model cache, ...)."""
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=300)


def assert_profile_backed_by(profile: dict, user_id: str, history) -> None:
    categories = dict(zip(history["item_id"], history["category"].map(intent.categories_of), strict=True))
    assert profile["user_id"] == user_id
    assert profile["history_size"] == len(history)
    assert profile["interests"]
    weights = [i["weight"] for i in profile["interests"]]
    assert weights == sorted(weights, reverse=True) and sum(weights) <= 1.0
    for interest in profile["interests"]:
        assert set(interest) >= {"label", "weight", "evidence"}
        assert interest["evidence"]
        for evidence in interest["evidence"]:
            assert interest["label"] in categories[evidence["item_id"]], (interest["label"], evidence)
    assert profile["themes"]
    for theme in profile["themes"]:
        assert theme["evidence"]
        assert {e["item_id"] for e in theme["evidence"]} <= set(categories)
    assert profile["intent_source"] in {"llm", "fallback"}
    assert profile["intent"]["source"] == profile["intent_source"]
    assert profile["intent"]["summary"].startswith(intent.SUMMARY_PREFIX)


@pytest.fixture(scope="module")
def user1_profile(demo_store: str) -> dict:
    return services.audience.profile(demo_store, "1", recompute=True)


def test_profile_of_a_real_user(demo_store: str, user1_profile: dict):
    history = services.audience.history(demo_store, "1")
    assert len(history) == 272
    profile = user1_profile
    assert_profile_backed_by(profile, "1", history)
    assert profile["model"] == settings.EMBEDDED_TEXT_MODEL
    assert profile["embedding_model"] == settings.EMBEDDED_EMBEDDING_MODEL
    assert profile["cached"] is False
    assert isinstance(profile["intent"]["llm_output"], str) and profile["intent"]["llm_output"]
    labels = [i["label"] for i in profile["interests"][:4] + profile["intent"]["focus"]]
    if profile["intent_source"] == "llm":
        assert profile["intent"]["rejected"] is None
        assert intent.check_summary(profile["intent"]["summary"], labels, history) is None
    else:
        assert profile["intent"]["rejected"]
    # the recent window is the user's latest interactions, newest first
    recent = [e["item_id"] for e in profile["intent"]["recent"]]
    assert recent == history["item_id"].iloc[::-1].head(len(recent)).tolist()

    cached = services.audience.profile(demo_store, "1")
    assert cached["cached"] is True and cached["interests"] == profile["interests"]


def test_unknown_user(demo_store: str):
    with pytest.raises(repository.UnknownUser, match="Unknown user 'nope'"):
        services.audience.profile(demo_store, "nope")
    with pytest.raises(repository.UnknownDataset):
        services.audience.profile("no-such-dataset", "1")


def test_cli_profile_json(demo_store: str, user1_profile: dict):
    done = cli("profile", "--user", "1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= {"user_id", "interests", "themes", "intent", "intent_source", "model"}
    assert_profile_backed_by(result, "1", services.audience.history(demo_store, "1"))
    assert result["model"] == settings.EMBEDDED_TEXT_MODEL
    # the command line shows the same profile the service computed (from the shared store)
    assert result["interests"] == user1_profile["interests"]
    assert result["intent"]["summary"] == user1_profile["intent"]["summary"]


def test_cli_profile_unknown_user(demo_store: str):
    done = cli("profile", "--user", "nope", "--json")
    assert done.returncode == 1
    assert "Unknown user 'nope'" in done.stderr
    assert done.stdout == ""


def test_cli_import_reports_bad_lines(tmp_path: Path):
    items, events = tmp_path / "items.csv", tmp_path / "events.csv"
    items.write_text("item_id,title\n1,Heat (1995)\n2,\n3,Babe\n3,Babe again\n", encoding="utf-8")
    events.write_text("user_id,item_id,timestamp\nu1,1,2020-01-01\n", encoding="utf-8")
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    done = cli("import", "--name", "shop", "--items", str(items), "--interactions", str(events), env=env)
    assert done.returncode == 2
    assert "Import failed with 2 problem(s); nothing was written." in done.stderr
    assert "items.csv, line 3, column 'title': is empty" in done.stderr
    assert "items.csv, line 5, column 'item_id': duplicate id '3' (first on line 4)" in done.stderr


def test_cli_eval_intent(demo_store: str):
    done = cli("eval-intent", "--users", "60", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["users"] == 60 and report["k"] == 10 and report["negatives"] == 100
    assert report["chance_hr"] == pytest.approx(10 / 101, abs=1e-4)
    assert set(report["results"]) == {"popularity", "matrix_factorization", "profile", "profile+popularity",
                                      "profile+taste"}
    for method, metrics in report["results"].items():
        assert 0.0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1.0, method
    assert report["results"]["matrix_factorization"]["hr@10"] > 2 * report["chance_hr"]
