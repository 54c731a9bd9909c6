"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `streamlit run`."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator

import numpy as np
import pytest
from live_server import PAGE_TITLES, REPO, streamlit_server
from PIL import Image
from playwright.sync_api import Page, expect

import settings
from generation import compose, designs
from generation.brief import parse_brief
from generation.render import ProceduralRenderer
from store import repository

ARTIFACTS = REPO / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.embedded]


@pytest.fixture(scope="module")
def server(demo_store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A headless dashboard on a free port, using the session's store and the embedded models."""
    with streamlit_server(tmp_path_factory.mktemp("streamlit") / "server.log") as (url, _process):
        yield url


def open_page(page: Page, server: str, name: str) -> None:
    """Open the dashboard, then the page by its sidebar link: a deep link to a page of a just-started
    server opens Streamlit's "page not found" dialog."""
    page.goto(server)
    expect(page.get_by_role("heading", name="Audience")).to_be_visible(timeout=60_000)
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=60_000)


def test_audience_page_selects_user_and_shows_profile(server: str, page: Page, demo_store: str) -> None:
    page.goto(server)
    expect(page.get_by_role("heading", name="Audience")).to_be_visible(timeout=60_000)
    picker = page.get_by_role("combobox", name="User (943 found)")
    picker.click()
    page.keyboard.type("User 7 ·")
    page.get_by_role("option", name="User 7 ·").first.click()
    interactions = len(repository.history(demo_store, "7"))
    expect(page.get_by_text(str(interactions), exact=True)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Compute profile").click()
    expect(page.get_by_role("heading", name="Current intent")).to_be_visible(timeout=120_000)
    expect(page.get_by_role("heading", name="Lasting interests")).to_be_visible()
    expect(page.get_by_text("Drama ·").first).to_be_visible()
    expect(page.get_by_text("Right now this customer wants")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audience.png"), full_page=True)
    expect(page).to_have_url(re.compile(r"[?&]user=7(&|$)"))  # a link to this view opens on user 7
    page.get_by_role("link", name="Studio").click()  # and the Studio writes for the same user
    expect(page.get_by_role("heading", name="Studio")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("combobox", name="User", exact=True)).to_have_value(
        re.compile(r"^User 7 · .+ interactions$"), timeout=30_000)
    expect(page).to_have_url(re.compile(r"[?&]user=7(&|$)"))


def test_the_brand_kit_is_edited_in_the_browser(server: str, page: Page) -> None:
    """Settings: a saved kit is what the next banners use; a bad logo is named and nothing is saved."""
    from generation import compose

    open_page(page, server, "Settings")
    try:
        page.get_by_role("textbox", name="Brand name", exact=True).fill("Night Owl Films")
        page.get_by_role("button", name="Save brand kit").click()
        expect(page.get_by_text(re.compile(r"^Saved to .*brand_kit\.json"))).to_be_visible(timeout=30_000)
        assert compose.configured_brand_kit().name == "Night Owl Films"
        page.get_by_role("textbox", name=re.compile(r"^Logo file")).fill("/no/such/logo.png")
        page.get_by_role("button", name="Save brand kit").click()
        expect(page.get_by_text(re.compile(r"Nothing was saved: .*'logo'"))).to_be_visible(timeout=30_000)
        assert compose.configured_brand_kit().logo == ""
    finally:
        settings.save({"brand_kit": ""})  # the built-in kit again, for the other tests


def test_settings_page_is_reachable_from_the_sidebar(server: str, page: Page) -> None:
    open_page(page, server, "Settings")
    expect(page.get_by_text("embedded:smollm2-135m-instruct").first).to_be_visible()
    # every page's link carries a Material Symbols icon (a web font Streamlit ships), never an emoji that a
    # machine without an emoji font draws as an empty box
    links = page.get_by_test_id("stSidebarNavLink")
    expect(links).to_have_count(len(PAGE_TITLES))
    for title in PAGE_TITLES:
        link = links.filter(has_text=title)
        expect(link.get_by_test_id("stIconMaterial")).to_have_count(1)
        assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", link.inner_text()), link.inner_text()


def test_campaign_lab_runs_a_campaign_and_shows_charts(server: str, page: Page) -> None:
    open_page(page, server, "Campaign Lab")
    page.get_by_role("button", name="Run campaign").click(timeout=60_000)
    expect(page.get_by_role("heading", name="Results · thompson · 943 simulated users")).to_be_visible(
        timeout=180_000)
    expect(page.get_by_text("Cumulative regret (expected clicks lost vs the best variant)")).to_be_visible(
        timeout=30_000)
    expect(page.get_by_role("button", name="Download results (CSV)")).to_be_visible()
    verdict = page.get_by_text(re.compile(r"probability of having the highest CTR")).first
    expect(verdict).to_be_visible(timeout=30_000)  # the report's sentence: who wins, how surely, by how much
    assert re.search(r"\d+% probability of having the highest CTR", verdict.inner_text())
    expect(page.get_by_text("ci_low")).to_have_count(0)  # human labels, not column names
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "campaign_lab.png"), full_page=True)


def test_studio_generates_two_variants_and_shows_their_banners(server: str, page: Page) -> None:
    open_page(page, server, "Studio")
    slider = page.get_by_role("slider")
    slider.focus()
    slider.press("Home")  # 1
    slider.press("ArrowRight")  # 2
    expect(slider).to_have_value("2")
    page.get_by_role("button", name="Generate variants").click(timeout=60_000)
    header = page.get_by_role("heading", name=re.compile(r"\d+ variants ready, \d+ rejected"))
    expect(header).to_be_visible(timeout=300_000)
    ready, rejected = (int(n) for n in re.findall(r"\d+", header.inner_text()))
    # sampling differs between CPUs: every card has its banner and either a predicted CTR or the reasons; the
    # cards render one element after another, so each count is awaited
    cards = page.locator('xpath=//*[@data-testid="stImage"][not(ancestor::*[@data-testid="stExpander"])]//img')
    expect(cards).to_have_count(ready, timeout=30_000)
    expect(page.get_by_text("Predicted CTR")).to_have_count(ready, timeout=30_000)
    rejections = page.get_by_text(re.compile("^Rejected: "))
    expect(rejections).to_have_count(rejected, timeout=30_000)
    reasons = rejections.all_inner_texts()
    assert ready + rejected == 2, reasons
    assert all(r.removeprefix("Rejected: ").strip() for r in reasons)
    export = page.get_by_role("button", name="Export all accepted variants (ZIP)")
    expect(export).to_be_visible() if ready else expect(export).to_have_count(0)
    if ready:  # the gallery: every size of a variant at once, each checked on what the browser shows
        caption = page.locator('[data-testid="stImage"]').filter(has_text=" · variant ").first.inner_text()
        variant = repository.variant(int(re.search(r"variant (\d+)", caption).group(1)))
        gallery = page.locator('[data-testid="stExpander"]').filter(has_text="All 5 sizes").first
        gallery.get_by_text("All 5 sizes").click()
        images = gallery.locator('[data-testid="stImage"]')
        expect(images.locator("img")).to_have_count(5, timeout=30_000)
        for image in images.all():
            expect(image.locator("img")).to_be_visible()
            assert image.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")  # the file loaded
            size = re.search(r"\d+x\d+", image.inner_text()).group(0)
            assert_text_inside_the_safe_zone(image.locator("img").screenshot(), variant, size)
        page.get_by_text("Edit", exact=True).first.click()  # a hand edit: checked, drawn and shown beside it
        page.get_by_label("Body").first.fill("Rebels take on an empire in 1977.")
        page.get_by_role("button", name="Check and save the edit").first.click()
        expect(page.get_by_text(f"Edited by hand from variant {variant['id']}")).to_be_visible(timeout=120_000)
        edited = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="Rebels take on an empire")
        expect(edited.first).to_be_visible()  # the edited card, beside the original
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)
        send = page.get_by_role("button", name=re.compile(r"Send (all accepted|kept) variants to Campaign Lab"))
        expect(send).to_have_count(1, timeout=60_000)  # the edit's rerun may still show the stale button beside it
        send.click()
        expect(page.get_by_role("heading", name="Campaign Lab")).to_be_visible(timeout=60_000)
        # the Studio's variants fill the Lab's table (a canvas grid: its cells are in the page for screen readers)
        cell = page.locator('[role="gridcell"]').filter(has_text=variant["title"])
        expect(cell.first).to_be_attached(timeout=30_000)


def assert_text_inside_the_safe_zone(screenshot: bytes, variant: dict, size: str) -> None:
    """On the banner as the browser draws it: the variant's banner is composed again from its stored brief, art
    seed and design (it must match the file byte for byte); the screenshot must show that banner, and every
    pixel of it that reads as text (far from the bare backdrop, near the banner with its text) must lie inside
    the 6% safe zone. Both references are scaled to the screenshot, so the browser's scaling and its rounded
    corners count as neither."""
    width, height = (int(v) for v in size.split("x"))
    brief = variant["brief"]
    again = designs.banners_for_brief(ProceduralRenderer(), parse_brief(brief["text"]), variant["title"],
                                      variant["cta"], compose.configured_brand_kit(), brief["seed"],
                                      sizes=((width, height),), design=brief["design"])[size]
    with Image.open(variant["banners"][size]) as stored:
        assert again.image.tobytes() == stored.convert("RGB").tobytes(), size
    shot = Image.open(io.BytesIO(screenshot)).convert("RGB")
    ARTIFACTS.mkdir(exist_ok=True)
    shot.save(ARTIFACTS / f"banner-{size}.png")  # what the browser showed, for a person to look at
    shown = np.asarray(shot).astype(int)
    banner, behind = (np.asarray(i.resize(shot.size, Image.Resampling.LANCZOS)).astype(int)
                      for i in (again.image, again.backdrop))
    assert np.median(np.abs(shown - banner).sum(axis=-1)) < 30, f"{size}: the page does not show this banner"
    off_backdrop, off_banner = np.abs(shown - behind).sum(axis=-1), np.abs(shown - banner).sum(axis=-1)
    text = (off_backdrop > 200) & (off_banner + 100 < off_backdrop)
    sx, sy = shot.width / width, shot.height / height
    x0, y0, x1, y1 = compose.safe_area(width, height)
    outside = text.copy()
    outside[max(0, math.floor(y0 * sy) - 2):math.ceil(y1 * sy) + 2, max(0, math.floor(x0 * sx) - 2):
            math.ceil(x1 * sx) + 2] = False
    assert text.sum() > 50, f"{size}: no text found on the screenshot"
    assert not outside.any(), f"{size}: {int(outside.sum())} text pixels outside the safe zone"


@pytest.fixture
def no_runs_left_behind() -> Iterator[None]:
    """Workers outlive the dashboard by design (own session); a test must not leave one training."""
    yield
    from tuning import runs

    for run in runs.list_runs():
        if run["status"] in ("queued", "running"):
            runs.cancel(run["id"])
            runs.wait(run["id"], timeout=300)


def test_reward_tuning_run_launched_from_the_browser_finishes(server: str, page: Page,
                                                               no_runs_left_behind: None) -> None:
    from tuning import runs

    before = {r["id"] for r in runs.list_runs()}
    open_page(page, server, "Reward Tuning")
    for label, value in (("Steps", "1"), ("Prompts per step (batch)", "1"), ("Generations per prompt", "2"),
                         ("Training users", "2"), ("Max completion tokens", "16")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")  # Enter would submit the form with the fields not yet filled
    page.get_by_role("button", name="Launch run").click()
    expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
    new = [r for r in runs.list_runs() if r["id"] not in before]
    assert len(new) == 1 and new[0]["config"]["users"] == 2  # one submit, with the values filled in
    expect(page.get_by_text("finished · step 1 of 1")).to_be_visible(timeout=480_000)
    expect(page.get_by_text("judge CTR, held-out users").first).to_be_visible(timeout=30_000)  # live judge curve
    for label, value in (("Held-out users", "2"), ("Best of N (base)", "2")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
    page.get_by_role("button", name="Evaluate").click()
    expect(page.get_by_text("Paired uplift, tuned vs base")).to_be_visible(timeout=480_000)
    expect(page.get_by_text("Judge CTR with 95% intervals (2 held-out users)")).to_be_visible()
    uplift = page.locator('[data-testid="stMetric"]').filter(has_text="Paired uplift, tuned vs base").first
    assert re.search(r"[+-]\d+\.\d\d pp", uplift.inner_text())  # percentage points, not percent
    expect(page.get_by_text(re.compile(r"KL from the base model: \d+\.\d{3} nats per token"))).to_be_visible()
    page.get_by_role("button", name="Promote to Studio").click()
    expect(page.get_by_text("The Studio now generates with")).to_be_visible(timeout=30_000)
    adapter = runs.get(new[0]["id"])["adapter_path"]
    assert settings.load().text_adapter == adapter  # the server wrote it to the shared settings file
    page.get_by_role("button", name="Roll back to base").click()
    expect(page.get_by_text("base model, no adapter")).to_be_visible(timeout=30_000)
    assert settings.load().text_adapter == ""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "reward_tuning.png"), full_page=True)
