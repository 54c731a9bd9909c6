"""Taste from the interaction data: taste neighbours, likely next items and hooks in the profile; a hook is true by
construction (an item the user rated at or above their mean) and the checks accept its name only as the
variant's own evidence; the ranking evaluation fits every model without the held-out interactions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cli
import services
from evaluation import intent_ranking
from generation import copy, embeddings, profiles, safety, taste
from rewards.audience import Impression, audience
from rewards.features import contradictions, creative_features
from store import repository

pytestmark = pytest.mark.embedded

STAR_WARS = "50"


def test_neighbours_share_the_users_items_and_picks_are_new_to_them(demo_store: str) -> None:
    found = profiles.profile(demo_store, "1", recompute=True, use_llm=False)
    history = repository.history(demo_store, "1")
    interactions = repository.interactions(demo_store)
    mine = set(history["item_id"])
    similarities = [n["similarity"] for n in found["neighbours"]]
    assert len(found["neighbours"]) == taste.SHOWN_NEIGHBOURS and similarities == sorted(similarities, reverse=True)
    for neighbour in found["neighbours"]:
        theirs = set(interactions.loc[interactions["user_id"] == neighbour["user_id"], "item_id"])
        assert neighbour["user_id"] != "1" and neighbour["shared"] == len(mine & theirs) > 0
        assert {e["item_id"] for e in neighbour["evidence"]} <= mine & theirs
    assert len(found["picks"]) == taste.PICKS and not {p["item_id"] for p in found["picks"]} & mine
    mean = history["rating"].mean()
    for pick in found["picks"]:
        assert 0 <= pick["neighbours_liked"] <= found["neighbour_pool"]
        assert all(e["item_id"] in mine and e["rating"] >= mean for e in pick["because"])


def test_every_hook_is_an_item_the_user_rated_at_or_above_their_mean(demo_store: str) -> None:
    """The issue's truth goal, over real users: each hook is in the user's history, rated at or above their own
    mean, is not the promoted item nor another item of its name, and hooks come most related first."""
    users = repository.list_users(demo_store)["user_id"].astype(str).tolist()
    catalog = repository.catalog(demo_store)
    rng = np.random.default_rng(0)
    with_hooks = 0
    for user in rng.choice(users, size=25, replace=False):
        history = repository.history(demo_store, user)
        for item_id in (STAR_WARS, str(rng.choice(catalog.index))):
            found = services.audience.hooks(demo_store, user, item_id)
            with_hooks += bool(found)
            assert [h["relatedness"] for h in found] == sorted((h["relatedness"] for h in found), reverse=True)
            for hook in found:
                rows = history[history["item_id"] == hook["item_id"]]
                assert len(rows) and (rows["rating"] == hook["rating"]).any(), hook
                assert hook["rating"] >= history["rating"].mean() and hook["user_mean"] == round(
                    history["rating"].mean(), 2)
                assert hook["item_id"] != item_id and hook["name"] != copy.display_name(catalog.at[item_id, "title"])
                assert hook["relatedness"] >= taste.MIN_RELATEDNESS
    assert with_hooks >= 25  # most users have a liked item related to Star Wars or a random item


def test_a_history_without_ratings_gives_no_hook(demo_store: str) -> None:
    history = repository.history(demo_store, "1")
    item = repository.catalog(demo_store).loc[STAR_WARS].to_dict()
    vectors = embeddings.item_vectors(demo_store, [*history["item_id"], STAR_WARS])
    tastes = profiles.taste_model(demo_store)
    assert taste.hooks(tastes, history, item, vectors)  # rated: Star Wars has related favourites
    assert taste.hooks(tastes, history.assign(rating=np.nan), item, vectors) == []  # chosen is not loved


def test_a_hook_is_named_only_as_the_variants_own_evidence(demo_store: str) -> None:
    """The Studio's check and both audiences accept another item's name only as the variant's hook, in its
    headline: the same copy without it, or with another user's hook, names another item, and so does a body that
    names the hook ("A classic Jerry Maguire comedy" was told of Vegas Vacation)."""
    item = repository.catalog(demo_store).loc[STAR_WARS].to_dict()
    labels, titles = safety.catalog_vocabulary(demo_store)
    hook = {"item_id": "181", "title": "Return of the Jedi (1983)", "name": "Return of the Jedi"}
    written = {"title": copy.hook_title(item, hook), "body": "Where the story began, in 1977.", "cta": "Watch now"}
    assert written["title"] == "Star Wars, for fans of Return of the Jedi"
    assert safety.check(written, item, labels, titles, {}, [hook["title"]]).passed
    for evidence in ([], ["Empire Strikes Back, The (1980)"]):
        verdict = safety.check(written, item, labels, titles, {}, evidence)
        assert "names another item ('Return of the Jedi')" in verdict.reasons, verdict.reasons
    in_body = written | {"body": "A classic Return of the Jedi adventure, in 1977."}
    verdict = safety.check(in_body, item, labels, titles, {}, [hook["title"]])
    assert "names another item ('Return of the Jedi')" in verdict.reasons, verdict.reasons
    lower = written | {"body": "A 1977 adventure for fans of return of the jedi."}  # the hook in any case
    verdict = safety.check(lower, item, labels, titles, {}, [hook["title"]])
    assert "names another item ('Return of the Jedi')" in verdict.reasons, verdict.reasons
    for crowd in (audience("train", demo_store), audience("judge", demo_store)):
        catalog = crowd.world.catalog
        features = creative_features([written | {"hook": hook}, written], catalog)
        assert contradictions(features, catalog, 0, catalog.index[STAR_WARS])[1:] == (0.0,) * 4
        assert contradictions(features, catalog, 1, catalog.index[STAR_WARS])[1] == 1.0
        named = creative_features([in_body | {"hook": hook}], catalog)
        assert contradictions(named, catalog, 0, catalog.index[STAR_WARS])[1] == 1.0
        users = crowd.world.population.user_ids[:20]
        hooked = crowd.probabilities([Impression(u, STAR_WARS, written | {"hook": hook}) for u in users])
        bare = crowd.probabilities([Impression(u, STAR_WARS, written) for u in users])
        assert (hooked > bare).all(), crowd.name  # a name the Studio would reject costs; as the hook, nothing


def test_hooks_take_the_odd_slots_when_their_headline_fits() -> None:
    item = {"item_id": "1", "title": "Toy Story (1995)", "category": "Animation|Children's|Comedy"}
    profile = {"interests": [{"label": "Comedy"}], "intent": {"focus": []}}
    short = {"title": "Babe (1995)", "name": "Babe"}
    long = {"title": "x", "name": "A Very Long Title That Cannot Fit In Any Headline Of Sixty"}
    slots = copy.slots(profile, item, 4, [long, short])
    assert [hook for _, hook in slots] == [None, short, None, None]
    assert [angle for angle, _ in slots] == ["Comedy", "fans of Babe", "Animation", "Children's"]
    assert copy.slots(profile, item, 1, [short]) == [("Comedy", None)]  # one variant sells through the interest
    assert copy.slots(profile, item, 1, [short], fixed=["fans of Babe"]) == [("fans of Babe", short)]  # rewritten


def test_the_evaluation_fits_every_model_without_the_held_out_items(demo_store: str) -> None:
    """Every user's last interaction is one item nobody chose before: a model fitted on all interactions would
    know it as the most popular item and rank it first; fitted on the training part, none can know it."""
    interactions = repository.interactions(demo_store)
    users = interactions["user_id"].drop_duplicates().head(150)
    part = interactions[interactions["user_id"].isin(users)]
    last = part.groupby("user_id")["timestamp"].transform("max") + 1
    novel = pd.DataFrame({"user_id": users.to_numpy(), "item_id": "1682", "rating": 5.0,
                          "timestamp": last.groupby(part["user_id"]).max().reindex(users).to_numpy()})
    part = pd.concat([part[part["item_id"] != "1682"], novel], ignore_index=True)
    catalog = repository.items(demo_store)
    vectors = embeddings.item_vectors(demo_store)
    report = intent_ranking.evaluate(part, catalog, vectors, negatives=50)
    assert report["users"] == 150
    for method in ("popularity", "matrix_factorization", "profile+taste"):
        assert report["results"][method]["hr@10"] < 0.3, (method, report["results"][method])


def test_cli_profile_lists_taste_and_hooks_for_an_item(demo_store: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["profile", "--user", "1", "--item", STAR_WARS, "--no-llm", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["neighbours"] and found["picks"] and found["hooks"]
    liked = repository.history(demo_store, "1")
    assert {h["item_id"] for h in found["hooks"]} <= set(liked.loc[liked["rating"] >= liked["rating"].mean(),
                                                                    "item_id"])
    assert cli.main(["profile", "--user", "1", "--item", "no-such-item", "--no-llm"]) == 1
    assert "Unknown item 'no-such-item'" in capsys.readouterr().err
