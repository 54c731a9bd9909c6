"""The store's promises under concurrency, on SQLite and on a real PostgreSQL server (`empty_store` yields both):
a run's status changes are compare-and-set, two imports of one name at once leave one whole dataset and a clear
refusal, events are idempotent, impressions and run metrics read back as written.

Threads stand in for processes: each opens its own connection from the engine's pool, as separate processes do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

import pytest

import services
from store import impressions, repository, runs, serving
from store.csv_import import ImportFailed

ITEMS = b"item_id,title,category,year\n1,Heat (1995),Action|Crime,1995\n2,Babe (1995),Comedy,1995\n"
EVENTS = b"user_id,item_id,timestamp,rating\nu1,1,1577923200,4\nu2,2,1577923300,5\nu2,1,1577923400,3\n"
RACERS = 8


def race(call: Callable[[int], object], racers: int = RACERS) -> list[object]:
    """Run `call(i)` on `racers` threads released at the same moment; each result, or the exception it raised."""
    start = threading.Barrier(racers)
    results: list[object] = [None] * racers

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each racer got
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def new_run(run_id: str) -> None:
    runs.create_run(run_id, "grpo", "base", {"users": 2}, "/tmp/none", "/tmp/none.log", max_steps=4)


def test_only_one_of_many_simultaneous_status_changes_wins(empty_store: str) -> None:
    """Eight workers try to move one running run to eight final states: exactly one succeeds, the rest are told."""
    new_run("cas")
    assert runs.transition("cas", "running", expect=("queued",))
    finals = ["finished", "failed", "cancelled"]
    results = race(lambda i: runs.transition("cas", finals[i % 3], expect=("running",), error=f"racer {i}"))
    assert all(isinstance(r, bool) for r in results), results
    assert results.count(True) == 1, results
    winner = results.index(True)
    run = runs.get_run("cas")
    assert run["status"] == finals[winner % 3] and run["error"] == f"racer {winner}"
    assert not runs.transition("cas", "running", expect=("queued", "running"))  # a final state stays final
    with pytest.raises(ValueError, match="Unknown run status"):
        runs.transition("cas", "paused", expect=("running",))
    with pytest.raises(runs.UnknownRun):
        runs.transition("missing", "failed", expect=("running",))


def test_metrics_logged_at_once_all_land_and_the_step_only_advances(empty_store: str) -> None:
    new_run("metrics")
    race(lambda i: runs.add_metrics("metrics", i + 1, {"loss": 1.0 / (i + 1), "note": "text is dropped"}))
    logged = runs.metrics("metrics")
    assert sorted(m["step"] for m in logged) == list(range(1, RACERS + 1))
    assert all(set(m) == {"step", "attempt", "logged_at", "loss"} for m in logged)
    assert runs.get_run("metrics")["global_step"] == RACERS


def test_two_imports_of_one_name_at_once_leave_one_whole_dataset(empty_store: str) -> None:
    """The loser is told the name is taken (as a sequential second import would be) and writes nothing."""
    results = race(lambda i: services.audience.import_csv("shop", ITEMS, EVENTS), racers=4)
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if not isinstance(r, dict)]
    assert len(won) == 1, results
    assert all(isinstance(r, ImportFailed) and "Dataset 'shop' already exists" in str(r) for r in lost), lost
    counts = repository.table_counts()
    assert (counts["datasets"], counts["users"], counts["items"], counts["interactions"]) == (1, 2, 2, 3)


def test_imports_of_different_names_at_once_all_land(empty_store: str) -> None:
    results = race(lambda i: services.audience.import_csv(f"shop{i}", ITEMS, EVENTS), racers=4)
    assert all(isinstance(r, dict) for r in results), results
    assert sorted(repository.dataset_names()) == [f"shop{i}" for i in range(4)]
    assert repository.table_counts()["interactions"] == 12


def test_a_refused_import_writes_nothing(empty_store: str) -> None:
    services.audience.import_csv("shop", ITEMS, EVENTS)
    before = repository.table_counts()
    with pytest.raises(ImportFailed, match="nothing was written"):
        services.audience.import_csv("other", ITEMS, EVENTS + b"u3,9,1577923500,4\n")
    with pytest.raises(ImportFailed, match="nothing was written"):  # a title longer than the column
        services.audience.import_csv("other", b"item_id,title\n1," + b"x" * 600 + b"\n", EVENTS)
    assert repository.table_counts() == before


def test_served_events_are_recorded_once_even_when_sent_at_once(empty_store: str) -> None:
    services.audience.import_csv("shop", ITEMS, EVENTS)
    shown = {"id": "imp-1", "dataset": "shop", "user_id": "u1", "item_id": "1", "variant_id": None,
             "title": "Heat", "body": "A heist", "cta": "Watch", "segment": "all", "source": "api",
             "shown_at": serving.now()}
    assert serving.apply([shown], []) == ([], [])
    results = race(lambda i: serving.apply([], [serving.Event("imp-1", "click")])[0][0])
    assert sorted(results) == ["duplicate"] * (RACERS - 1) + ["recorded"], results
    assert serving.apply([], [serving.Event("nope", "click")])[0] == ["unknown"]


def test_simulated_impressions_read_back_as_written(empty_store: str) -> None:
    services.audience.import_csv("shop", ITEMS, EVENTS)
    rows = [{"dataset": "shop", "user_id": "u1", "item_id": "1", "variant_id": f"v{i}", "variant_text": "Heat",
             "position": i, "seen": 0, "probability": 0.25, "click": bool(i % 2), "audience": "judge",
             "shown_at": datetime(2026, 1, 1, 12, 0, i)} for i in range(3)]
    assert impressions.write_impressions(rows) == 3
    back = impressions.read_impressions("shop", audience="judge", user_id="u1")
    assert back["variant_id"].tolist() == ["v0", "v1", "v2"]
    assert back["click"].tolist() == [False, True, False] and back["probability"].tolist() == [0.25] * 3
    assert impressions.read_impressions("shop", audience="train").empty
