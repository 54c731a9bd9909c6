"""The serving API (issue 12): variants per request, Thompson decisions per segment, idempotent events and the
report, through FastAPI's test client and against a real `cli.py serve`; bad requests change nothing, and a
server killed under load keeps every event it acknowledged."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import access
import services
from api import process
from api.app import ServeConfig, create_app
from api.guard import RateLimiter
from store import repository, serving

ITEM = "50"  # Star Wars (1977)
USER = "321"  # no other suite writes variants for this user


def _client(**options) -> TestClient:
    return TestClient(create_app(ServeConfig(**options)))


def _seed_live(dataset: str, item_id: str, titles: list[str]) -> list[int]:
    """Live (kept, passed) variants of an item, stored as the Studio would, without writing them with the LLM."""
    rows = [{"batch": f"test-{item_id}", "dataset": dataset, "user_id": "1", "segment": None, "item_id": item_id,
             "title": title, "body": "A film worth a night in.", "cta": "Watch now", "angle": "test",
             "model": "test", "adapter": None, "prompt": "", "seed": 0, "profile_version": "test",
             "safety": {"status": "passed", "reasons": []}, "score": 0.03, "kept": True} for title in titles]
    return repository.save_variants(rows)


@pytest.fixture(scope="module")
def open_api(demo_store: str):
    """One app without a login for the tests that only call it (building one per case costs seconds in all)."""
    with _client() as client:
        yield client


@pytest.fixture(scope="module")
def generated(demo_store: str) -> dict:
    """Two variants of Star Wars for one user, written by the embedded model through the API (once per module)."""
    with _client() as client:
        first = client.post("/v1/variants", json={"user_id": int(USER), "item_id": ITEM, "n": 2})
        assert first.status_code == 200, first.text
        return first.json()


def test_variants_are_written_once_then_served_from_the_store(generated: dict) -> None:
    assert generated["generated"] is True
    variants = generated["variants"]
    assert len(variants) == 2 and len({v["title"].lower() for v in variants}) == 2
    assert all(0 < v["predicted_ctr"] < 1 for v in variants)
    with _client() as client:
        again = client.post("/v1/variants", json={"user_id": USER, "item_id": ITEM, "n": 2}).json()
        assert again["generated"] is False
        assert [v["variant_id"] for v in again["variants"]] == [v["variant_id"] for v in variants]
        url = variants[0]["banners"]["300x250"]
        banner = client.get(url.removeprefix("http://testserver"))
        assert banner.status_code == 200 and banner.headers["content-type"] == "image/png"
        assert banner.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(f"/v1/banners/{variants[0]['variant_id']}/1x1.png").status_code == 404
    live = serving.live_variants(services.common.DEFAULT_DATASET, ITEM)
    assert {v["variant_id"] for v in variants} <= set(live["id"])  # made through the API: live at once


def test_a_decision_is_logged_and_events_are_idempotent(generated: dict) -> None:
    ids = {v["variant_id"] for v in generated["variants"]}
    live = set(serving.live_variants(services.common.DEFAULT_DATASET, ITEM)["id"])
    with _client() as client:
        decision = client.post("/v1/decide", json={"user_id": 1, "item_id": ITEM}).json()
        assert decision["variant"]["variant_id"] in live and decision["segment"]
        impression = decision["impression_id"]
        click = {"impression_id": impression, "event": "click"}
        assert client.post("/v1/events", json=click).json()["status"] == "recorded"
        assert client.post("/v1/events", json=click).json()["status"] == "duplicate"
        assert client.post("/v1/events", json={**click, "event": "conversion"}).json()["status"] == "recorded"
        report = client.get("/v1/report", params={"item_id": ITEM}).json()
    row = next(r for r in report["variants"] if r["variant_id"] == decision["variant"]["variant_id"])
    assert row["source"] == "api" and row["impressions"] >= 1 and row["clicks"] >= 1 and row["conversions"] >= 1
    assert row["ctr_low"] <= row["ctr"] <= row["ctr_high"]
    logged = serving.impressions(services.common.DEFAULT_DATASET, "api").set_index("id")
    assert logged.loc[impression, "clicked"] == 1 and logged.loc[impression, "user_id"] == "1"
    assert {r["variant_id"] for r in report["variants"]} >= ids  # every live variant is reported, shown or not


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("post", "/v1/decide", {"user_id": "no-such-user", "item_id": ITEM}, 404, "Unknown user"),
    ("post", "/v1/decide", {"user_id": 1, "item_id": "no-such-item"}, 404, "Unknown item"),
    ("post", "/v1/decide", {"user_id": 1, "item_id": ITEM, "dataset": "nope"}, 404, "Unknown dataset"),
    ("post", "/v1/decide", {"user_id": 1}, 422, "item_id"),
    ("post", "/v1/decide", {"user_id": True, "item_id": ITEM}, 422, "user_id"),
    ("post", "/v1/decide", {"user_id": 1, "item_id": ITEM, "extra": 1}, 422, "extra"),
    ("post", "/v1/decide", {"user_id": " ", "item_id": ITEM}, 422, "user_id"),
    ("post", "/v1/variants", {"user_id": 1, "item_id": ITEM, "n": 0}, 422, "n"),
    ("post", "/v1/variants", {"user_id": 1, "item_id": ITEM, "n": 10_000}, 422, "n"),
    ("post", "/v1/variants", {"user_id": "ghost", "item_id": ITEM, "n": 1}, 404, "Unknown user"),
    ("post", "/v1/events", {"impression_id": "never-shown", "event": "click"}, 404, "Unknown impression"),
    ("post", "/v1/events", {"impression_id": "x", "event": "purchase"}, 422, "event"),
    ("get", "/v1/report?item_id=no-such-item", None, 404, "Unknown item"),
    ("get", "/v1/report", None, 422, "item_id"),
    ("get", "/v1/no-such-route", None, 404, "Not Found"),
])
def test_bad_requests_get_a_json_error_and_change_nothing(open_api: TestClient, method: str, path: str,
                                                          body: dict | None, status: int, words: str) -> None:
    before = repository.table_counts()
    reply = open_api.request(method.upper(), path, json=body)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["error"]
    assert repository.table_counts() == before


def test_decisions_events_and_refusals_through_the_api_on_both_databases(demo_database: str) -> None:
    """The API's whole write path (decide, click, repeat, convert, report) and a refused request that writes
    nothing, on SQLite and on PostgreSQL."""
    item = "181"  # Return of the Jedi
    ids = set(_seed_live(demo_database, item, ["Jedi, for the fans", "Jedi, tonight"]))
    with _client() as client:
        decision = client.post("/v1/decide", json={"user_id": 7, "item_id": item}).json()
        assert decision["variant"]["variant_id"] in ids
        click = {"impression_id": decision["impression_id"], "event": "click"}
        assert [client.post("/v1/events", json=click).json()["status"] for _ in range(2)] == ["recorded", "duplicate"]
        assert client.post("/v1/events", json={**click, "event": "conversion"}).json()["status"] == "recorded"
        before = repository.table_counts()
        refused = client.post("/v1/decide", json={"user_id": "no-such-user", "item_id": item})
        assert refused.status_code == 404 and "Unknown user" in refused.json()["error"]
        assert repository.table_counts() == before
        report = client.get("/v1/report", params={"item_id": item}).json()
    shown = next(r for r in report["variants"] if r["variant_id"] == decision["variant"]["variant_id"])
    assert (shown["impressions"], shown["clicks"], shown["conversions"]) >= (1, 1, 1)


def test_a_body_that_is_too_large_or_not_json_is_refused(demo_store: str) -> None:
    before = repository.table_counts()
    with _client() as client:
        big = client.post("/v1/decide", content=b"{" + b" " * 70_000 + b"}",
                          headers={"content-type": "application/json"})
        assert big.status_code == 413 and "64 KiB" in big.json()["error"]
        chunked = client.post("/v1/decide", content=iter([b"{", b" " * 40_000, b" " * 40_000, b"}"]),
                              headers={"content-type": "application/json"})
        assert chunked.status_code == 413  # no Content-Length: counted as it arrives
        garbage = client.post("/v1/decide", content=b"not json", headers={"content-type": "application/json"})
        assert garbage.status_code == 422 and "error" in garbage.json()
    assert repository.table_counts() == before


def test_thompson_sampling_follows_each_segments_clicks(demo_database: str) -> None:
    """Variant A gets clicks from Sci-Fi fans, B from Comedy fans: after a few hundred decisions each segment is
    mostly shown its own winner, though the variants' pooled rates are alike."""
    dataset, item = demo_database, "172"  # The Empire Strikes Back
    a, b = _seed_live(dataset, item, ["Empire, for the fans", "Empire, for tonight"])
    table = services.audience.segment_table(dataset)
    fans = table.loc[table["taste"] == "Sci-Fi fans", "user_id"].tolist()
    others = table.loc[table["taste"] == "Comedy fans", "user_id"].tolist()
    state = services.serving.Serving(dataset, seed=0)
    rng = np.random.default_rng(0)
    shown: dict[str, list[int]] = {"fans": [], "others": []}
    for n in range(1200):
        group = "fans" if n % 2 else "others"
        user = str(rng.choice(fans if group == "fans" else others))
        impression, variant = state.decide(user, item)
        best = a if group == "fans" else b
        clicked = rng.random() < (0.3 if variant["variant_id"] == best else 0.02)
        state.write([impression], [serving.Event(impression["id"], "click")] if clicked else [])
        shown[group].append(variant["variant_id"])
    assert np.mean(np.array(shown["fans"][-200:]) == a) > 0.8
    assert np.mean(np.array(shown["others"][-200:]) == b) > 0.8
    report = services.serving.report(dataset, item)
    assert report["impressions"].sum() == 1200


def test_an_item_without_live_variants_is_a_conflict_not_a_crash(demo_database: str) -> None:
    with _client() as client:
        reply = client.post("/v1/decide", json={"user_id": 1, "item_id": "1682"})
    assert reply.status_code == 409 and "no live variants" in reply.json()["error"]


def _secrets(folder: Path, ana_key: str, bob_key: str) -> Path:
    path = folder / "secrets.toml"
    path.write_text(f'[adloop.users]\nana = "{access.hash_password("pw", iterations=1000)}"\n\n'
                    f'[adloop.api_keys]\nana = ["{access.key_digest(ana_key)}"]\n'
                    f'bob = ["{access.key_digest(bob_key)}"]\n')
    return path


def test_with_a_login_configured_every_call_needs_a_key_of_a_dashboard_account(demo_store: str,
                                                                                tmp_path: Path) -> None:
    secrets = _secrets(tmp_path, "ana-key", "bob-key")
    with _client(secrets=secrets) as client:
        report = "/v1/report?item_id=50"
        assert client.get("/health").status_code == 200  # health and docs stay public
        assert client.get("/openapi.json").status_code == 200
        assert client.get(report).status_code == 401
        assert client.get(report, headers={"X-API-Key": "guess"}).json()["error"] == "Unknown API key"
        refused = client.get(report, headers={"X-API-Key": "bob-key"})
        assert refused.status_code == 403 and "bob" in refused.json()["error"]  # bob has no dashboard login
        assert client.get(report, headers={"X-API-Key": "ana-key"}).status_code == 200
        assert client.get(report, headers={"Authorization": "Bearer ana-key"}).status_code == 200


def test_a_malformed_key_table_stops_the_server_from_starting(demo_store: str, tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text(f'[adloop.users]\nana = "{access.hash_password("pw", iterations=1000)}"\n'
                    '[adloop.api_keys]\nana = ["not-a-digest"]\n')
    with pytest.raises(access.AccessMisconfigured, match="not a SHA-256"):
        create_app(ServeConfig(secrets=path))
    with pytest.raises(access.AccessMisconfigured, match="cannot be read"):
        create_app(ServeConfig(secrets=tmp_path / "missing.toml"))


def test_over_the_rate_limit_a_client_is_told_when_to_retry(demo_store: str) -> None:
    limiter = RateLimiter(rate=10, burst=2)
    assert [limiter.wait("a", now=0.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.wait("a", now=0.0) == pytest.approx(0.1)
    assert limiter.wait("b", now=0.0) == 0.0  # buckets are per client
    assert limiter.wait("a", now=0.2) == 0.0  # refilled at the rate
    with _client(rate_limit=1) as client:
        codes = [client.get("/v1/report?item_id=50") for _ in range(3)]
    assert codes[0].status_code == 200
    assert codes[-1].status_code == 429 and codes[-1].headers["retry-after"] == "1"
    assert "rate limit" in codes[-1].json()["error"]


def _post(url: str, body: dict, timeout: float = 10.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_real_server_serves_and_when_killed_under_load_keeps_every_event_it_acknowledged(
        generated: dict, tmp_path: Path) -> None:
    url, proc = process.start(tmp_path / "serve.log")  # one start for both: each costs seconds
    try:
        spec = json.loads(urllib.request.urlopen(f"{url}/openapi.json").read())
        assert {"/v1/variants", "/v1/decide", "/v1/events", "/v1/report", "/health"} <= set(spec["paths"])
        assert urllib.request.urlopen(f"{url}/docs").status == 200
        status, decision = _post(f"{url}/v1/decide", {"user_id": "2", "item_id": ITEM})
        assert status == 200 and decision["variant"]["banners"]["300x250"].startswith(url)
        assert _post(f"{url}/v1/events", {"impression_id": "nope", "event": "click"})[0] == 404
    except BaseException:
        proc.kill()
        raise
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, decision = _post(f"{url}/v1/decide", {"user_id": "3", "item_id": ITEM}, timeout=5)
                if status != 200:
                    continue
                status, event = _post(f"{url}/v1/events", {"impression_id": decision["impression_id"],
                                                           "event": "click"}, timeout=5)
                if status == 200 and event["status"] == "recorded":
                    acknowledged.append(decision["impression_id"])
            except OSError:  # the server is gone
                return

    workers = [threading.Thread(target=load) for _ in range(8)]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()  # SIGKILL in the middle of the load
        proc.wait()
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        if proc.poll() is None:
            proc.kill()
    assert len(acknowledged) >= 150
    logged = serving.impressions(services.common.DEFAULT_DATASET, "api").set_index("id")
    missing = [i for i in acknowledged if i not in logged.index or logged.loc[i, "clicked"] != 1]
    assert not missing, f"{len(missing)} acknowledged clicks were lost"
