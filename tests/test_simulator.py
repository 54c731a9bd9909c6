"""The simulated audience on the real MovieLens-100k data with the embedded sentence encoder, fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

import cli
import services
from generation import safety
from rewards import validation
from rewards.appeal import split_by_time, taste_traits
from rewards.audience import (
    Audience,
    Impression,
    UnknownItem,
    audience,
    preference_pairs,
    score_creatives,
    world,
)
from rewards.features import MOODS, contradictions, creative_features
from store import impressions, movielens, repository
from store.repository import UnknownUser

pytestmark = pytest.mark.embedded

USERS = 100


@pytest.fixture(scope="module")
def report(demo_store: str) -> dict:
    return services.campaigns.validate_simulator(demo_store, users=USERS, seed=0)


@pytest.fixture(scope="module")
def probes(demo_store: str) -> validation.ProbeSet:
    return validation.probe_set(demo_store, users=USERS, seed=0)


@pytest.fixture(scope="module")
def train(demo_store: str) -> Audience:
    return audience("train", demo_store)


@pytest.fixture(scope="module")
def judge(demo_store: str) -> Audience:
    return audience("judge", demo_store)


def test_time_split_holds_out_each_users_latest_fifth():
    ratings = movielens.frames()[2]
    train_part, held = split_by_time(ratings)
    assert len(train_part) + len(held) == len(ratings)
    sizes = ratings.groupby("user_id").size()
    assert (held.groupby("user_id").size() == np.floor(0.2 * sizes)).all()
    latest_train = train_part.groupby("user_id")["timestamp"].max()
    assert (latest_train <= held.groupby("user_id")["timestamp"].min().reindex(latest_train.index)).all()


def test_appeal_separates_held_out_liked_items_from_unseen_items(report: dict):
    for name in ("train", "judge"):
        assert report["appeal_auc"][name]["auc"] > 0.75, name
        assert report["appeal_auc"][name]["users"] > 800  # nearly every user liked something held out


def test_every_attack_loses_to_the_clean_creative(report: dict):
    assert report["users"] == USERS
    for name in ("train", "judge"):
        assert set(report["attack_win_rate"][name]) == set(validation.ATTACKS)
        for attack, rate in report["attack_win_rate"][name].items():
            assert rate >= 0.9, (name, attack, rate)
    assert all(report["passed"].values())


def test_clean_creatives_are_calibrated_to_realistic_ctr(report: dict):
    for name in ("train", "judge"):
        ctr = report["clean_ctr"][name]
        assert validation.CTR_RANGE[0] <= ctr["p50"] <= validation.CTR_RANGE[1], (name, ctr)
        assert ctr["share_in_range"] >= 0.8, (name, ctr)
        assert ctr["p5"] < ctr["p50"] < ctr["p95"]  # users differ


def test_same_seed_gives_the_same_clicks(train: Audience, probes: validation.ProbeSet):
    shown = probes.clean * 20
    p = train.probabilities(shown)
    first = train.sample_clicks(shown, np.random.default_rng(7), p)
    again = train.sample_clicks(shown, np.random.default_rng(7), train.probabilities(shown))
    other = train.sample_clicks(shown, np.random.default_rng(8), p)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == bool and first.any()
    assert abs(first.mean() - p.mean()) < 4 * np.sqrt(p.mean() / len(p))  # Bernoulli draws from p


def test_traits_of_a_user_do_not_depend_on_who_else_is_simulated(train: Audience):
    population, catalog = train.world.population, train.world.catalog
    signals = {"shares": population.shares, "centroid": population.centroid,
               "activity": np.log1p(population.train.groupby("user_id").size().reindex(population.user_ids)
                                    .fillna(0).to_numpy()), "old": np.zeros(len(population.user_ids))}
    ages = np.full(len(population.user_ids), 30.0)
    full = taste_traits(population.user_ids, ages, signals, catalog, seed=0)
    half = {k: v[::2] for k, v in signals.items()}
    subset = taste_traits(population.user_ids[::2], ages[::2], half, catalog, seed=0)
    reseeded = taste_traits(population.user_ids, ages, signals, catalog, seed=1)
    for trait in ("preferred_words", "preferred_energy", "contrast_need", "hype_aversion", "cta_response"):
        np.testing.assert_allclose(full[trait][::2], subset[trait])
        assert not np.allclose(full[trait], reseeded[trait])


def test_train_and_judge_differ_but_agree_in_direction(train: Audience, judge: Audience,
                                                       probes: validation.ProbeSet):
    shown = probes.all()
    p_train, p_judge = train.probabilities(shown), judge.probabilities(shown)
    assert not np.allclose(p_train, p_judge, rtol=0.05)
    assert not np.array_equal(train.appeal.z, judge.appeal.z)
    assert spearmanr(p_train, p_judge).statistic > 0.5
    clean = len(probes.clean)
    assert spearmanr(p_train[:clean], p_judge[:clean]).statistic > 0.3  # also among fluent creatives


def test_later_positions_and_repeated_showings_lower_the_probability(train: Audience, judge: Audience,
                                                                     probes: validation.ProbeSet):
    first = probes.clean[0]
    slots = [Impression(first.user_id, first.item_id, first.creative, position=k) for k in range(5)]
    repeats = [Impression(first.user_id, first.item_id, first.creative, seen=k) for k in range(5)]
    for crowd in (train, judge):
        assert np.all(np.diff(crowd.probabilities(slots)) < 0)
        assert np.all(np.diff(crowd.probabilities(repeats)) < 0)


def test_banner_matching_the_users_taste_and_legible_text_win(train: Audience, probes: validation.ProbeSet):
    first = probes.clean[0]
    traits = train.world.population.traits
    user = train.world.population.index[first.user_id]
    order = np.argsort(traits["moods"][user])
    liked, disliked, palette = MOODS[order[-1]], MOODS[order[0]], traits["palette"][user]

    def shown(**banner) -> Impression:
        return Impression(first.user_id, first.item_id, first.creative | {"banner": banner})

    p = train.probabilities([
        shown(palette=palette.tolist(), mood=liked, contrast=12.0),
        shown(palette=(255 - palette).tolist(), mood=liked, contrast=12.0),
        shown(palette=palette.tolist(), mood=disliked, contrast=12.0),
        shown(palette=palette.tolist(), mood=liked, contrast=1.1),
    ])
    assert p[0] > p[1] and p[0] > p[2] and p[0] > p[3]


def test_catalog_checks_read_names_years_and_categories(train: Audience):
    catalog = train.world.catalog
    star_wars, kids = catalog.index["50"], catalog.index["772"]  # Star Wars (1977); Kids (1995), a drama
    creatives = [
        {"title": "Star Wars: the 1977 classic", "body": "An adventure among the stars.", "cta": "Watch now"},
        {"title": "Kids, a 1995 drama", "body": "A raw, honest film.", "cta": "Watch now"},
        {"title": "Star Wars: the 1981 classic", "body": "A comedy among the stars.", "cta": "Watch now"},
        {"title": "Toy Story meets Star Wars", "body": "An adventure.", "cta": "Watch now"},
    ]
    features = creative_features(creatives, catalog)
    assert contradictions(features, catalog, 0, star_wars) == (1.0, 0.0, 0.0, 0.0, 0.0)  # 'Wars' is no War claim
    assert contradictions(features, catalog, 1, kids) == (1.0, 0.0, 0.0, 0.0, 0.0)  # the title 'Kids' is no genre
    assert contradictions(features, catalog, 2, star_wars) == (1.0, 0.0, 1.0, 1.0, 0.0)  # wrong year (once), no comedy
    assert contradictions(features, catalog, 3, star_wars)[1] == 1.0  # names another film


@pytest.mark.parametrize(("item_id", "title", "body"), [
    ("127", "The Godfather, a family saga", "Crime and power in 1972."),  # 'family' is no Children's claim
    ("127", "The Godfather", "A war between families."),  # nor is 'war' without a kind of film
    ("772", "Kids, a 1995 drama", "A raw, honest film."),  # the film's own name is no genre
    ("127", "The Godfather: a war film", "Crime and power."),
    ("127", "The Godfather", "A film for the whole family."),
    ("127", "The Godfather", "A romantic story of power."),
    ("127", "The Godfather, in 1974", "Crime and power."),
    ("50", "Toy Story meets Star Wars", "An adventure."),
    ("50", "Star Wars: The Force Awakens", "An adventure."),
])
def test_the_audience_reads_facts_as_the_studio_checks_them(train: Audience, demo_store: str, item_id: str,
                                                           title: str, body: str):
    """One checker: the audience counts a contradiction exactly when the Studio's check rejects the copy's facts,
    so it neither pays for copy the Studio rejects nor penalises copy the Studio passes."""
    catalog = train.world.catalog
    item = catalog.index[item_id]
    copy = {"title": title, "body": body, "cta": "Watch now"}
    _, other, year, category, ungrounded = contradictions(creative_features([copy], catalog), catalog, 0, item)
    row = repository.items(demo_store).set_index("item_id").loc[item_id].to_dict() | {"item_id": item_id}
    studio = safety.fact_problems(copy, row, *safety.catalog_vocabulary(demo_store),
                                  services.studio.brand_kit().check_terms())
    assert bool(other or year or category or ungrounded) == bool(studio), studio
    assert bool(category) == any(r.startswith("calls it") for r in studio)


@pytest.mark.parametrize("invented", [
    {"title": "Star Wars: The Force Awakens", "body": "An adventure among the stars.", "cta": "Watch now"},
    {"title": "Star Wars: the 1977 classic", "body": "Harrison Ford in an adventure among the stars.",
     "cta": "Watch now"},
    {"title": "Star Wars: the best film ever made", "body": "An adventure among the stars.", "cta": "Watch now"},
    {"title": "Star Wars: the 1977 classic", "body": "An adventure among the stars, only $9.99.", "cta": "Watch now"},
])
def test_both_audiences_penalise_what_the_studio_rejects_as_ungrounded(train: Audience, judge: Audience,
                                                                       invented: dict):
    """Copy that names, numbers or claims what the catalog lacks scores below the same copy without it for every
    user, in both audiences: the reward can never pay for invention (the Studio's grounding check)."""
    true = {"title": "Star Wars: the 1977 classic", "body": "An adventure among the stars.", "cta": "Watch now"}
    catalog = train.world.catalog
    features = creative_features([true, invented], catalog)
    assert contradictions(features, catalog, 1, catalog.index["50"])[4] == 1.0
    users = train.world.population.user_ids[:50]
    for crowd in (train, judge):
        honest = crowd.probabilities([Impression(u, "50", true) for u in users])
        made_up = crowd.probabilities([Impression(u, "50", invented) for u in users])
        assert (made_up < honest).all(), crowd.name


def test_unknown_users_and_items_are_refused(train: Audience):
    creative = {"title": "A film", "body": "Worth a look.", "cta": "Watch now"}
    with pytest.raises(UnknownUser):
        train.probabilities([Impression("no-such-user", "1", creative)])
    with pytest.raises(UnknownItem):
        train.probabilities([Impression("1", "no-such-item", creative)])
    with pytest.raises(ValueError):
        audience("jury", train.dataset)


def test_preference_pairs_follow_the_train_audience(train: Audience, probes: validation.ProbeSet):
    chosen_users = range(12)
    prompts = [f"Write an ad for user {probes.clean[n].user_id}" for n in chosen_users]
    groups = [[probes.attacks["shouting"][n].creative, probes.clean[n].creative,
               probes.attacks["wrong_genre"][n].creative] for n in chosen_users]
    users = [probes.clean[n].user_id for n in chosen_users]
    items = [probes.clean[n].item_id for n in chosen_users]

    def reward(creatives: list, user_id: list, item_id: list) -> list[float]:
        return score_creatives(train, creatives, [""] * len(creatives), user_id, item_id).tolist()

    rows = preference_pairs(prompts, groups, users, items, reward)
    assert len(rows) == len(prompts)
    for row, group, user, item in zip(rows, groups, users, items, strict=True):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["chosen"] in group and row["rejected"] in group
        chosen, rejected = reward([row["chosen"], row["rejected"]], user_id=[user] * 2, item_id=[item] * 2)
        assert chosen > rejected
    assert sum(row["chosen"] == group[1] for row, group in zip(rows, groups, strict=True)) >= 0.9 * len(rows)


def test_impressions_are_logged_and_read_back(demo_store: str, judge: Audience, probes: validation.ProbeSet):
    shown = [Impression(imp.user_id, imp.item_id, imp.creative, position=n % 3) for n, imp in
             enumerate(probes.clean[:30])]
    p = judge.probabilities(shown)
    clicks = judge.sample_clicks(shown, 3, p)
    before = len(impressions.read_impressions(demo_store, audience="judge"))
    assert judge.record(shown, p, clicks) == len(shown)
    log = impressions.read_impressions(demo_store, audience="judge")
    assert len(log) == before + len(shown)
    latest = log.tail(len(shown)).reset_index(drop=True)
    assert latest["user_id"].tolist() == [imp.user_id for imp in shown]
    assert latest["position"].tolist() == [imp.position for imp in shown]
    np.testing.assert_allclose(latest["probability"], p)
    np.testing.assert_array_equal(latest["click"].astype(bool), clicks)
    assert (latest["audience"] == "judge").all() and latest["shown_at"].notna().all()
    assert latest["variant_id"].nunique() == len({imp.creative["body"] for imp in shown})
    one_user = impressions.read_impressions(demo_store, audience="judge", user_id=shown[0].user_id)
    assert set(one_user["user_id"]) == {shown[0].user_id}


def test_world_is_built_once_and_shared(demo_store: str, train: Audience, judge: Audience):
    assert world(demo_store) is train.world is judge.world
    assert audience("train", demo_store).appeal is train.appeal


def test_cli_validate_simulator_prints_every_check(demo_store: str, capsys: pytest.CaptureFixture):
    assert cli.main(["validate-simulator", "--users", "40", "--dataset", demo_store]) == 0
    out = capsys.readouterr().out
    assert "appeal AUC" in out and "clean beats keyword_stuffed" in out and "clean CTR p50" in out
    assert out.count("PASS") == 3 and "FAIL" not in out
