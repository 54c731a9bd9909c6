"""The dashboard's pages run headless through Streamlit's AppTest (no browser)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import services
from generation import compose, copy
from store import repository

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(demo_store: str, tiny_llm: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def test_audience_page_lists_users_and_history(app: AppTest, demo_store: str) -> None:
    assert app.title[0].value == "Audience"
    assert app.selectbox(key="dataset").value == demo_store
    app.selectbox(key="user_id").set_value("2").run()
    assert not app.exception
    interactions = next(m for m in app.metric if m.label == "Interactions")
    assert int(interactions.value) == len(repository.history(demo_store, "2"))
    history = next(df.value for df in app.dataframe if "title" in df.value.columns)
    assert set(history["item_id"]) == set(repository.history(demo_store, "2")["item_id"])


def test_audience_page_computes_profile_with_evidence(app: AppTest, demo_store: str) -> None:
    app.selectbox(key="user_id").set_value("5").run()
    app.button(key="compute").click().run()
    assert not app.exception, app.exception
    assert any(h.value == "Current intent" for h in app.subheader)
    history_titles = set(repository.history(demo_store, "5")["title"])
    labels = [e.label for e in app.expander]
    assert any(label.startswith("Growing") or "vs catalog" in label for label in labels)
    evidence_titles = {t for df in app.dataframe if "title" in df.value.columns and "date" in df.value.columns
                       and "category" not in df.value.columns for t in df.value["title"]}
    assert evidence_titles and evidence_titles <= history_titles
    # once computed, the page shows the cached profile without another click
    app.run()
    assert any(h.value == "Current intent" for h in app.subheader)
    assert app.button(key="compute").label == "Recompute profile"
    # the Taste tab: neighbours and likely next items with their evidence, hooks for the item picked
    assert {"Taste neighbours", "Likely to love next", "Hooks for an item to promote"} <= {h.value for h in
                                                                                         app.subheader}
    assert sum(e.label.startswith("User ") and "similarity" in e.label for e in app.expander) == 5
    assert sum(" · liked by " in e.label and e.label.endswith(" neighbours") for e in app.expander) == 5
    app.selectbox(key="hook_item").set_value("50").run()
    history = repository.history(demo_store, "5")
    hooks = next(df.value for df in app.dataframe if "hook" in df.value.columns)
    liked = history[history["rating"] >= history["rating"].mean()]
    assert len(hooks) and set(hooks["hook"]) <= {copy.display_name(t) for t in liked["title"]}
    assert (hooks["their rating"] >= hooks["their mean"]).all()


def test_user_search_filters_and_reports_no_match(app: AppTest) -> None:
    app.text_input(key="user_query").set_value("librarian").run()
    options = app.selectbox(key="user_id").options
    assert options and all("librarian" in o for o in options)
    app.text_input(key="user_query").set_value("no-such-occupation").run()
    assert any("No user matches" in w.value for w in app.warning)


def test_the_picked_dataset_user_and_item_follow_the_user_across_pages(app: AppTest, demo_store: str) -> None:
    """A user picked on Audience is the Studio's user, the Studio's item is the Campaign Lab's, and both are in
    the address bar; the pickers say who each user is and how much history they have."""
    app.selectbox(key="user_id").set_value("5").run()
    assert app.query_params["user"] in ("5", ["5"]) and app.query_params["dataset"] in (demo_store, [demo_store])
    app.switch_page("pages/studio.py").run()
    assert not app.exception, app.exception
    picker = app.selectbox(key="studio_user")
    assert picker.value == "5"
    person = services.audience.users(demo_store).set_index("user_id").loc["5"]
    who = f"{person['age']} {person['gender']} {person['occupation']}"
    assert f"User 5 · {who} · {person['interactions']} interactions" in picker.options
    items = services.common.catalog(demo_store)["item_id"].tolist()
    other = next(i for i in items if i != app.selectbox(key="studio_item").value)
    app.selectbox(key="studio_item").set_value(other).run()
    assert app.query_params["item"] in (other, [other])
    app.switch_page("pages/campaign_lab.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="campaign_item").value == other
    app.switch_page("pages/audience.py").run()
    assert app.selectbox(key="user_id").value == "5"


@pytest.mark.parametrize(("asked", "shown"), [("7", "7"), ("no-such-user", None)])
def test_a_link_opens_on_its_user_and_ignores_one_it_cannot_offer(demo_store: str, tiny_llm: str, asked: str,
                                                                   shown: str | None) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.query_params["user"] = asked
    at.run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="user_id")
    assert picker.value == (shown or services.audience.users(demo_store)["user_id"].iloc[0])


def test_settings_page_shows_models_device_and_database(app: AppTest, tiny_llm: str) -> None:
    app.switch_page("pages/settings_page.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Settings"
    table = app.dataframe[0].value
    values = dict(zip(table["setting"], table["value"], strict=True))
    assert values["text_model"] == tiny_llm
    assert values["database_url"].startswith("sqlite:///")
    assert any(m.label == "Device" and m.value in ("cpu", "cuda", "mps") for m in app.metric)


def test_the_brand_kit_editor_saves_a_valid_kit_and_refuses_a_bad_one(app: AppTest) -> None:
    """Saved kits are what the next generation reads; a bad field is named and nothing is written."""
    from generation import compose

    before = compose.configured_brand_kit()
    app.switch_page("pages/settings_page.py").run()
    try:
        app.text_input(key="kit_name").set_value("Night Owl Films")
        app.text_area(key="kit_banned").set_value("spoiler\nfree")
        app.text_area(key="kit_ctas").set_value("Watch tonight\nSee it now")
        app.button(key="save_kit").click().run()
        assert not app.exception, app.exception
        assert any("Saved to" in s.value for s in app.success), [e.value for e in app.error]
        kit = compose.configured_brand_kit()
        assert (kit.name, kit.banned_words, kit.ctas) == ("Night Owl Films", ("spoiler", "free"),
                                                          ("Watch tonight", "See it now"))
        app.text_input(key="kit_disclaimer").set_value("Terms at <a href='http://x.example'>here</a>")  # markup
        app.button(key="save_kit").click().run()
        assert any("Nothing was saved" in e.value and "required_disclaimer" in e.value for e in app.error), \
            [e.value for e in app.error]
        assert compose.configured_brand_kit() == kit  # the refused kit changed nothing
        app.text_input(key="kit_disclaimer").set_value("Terms apply.")
        app.text_input(key="kit_logo").set_value("/no/such/logo.png")
        app.button(key="save_kit").click().run()
        assert any("Nothing was saved" in e.value and "'logo'" in e.value for e in app.error), \
            [e.value for e in app.error]
        assert compose.configured_brand_kit() == kit
    finally:
        services.settings.save_settings({"brand_kit": ""})  # back to the built-in kit for the other tests
    assert compose.configured_brand_kit() == before


def test_campaign_lab_runs_a_segment_campaign_and_compares_allocations(app: AppTest, demo_store: str) -> None:
    app.switch_page("pages/campaign_lab.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Campaign Lab"
    app.selectbox(key="segment_kind").set_value("gender").run()
    app.selectbox(key="segment_value").set_value("F").run()
    app.number_input(key="impressions").set_value(3000).run()
    app.button(key="run_campaign").click().run()
    assert not app.exception, app.exception
    women = int((repository.list_users(demo_store)["gender"] == "F").sum())
    assert any(h.value.endswith(f"{women} simulated users") for h in app.subheader)
    assert next(m for m in app.metric if m.label == "Impressions").value == "3,000"
    results = next(df.value for df in app.dataframe if "CTR, 95% low" in df.value.columns)  # human labels
    assert len(results) == 3 and results["Impressions"].sum() == 3000
    assert (results["CTR, 95% low"] <= results["CTR"]).all() and (results["CTR"] <= results["CTR, 95% high"]).all()
    assert results["Chance of being best"].sum() == pytest.approx(1.0, abs=1e-9)
    leader = results.loc[results["Chance of being best"].idxmax()]
    verdict = [e.value for e in [*app.success, *app.info] if "probability of having the highest CTR" in e.value]
    assert len(verdict) == 1 and verdict[0].startswith(f"**{leader['Variant']}**"), verdict
    assert f"{leader['Chance of being best']:.0%} probability" in verdict[0]
    arms = [df.value for df in app.dataframe if list(df.value.columns) == ["Variant", "Impressions", "CTR"]]
    assert len(arms) == 2 and all(arm["Impressions"].sum() == 3000 for arm in arms)  # both allocations, side by side
    assert {"**Thompson bandit** (logged)", "**A/B split** (counterfactual, not logged)"} <= {m.value for m in
                                                                                            app.markdown}


@pytest.mark.embedded
def test_studio_generates_scored_variants_with_banners(demo_store: str) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/studio.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Studio"
    at.selectbox(key="studio_user").set_value("1").run()
    at.slider(key="studio_n").set_value(2).run()
    at.button(key="generate").click().run()
    assert not at.exception, at.exception
    header = next(h.value for h in at.subheader if "variants ready" in h.value)
    ready = int(header.split()[0])
    assert ready >= 1
    ctrs = [m.value for m in at.metric if m.label == "Predicted CTR"]
    assert len(ctrs) == ready and all(v.endswith("%") for v in ctrs)
    captions = [c for i in at.get("image") for c in i.captions]
    cards = [c for c in captions if " · variant " in c]
    assert len(cards) == ready and all(c.startswith("300x250") and c.endswith(" design") for c in cards)
    gallery = sorted(c for c in captions if " · " not in c)  # each card's gallery: every size at once
    assert gallery == sorted([f"{w}x{h}" for w, h in compose.SIZES] * ready)
    at.radio(key="studio_size").set_value("728x90").run()
    assert not at.exception
    captions = [c for i in at.get("image") for c in i.captions if " · variant " in c]
    assert all(c.startswith("728x90 · variant ") for c in captions)
    exported = {int(c.split("variant ")[1].split(" ")[0]) for c in captions}  # what the export's files are named
    archive = zipfile.ZipFile(io.BytesIO(services.studio.export_variants(sorted(exported))))
    assert {f"banners/variant-{i}-728x90.png" for i in exported} <= set(archive.namelist())
    titles = [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")]
    at.button(key="send_to_lab").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Campaign Lab"
    sent = at.data_editor(key="variants_editor").value
    assert sent["title"].tolist() == titles[:ready] and len(sent) == ready  # every accepted variant, in order


def test_a_card_is_edited_by_hand_or_written_again_and_both_are_stored(demo_store: str) -> None:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/studio.py").run()
    at.selectbox(key="studio_user").set_value("1").run()
    at.slider(key="studio_n").set_value(2).run()
    at.button(key="generate").click().run()
    first = next(v for v in at.session_state["studio_variants"] if v["safety"]["status"] == "passed")
    original = repository.variant(first["id"])
    at.text_area(key=f"edit_body_{first['id']}").set_value("Rebels take on an empire in 1977.")
    at.button(key=f"save_edit_{first['id']}").click().run()
    assert not at.exception, at.exception
    edited = next(v for v in at.session_state["studio_variants"] if v.get("edited_from") == first["id"])
    assert edited["body"] == "Rebels take on an empire in 1977." and edited["safety"]["status"] == "passed"
    assert 0 < edited["score"] < 1 and set(edited["banners"]) == {f"{w}x{h}" for w, h in compose.SIZES}
    assert any(c.value == f"Edited by hand from variant {first['id']}" for c in at.caption)
    stored = repository.variant(edited["id"])
    assert stored["edited_from"] == first["id"] and stored["body"] == edited["body"]
    assert repository.variant(first["id"]) == original  # the model's own copy stays as written
    at.text_area(key=f"edit_body_{first['id']}").set_value("Winner of 12 Oscars and the best film ever.")
    at.button(key=f"save_edit_{first['id']}").click().run()
    refused = [v for v in at.session_state["studio_variants"] if v.get("edited_from") == first["id"]][0]
    assert refused["safety"]["status"] == "rejected" and any("Oscars" in r or "12" in r
                                                             for r in refused["safety"]["reasons"])
    with pytest.raises(ValueError, match="the limit is 25"):
        services.studio.edit_variant(first["id"], first["title"], first["body"], "x" * 26)
    before = [v["id"] for v in at.session_state["studio_variants"]]
    at.button(key=f"rewrite_{first['id']}").click().run()  # write the card again, in its place
    assert not at.exception, at.exception
    after = at.session_state["studio_variants"]
    slot = before.index(first["id"])
    fresh = after[slot]
    assert len(after) == len(before) and fresh["id"] not in before and [v["id"] for v in after][slot + 1:] == \
        before[slot + 1:]
    assert (fresh["user_id"], fresh["item_id"], fresh["angle"]) == (first["user_id"], first["item_id"],
                                                                    first["angle"])
    # four candidates a round, up to three rounds: the Studio fills every such slot (bench/generation.py)
    assert fresh["safety"]["status"] == "passed" and 0 < fresh["score"] < 1 and len(fresh["banners"]) == 5
    assert repository.variant(fresh["id"])["title"] == fresh["title"]
    assert repository.variant(first["id"]) == original  # the old card stays in the store
    at.multiselect(key=f"lock_{fresh['id']}").set_value(["title"]).run()  # keep the headline, write the rest
    at.button(key=f"rewrite_{fresh['id']}").click().run()
    assert not at.exception, at.exception
    again = at.session_state["studio_variants"][slot]
    assert again["id"] != fresh["id"] and again["title"] == fresh["title"] and again["safety"]["status"] == "passed"


def test_reward_tuning_launches_watches_evaluates_and_promotes_a_run(app: AppTest, demo_store: str,
                                                                      tiny_llm: str) -> None:
    from tuning import runs

    app.switch_page("pages/reward_tuning.py").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "Reward Tuning"
    app.number_input(key="steps").set_value(2)
    app.number_input(key="users").set_value(2)
    app.number_input(key="generations").set_value(2)
    app.number_input(key="batch").set_value(1)
    next(b for b in app.button if b.label == "Launch run").click().run()
    assert not app.exception, app.exception
    run_id = app.session_state["selected_run"]
    finished = runs.wait(run_id, timeout=600)
    assert finished["status"] == "finished", finished["error"]
    app.run()
    table = next(df.value for df in app.dataframe if "method" in df.value.columns)
    assert table.set_index("id").loc[run_id, "status"] == "finished"
    app.number_input(key="eval_users").set_value(3)
    app.number_input(key="best_of").set_value(2)
    app.button(key="evaluate").click().run()
    assert not app.exception, app.exception
    assert runs.get(run_id)["evaluation"]["status"] == "running"  # in a worker process, not the script thread
    assert any("in a worker process" in i.value for i in app.info)
    deadline = time.monotonic() + 300
    while runs.get(run_id)["evaluation"]["status"] == "running":
        assert time.monotonic() < deadline, runs.get(run_id)["evaluation"]
        time.sleep(1)
    assert runs.get(run_id)["evaluation"]["status"] == "finished", runs.get(run_id)["evaluation"]
    app.run()
    assert not app.exception, app.exception
    uplifts = [m for m in app.metric if m.label.startswith("Paired uplift")]
    assert len(uplifts) == 2 and all(m.value.endswith(" pp") for m in uplifts)  # percentage points, not percent
    assert any("nats per token" in c.value for c in app.caption)  # one number, not the raw dict
    figure = next(json.loads(e.proto.spec) for e in app.get("plotly_chart") if "Judge CTR" in e.proto.spec)
    measured = runs.get(run_id)["evaluation"]["settings"]
    for name, plus, minus in zip(figure["data"][0]["x"], figure["data"][0]["error_y"]["array"],
                                 figure["data"][0]["error_y"]["arrayminus"], strict=True):
        ctr = measured[name]["judge_ctr"]  # the bars reach the interval's real ends, a low end of 0 included
        assert (plus, minus) == pytest.approx((ctr["ci_high"] - ctr["mean"], ctr["mean"] - ctr["ci_low"]))
    samples = next(df.value for df in app.dataframe if "best_of_n" in df.value.columns)
    assert {"base", "best_of_n", "tuned"} <= set(samples.columns) and len(samples) > 0
    app.button(key="promote").click().run()
    adapter = finished["adapter_path"]
    assert services.settings.environment()["settings"]["text_adapter"] == adapter
    variants = services.studio.generate(demo_store, "50", user_id="4", n=1, seed=2)
    assert {v["adapter"] for v in variants} == {adapter}  # the Studio now writes with the promoted adapter
    app.run()
    app.button(key="rollback").click().run()
    assert services.settings.environment()["settings"]["text_adapter"] == ""


def test_reward_tuning_explains_each_method_and_fills_the_form_from_a_preset(app: AppTest) -> None:
    app.switch_page("pages/reward_tuning.py").run()
    assert not app.exception, app.exception
    defaults, quick = services.tuning.tuning_defaults("grpo"), services.tuning.quick_test("grpo")
    form = {"steps": "max_steps", "users": "users", "generations": "num_generations", "minutes": "time_budget_minutes"}
    assert {key: app.number_input(key=key).value for key in form} == {key: defaults[name] for key, name in form.items()}
    assert any(c.value.startswith("Online:") for c in app.caption)  # the method in plain words
    app.button(key="preset_quick").click().run()
    assert not app.exception, app.exception
    assert {key: app.number_input(key=key).value for key in form} == {key: quick[name] for key, name in form.items()}
    app.selectbox(key="method").set_value("dpo").run()
    assert any(c.value.startswith("Offline:") for c in app.caption)
    app.button(key="preset_defaults").click().run()
    dpo = services.tuning.tuning_defaults("dpo")
    assert {key: app.number_input(key=key).value for key in form} == {key: dpo[name] for key, name in form.items()}
    assert app.number_input(key="beta-dpo").value == dpo["beta"]
    assert "sft_steps" not in {n.key for n in app.number_input}  # only the recipe has a supervised stage
    app.selectbox(key="method").set_value("diffusion_dpo").run()
    assert not app.exception, app.exception
    shown = {n.key for n in app.number_input}  # the image method's own settings, beta on its own scale
    assert {"tokens", "eval_steps", "sft_steps"}.isdisjoint(shown)
    assert app.number_input(key="beta-diffusion_dpo").value == 5000
    assert not [w for w in (*app.selectbox, *app.radio, *app.checkbox) if w.key in ("target", "preferences", "gate")]
