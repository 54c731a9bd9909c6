"""Load on the serving API: decide+event pairs from concurrent clients on loopback against a real `cli.py serve`.

    .venv/bin/python bench/serving.py [--pairs 5000] [--clients 32] [--items 2] [--baseline-pairs 1000]

The server runs on a copy of the store in var/bench-serving (made on the first run; its served impressions are
cleared each run, its variants kept, so later runs skip generation). Each client, an asyncio task on one
aiohttp session, asks POST /v1/decide for a random user and item, then reports a click (POST /v1/events) for
the impression it got. Each server takes the load twice: flat out (each client sends its next pair when the last
is answered: the throughput) and paced at `--rate` pairs a second (the latency at that load; flat out with 32
clients waiting, latency is only 32 / throughput). The same runs go against the server as configured (group
commit) and, as the baseline, with `--commit-batch 1` (one commit per request). Prints throughput (decisions a
second), p50/p95 latency of each call, errors, and events acknowledged vs found in the store; the last line is
JSON, with which goals of the issue were met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
import settings  # noqa: E402
from api import process  # noqa: E402

HOME = settings.REPO_ROOT / "var" / "bench-serving"


def prepare_home() -> Path:
    """The bench's own store: a copy of the configured one (demo data loaded first), without served impressions."""
    db = HOME / "adloop.db"
    if not db.exists():
        services.common.ensure_demo_data()
        source = Path(settings.load().database_url.removeprefix("sqlite:///"))
        HOME.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(source) as src, sqlite3.connect(db) as dst:
            src.backup(dst)
    with sqlite3.connect(db) as con:
        if con.execute("SELECT name FROM sqlite_master WHERE name='served_impressions'").fetchone():
            con.execute("DELETE FROM served_impressions")
    return db


async def seed_variants(session: aiohttp.ClientSession, url: str, items: list[str], user: str) -> list[int]:
    """Live variants for each item (generated on the first run, from the store afterwards)."""
    ids = []
    for item in items:
        started = time.perf_counter()
        async with session.post(f"{url}/v1/variants", json={"user_id": user, "item_id": item, "n": 4},
                                timeout=aiohttp.ClientTimeout(total=900)) as reply:
            body = await reply.json()
            if reply.status != 200:
                raise SystemExit(f"POST /v1/variants failed: {reply.status} {body}")
        ids += [v["variant_id"] for v in body["variants"]]
        print(f"item {item}: {len(body['variants'])} variants "
              f"({'generated' if body['generated'] else 'from the store'}, {time.perf_counter() - started:.1f} s)")
    return ids


async def client(session: aiohttp.ClientSession, url: str, jobs: asyncio.Queue, users: list[str], items: list[str],
                 out: dict) -> None:
    rng = random.Random(id(out) ^ jobs.qsize())
    while True:
        try:
            due = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        if due is not None and due > time.perf_counter():  # paced: wait for this pair's turn
            await asyncio.sleep(due - time.perf_counter())
        started = time.perf_counter()
        try:
            async with session.post(f"{url}/v1/decide", json={"user_id": rng.choice(users),
                                                              "item_id": rng.choice(items)}) as reply:
                decision = await reply.json()
                ok = reply.status == 200
            out["decide"].append(time.perf_counter() - started)
            if not ok:
                out["errors"].append(f"decide {reply.status}: {decision}")
                continue
            started = time.perf_counter()
            async with session.post(f"{url}/v1/events", json={"impression_id": decision["impression_id"],
                                                              "event": "click"}) as reply:
                answer = await reply.json()
                if reply.status == 200 and answer["status"] == "recorded":
                    out["acknowledged"].append(decision["impression_id"])
                else:
                    out["errors"].append(f"event {reply.status}: {answer}")
            out["event"].append(time.perf_counter() - started)
        except (TimeoutError, aiohttp.ClientError) as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}")


async def load(url: str, pairs: int, clients: int, users: list[str], items: list[str],
               rate: float | None = None) -> dict:
    """`pairs` decide+event pairs from `clients` concurrent clients: as fast as the server answers (closed loop),
    or paced at `rate` pairs a second (open loop, up to `clients` in flight), where latency is read."""
    jobs: asyncio.Queue = asyncio.Queue()
    out: dict = {"decide": [], "event": [], "errors": [], "acknowledged": []}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        for n in range(pairs):
            jobs.put_nowait(None if rate is None else started + n / rate)
        await asyncio.gather(*(client(session, url, jobs, users, items, out) for _ in range(clients)))
        out["seconds"] = time.perf_counter() - started
    return out


def stored(db: Path, ids: list[str]) -> int:
    """How many of these impressions have their click in the store."""
    with sqlite3.connect(db) as con:
        con.execute("CREATE TEMP TABLE acked(id TEXT PRIMARY KEY)")
        con.executemany("INSERT INTO acked VALUES (?)", [(i,) for i in ids])
        return con.execute("SELECT count(*) FROM served_impressions s JOIN acked a ON a.id = s.id "
                           "WHERE s.clicked_at IS NOT NULL").fetchone()[0]


def summary(name: str, out: dict, db: Path) -> dict:
    ms = {k: np.asarray(out[k]) * 1000 for k in ("decide", "event")}
    row = {"name": name, "pairs": len(out["decide"]), "seconds": round(out["seconds"], 2),
           "decisions_per_s": round(len(out["decide"]) / out["seconds"], 1),
           "requests_per_s": round((len(out["decide"]) + len(out["event"])) / out["seconds"], 1),
           **{f"{k}_p{q}_ms": round(float(np.percentile(v, q)), 2) if len(v) else None
              for k, v in ms.items() for q in (50, 95)},
           "errors": len(out["errors"]), "events_acknowledged": len(out["acknowledged"]),
           "events_stored": stored(db, out["acknowledged"])}
    print(f"{name:<28} {row['decisions_per_s']:>8.1f} decisions/s  decide p50 {row['decide_p50_ms']} ms "
          f"p95 {row['decide_p95_ms']} ms  event p50 {row['event_p50_ms']} ms p95 {row['event_p95_ms']} ms  "
          f"errors {row['errors']}  events stored {row['events_stored']} of {row['events_acknowledged']}")
    for problem in out["errors"][:5]:
        print("   ", problem)
    return row


def run(label: str, db: Path, options: list[str], args: argparse.Namespace, users: list[str],
        pairs: int) -> list[dict]:
    """The closed-loop run, then (when `--rate` is set) the paced one, on one server."""
    env = {**os.environ, "ADLOOP_HOME": str(HOME)}
    with process.server(HOME / f"server-{label}.log", "--rate-limit", "0", *options, env=env) as (url, _):
        asyncio.run(load(url, min(200, pairs), args.clients, users, args.item_ids))  # warm the caches
        rows = [summary(f"{label}, flat out", asyncio.run(load(url, pairs, args.clients, users, args.item_ids)), db)]
        if args.rate:
            paced = asyncio.run(load(url, pairs, args.clients, users, args.item_ids, args.rate))
            rows.append(summary(f"{label}, at {args.rate:g}/s", paced, db))
        return rows


async def _seed(url: str, args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as session:
        await seed_variants(session, url, args.item_ids, args.seed_user)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--baseline-pairs", type=int, default=1000, help="pairs of the one-commit-per-request run")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0,
                        help="pairs a second of the paced run, where latency is read (0: no paced run)")
    parser.add_argument("--item-ids", nargs="+", default=["50", "181"], help="items decided among")
    parser.add_argument("--seed-user", default="1", help="the user the items' variants are written for")
    args = parser.parse_args()
    db = prepare_home()
    env = {**os.environ, "ADLOOP_HOME": str(HOME)}
    with process.server(HOME / "server-seed.log", env=env) as (url, _):
        asyncio.run(_seed(url, args))
    with sqlite3.connect(db) as con:
        users = [r[0] for r in con.execute("SELECT user_id FROM users WHERE dataset = ?",
                                           (services.common.DEFAULT_DATASET,))]
    print(f"{args.pairs} decide+event pairs from {args.clients} concurrent clients, {len(users)} users, "
          f"items {', '.join(args.item_ids)}; {os.cpu_count()} cores")
    grouped = run("group commit", db, [], args, users, args.pairs)
    baseline = run("one commit per request", db, ["--commit-batch", "1"], args, users, args.baseline_pairs)
    goals = {"decisions_per_s >= 500": grouped[0]["decisions_per_s"] >= 500,
             "decide_p95_ms < 20": grouped[-1]["decide_p95_ms"] < 20,
             "errors == 0": all(r["errors"] == 0 for r in grouped),
             "events stored == acknowledged": all(r["events_stored"] == r["events_acknowledged"] for r in grouped)}
    print(json.dumps({"bench": "serving", "group_commit": grouped, "baseline_one_commit_per_request": baseline,
                      "speedup": round(grouped[0]["decisions_per_s"] / baseline[0]["decisions_per_s"], 2),
                      "goals_met": goals}))


if __name__ == "__main__":
    main()
