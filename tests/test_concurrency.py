"""Concurrency (issue 6, part 5): one dashboard server, five browser sessions working at the same time.

Two Studio sessions generate variants for different users, two Campaign Lab sessions simulate campaigns with
different traffic, allocation and seed, and one Audience session switches users, all at once (one Chromium,
one context per session, driven concurrently through Playwright's asyncio API). Each session must see only
its own inputs and results, none may show an exception, the server must stay up, and it must have loaded
each model exactly once.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest
from live_server import CHROMIUM, CHROMIUM_FLAGS, IDLE, REPO, streamlit_server
from playwright.async_api import Browser, Page, async_playwright, expect

from store import repository

pytestmark = [pytest.mark.browser, pytest.mark.embedded]

SLOW = 600_000  # ms: five sessions share two cores, and the embedded LLM serves one batch at a time
STUDIO_USERS = {"studio-a": ("316", 11), "studio-b": ("842", 12)}  # session -> (user id, seed)
CAMPAIGNS = {"campaign-c": (2_000, "thompson", 5), "campaign-d": (3_000, "ab", 9)}  # impressions, allocation, seed
# Five tabs, one in front: Chromium would otherwise throttle the timers and frames of the four behind it.
BACKGROUND_FLAGS = ["--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows",
                    "--disable-renderer-backgrounding"]
ACTION = 180_000  # ms for a click or a fill: a browser tab answers slowly while the others keep the cores busy
AUDIENCE_USERS = ("7", "13")  # the Audience session looks at the first, then switches to the second


# Records the environment at the moment something first imports torch, then lets the import go on.
_WATCH_TORCH = """
import os, sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("OMP_WAIT_POLICY when torch loads:", os.environ.get("OMP_WAIT_POLICY"))
            sys.meta_path.remove(self)
sys.meta_path.insert(0, Watch())
import services
"""


def test_sessions_threads_wait_passively_once_the_app_loads_torch() -> None:
    """Every page reaches torch through `services`; by then OpenMP's waiters must be told to sleep, not spin
    (spinning teams of concurrent sessions starved each other: batched generation ran up to 30x slower)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", _WATCH_TORCH], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "OMP_WAIT_POLICY when torch loads: PASSIVE" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def shared_server(demo_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Popen, Path]]:
    """One dashboard for all sessions; yields its URL, process and log (the log is checked for tracebacks)."""
    log = tmp_path_factory.mktemp("concurrency") / "server.log"
    with streamlit_server(log) as (url, proc):
        yield url, proc, log


async def _session(browser: Browser, server: str, page_name: str, errors: list[str]) -> Page:
    """A new browser context (so a new Streamlit session) on a page, opened through the sidebar link."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})
    context.set_default_timeout(ACTION)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{page_name}: {exc}"))
    await page.goto(server)
    await expect(page.get_by_role("heading", name="Audience")).to_be_visible(timeout=SLOW)
    if page_name != "Audience":
        await page.get_by_role("link", name=page_name).click()
        await expect(page.get_by_role("heading", name=page_name)).to_be_visible(timeout=SLOW)
    return page


async def _pick(page: Page, combobox_name: str, option: str, search: str) -> None:
    """Choose `option` of a selectbox by typing `search` (its filter is fuzzy: make the search specific)."""
    picker = page.get_by_role("combobox", name=combobox_name, exact=True)
    await picker.click()
    await picker.fill(search)  # into this tab's field: only one tab at a time holds the keyboard focus
    await page.get_by_role("option", name=re.compile(rf"^{re.escape(option)}( ·|$)")).first.click()


async def _set_number(page: Page, label: str, value: int) -> None:
    field = page.get_by_role("spinbutton", name=label, exact=True)
    await field.fill(str(value))
    await field.press("Tab")  # a number input commits on blur
    await expect(field).to_have_value(str(value))


async def _studio(browser: Browser, server: str, user: str, seed: int, errors: list[str]) -> dict:
    page = await _session(browser, server, "Studio", errors)
    await _pick(page, "User", f"User {user}", f"User {user}")
    slider = page.get_by_role("slider")
    await slider.focus()
    await slider.press("Home")  # one variant: the least the page allows
    await expect(slider).to_have_value("1")
    await _set_number(page, "Seed", seed)
    await page.get_by_role("button", name="Generate variants").click()
    await expect(page.get_by_text("variants ready")).to_be_visible(timeout=SLOW)
    await page.wait_for_selector(IDLE, timeout=SLOW)
    captions = await page.locator('[data-testid="stImage"]').all_inner_texts()
    return {"page": page, "text": await page.locator('[data-testid="stMain"]').inner_text(), "captions": captions}


async def _campaign(browser: Browser, server: str, impressions: int, allocation: str, seed: int,
                    errors: list[str]) -> dict:
    page = await _session(browser, server, "Campaign Lab", errors)
    await _set_number(page, "Impressions", impressions)
    await page.get_by_text({"thompson": "Thompson bandit", "ab": "A/B split"}[allocation], exact=True).click()
    compare = page.get_by_role("checkbox", name="Also run the other allocation on the same traffic")
    await compare.uncheck(force=True)  # Streamlit draws its own box over the input
    await expect(compare).not_to_be_checked()
    await _set_number(page, "Seed", seed)
    await page.get_by_role("button", name="Run campaign").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Results · "))).to_be_visible(timeout=SLOW)
    await page.wait_for_selector(IDLE, timeout=SLOW)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Impressions")
    return {"page": page, "heading": await page.get_by_role("heading", name=re.compile(r"^Results · ")).inner_text(),
            "impressions": await metric.locator('[data-testid="stMetricValue"]').inner_text(),
            "text": await page.locator('[data-testid="stMain"]').inner_text()}


async def _audience(browser: Browser, server: str, interactions: dict[str, int], errors: list[str]) -> dict:
    """Switch through the users; after each switch the page must show that user's number of interactions."""
    page = await _session(browser, server, "Audience", errors)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Interactions")
    for user in AUDIENCE_USERS:
        await _pick(page, "User (943 found)", f"User {user}", f"User {user} ·")
        await expect(metric.locator('[data-testid="stMetricValue"]')).to_have_text(str(interactions[user]),
                                                                                   timeout=SLOW)
    await page.wait_for_selector(IDLE, timeout=SLOW)
    return {"page": page, "picked": await page.get_by_role("combobox", name="User (943 found)").input_value(),
            "interactions": await metric.locator('[data-testid="stMetricValue"]').inner_text()}


async def _problems(page: Page) -> list[str]:
    """Exceptions and error boxes, except the Studio's rejected variants (an expected, per-variant verdict)."""
    shown = [f"exception: {t}" for t in await page.locator('[data-testid="stException"]').all_inner_texts()]
    errors = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    return shown + [f"error: {t}" for t in errors if not t.startswith("Rejected:")]


async def _loaded_models(browser: Browser, server: str, errors: list[str]) -> list[str]:
    page = await _session(browser, server, "Settings", errors)
    await page.wait_for_selector(IDLE, timeout=SLOW)
    text = await page.locator('[data-testid="stMain"]').inner_text()
    return re.findall(r"^(?:text|embed|image): .+$", text, flags=re.MULTILINE)


async def _five_sessions(server: str, interactions: dict[str, int]) -> dict:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS + BACKGROUND_FLAGS)
        errors: list[str] = []
        jobs = {name: _studio(browser, server, user, seed, errors) for name, (user, seed) in STUDIO_USERS.items()}
        jobs |= {name: _campaign(browser, server, *spec, errors) for name, spec in CAMPAIGNS.items()}
        jobs["audience"] = _audience(browser, server, interactions, errors)
        results = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
        for result in results.values():
            result["problems"] = await _problems(result.pop("page"))
        results["models"] = await _loaded_models(browser, server, errors)
        results["javascript_errors"] = errors
        await browser.close()
        return results


def _plain(text: str) -> str:
    """Text as a page shows it once Markdown has rendered: no emphasis marks, single spaces."""
    return " ".join(re.sub(r"[*_`~#]", "", text).split())


def _own_titles(dataset: str, since_id: int) -> dict[str, set[str]]:
    """The titles the store holds for each Studio user, from variants written during this test."""
    table = repository.variants(dataset)
    table = table[table["id"] > since_id]
    return {user: set(table.loc[table["user_id"] == user, "title"]) for user, _ in STUDIO_USERS.values()}


def test_five_sessions_at_once_keep_their_own_state_and_share_models(shared_server: tuple[str, Popen, Path],
                                                                     demo_store: str) -> None:
    url, proc, log = shared_server
    before = repository.variants(demo_store)
    last_id = int(before["id"].max()) if len(before) else 0
    started = time.monotonic()
    interactions = {u: len(repository.history(demo_store, u)) for u in AUDIENCE_USERS}
    results = asyncio.run(_five_sessions(url, interactions))
    print(f"five concurrent sessions took {time.monotonic() - started:.0f} s")  # for the report, not asserted

    assert proc.poll() is None, "the server died"
    assert not results["javascript_errors"], results["javascript_errors"]
    for name in (*STUDIO_USERS, *CAMPAIGNS, "audience"):
        assert not results[name]["problems"], f"{name}: {results[name]['problems']}"

    # Studio: each session shows its own user's variants, never the other session's
    titles = _own_titles(demo_store, last_id)
    for name, (user, _) in STUDIO_USERS.items():
        other = next(u for n, (u, _) in STUDIO_USERS.items() if n != name)
        shown = results[name]
        assert titles[user], f"nothing stored for user {user}"
        text = _plain(shown["text"])
        assert all(_plain(t) in text for t in titles[user]), f"{name} misses its own variants"
        assert not [t for t in titles[other] - titles[user] if _plain(t) in text], f"{name} shows user {other}'s"
        cards = [c for c in shown["captions"] if " · variant " in c]  # not the galleries' size captions
        assert cards and all(re.search(rf"· user {user}( ·|$)", c) for c in cards), shown["captions"]

    # Campaign Lab: each session's results carry its own allocation and traffic
    for name, (impressions, allocation, _) in CAMPAIGNS.items():
        shown = results[name]
        assert shown["heading"] == f"Results · {allocation} · 943 simulated users"
        assert shown["impressions"] == f"{impressions:,}"
        other = next(a for n, (_, a, _) in CAMPAIGNS.items() if n != name)
        assert f"Results · {other}" not in shown["text"]

    # Audience: the switch landed on the second user, with that user's history
    audience = results["audience"]
    assert audience["picked"].startswith(f"User {AUDIENCE_USERS[1]} ·")
    assert audience["interactions"] == str(interactions[AUDIENCE_USERS[1]])

    # one process, one copy of each model however many sessions asked for it at once
    models = results["models"]
    assert any(m.startswith("text: embedded:smollm2-135m-instruct on ") for m in models), models
    assert any(m.startswith("embed: embedded:all-minilm-l6-v2 on ") for m in models), models
    assert all(m.endswith("· loaded once") for m in models), models
    assert len(models) == len(set(models)), models

    # and nothing failed on the server's side either (a failure a page might not show)
    server_log = log.read_text()
    assert "Traceback" not in server_log and "database is locked" not in server_log, server_log[-4000:]
