"""The service layer: every action of the dashboard, callable from the CLI and tests without a browser.

Pages and `cli.py` call these functions and nothing below them, so each page action has one
implementation. Functions take an optional `progress(fraction, message)` callback for slow work.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

import limits
import settings
from generation import brief as briefs
from generation import brief_writer, compose, copy, embeddings, engine, intent, models, render, writer
from rewards import segments, variant_file
from store import csv_import, movielens, repository

Progress = Callable[[float, str], None]
DEFAULT_DATASET = movielens.NAME


def _quiet(_fraction: float, _message: str) -> None:
    """The progress callback used when the caller does not show progress."""


def ensure_demo_data() -> bool:
    """Load MovieLens-100k into the store on first use; True when it was loaded now."""
    return movielens.ensure_loaded()


def prepare(progress: Progress = _quiet) -> dict:
    """Everything a first page view would otherwise wait for: demo data, item embeddings, the text model."""
    started = time.perf_counter()
    progress(0.0, "Loading the demo dataset")
    loaded = ensure_demo_data()
    vectors = embeddings.item_vectors(DEFAULT_DATASET, progress=lambda f, m: progress(0.1 + 0.4 * f, m))
    progress(0.5, f"Loading {settings.load().text_model}")
    llm = models.text_model()
    progress(1.0, "Ready")
    return {"demo_dataset": "loaded now" if loaded else "already loaded", "item_embeddings": len(vectors),
            "text_model": f"{llm.model_id} on {llm.device} ({llm.load_seconds:.1f} s)",
            "seconds": round(time.perf_counter() - started, 1)}


def datasets() -> pd.DataFrame:
    ensure_demo_data()
    return repository.dataset_summary()


def users(dataset: str = DEFAULT_DATASET, query: str = "", limit: int | None = None) -> pd.DataFrame:
    if limit is not None:
        limits.LIST_LIMIT.check(limit)
    repository.require_dataset(dataset)
    return repository.list_users(dataset, query, limit)


def user(dataset: str, user_id: str) -> dict:
    return repository.get_user(dataset, str(user_id).strip())


def history(dataset: str, user_id: str) -> pd.DataFrame:
    """The user's history, oldest first, with a readable date column."""
    frame = repository.history(dataset, str(user_id).strip())
    return frame.assign(date=pd.to_datetime(frame["timestamp"], unit="s"))


def catalog_shares(dataset: str) -> dict[str, float]:
    """Share of each category across the catalog, the reference that makes an interest distinctive."""
    catalog = repository.items(dataset)
    return intent.category_shares(catalog, np.ones(len(catalog)))


def history_hash(frame: pd.DataFrame, model: str) -> str:
    """Fingerprint of what a profile was computed from; a change means the cache is stale."""
    key = frame[["item_id", "timestamp", "rating"]].to_csv(index=False) + model + intent.ALGORITHM_VERSION
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _fingerprint(dataset: str, user_id: str, use_llm: bool) -> tuple[pd.DataFrame, str, str]:
    frame = repository.history(dataset, user_id)
    cfg = settings.load()
    model_name = cfg.text_model if use_llm else "none (structured signals only)"
    return frame, model_name, history_hash(frame, f"{model_name}|{cfg.embedding_model}")


def cached_profile(dataset: str, user_id: str, use_llm: bool = True) -> dict | None:
    """The stored profile if it was computed from the current history and models, else None."""
    user_id = str(user_id).strip()
    _, _, fingerprint = _fingerprint(dataset, user_id, use_llm)
    cached = repository.load_profile(dataset, user_id)
    return cached[0] | {"cached": True} if cached and cached[1] == fingerprint else None


def profile(dataset: str, user_id: str, recompute: bool = False, use_llm: bool = True,
            progress: Progress = _quiet) -> dict:
    """The user's profile from the cache, or inferred now (and cached) when asked or when stale."""
    user_id = str(user_id).strip()
    progress(0.05, "Reading history")
    if not recompute and (cached := cached_profile(dataset, user_id, use_llm)):
        progress(1.0, "Loaded from cache")
        return cached
    frame, model_name, fingerprint = _fingerprint(dataset, user_id, use_llm)
    started = time.perf_counter()
    progress(0.15, "Embedding history items")
    vectors = embeddings.item_vectors(dataset, frame["item_id"].tolist())
    matrix = np.stack([vectors[i] for i in frame["item_id"]]) if len(frame) else np.zeros((0, 1))
    writer = None
    if use_llm:
        progress(0.35, f"Loading {model_name}")
        llm = models.text_model()
        progress(0.5, "Writing the intent summary")

        def writer(chat: list[dict]) -> str:
            return llm.generate([chat], max_new_tokens=40, assistant_prefix=" " + intent.SUMMARY_PREFIX)[0]

    result = intent.build_profile(user_id, frame, matrix, catalog_shares(dataset), model_name, writer)
    payload = result.to_dict() | {"dataset": dataset, "embedding_model": settings.load().embedding_model,
                                  "seconds": round(time.perf_counter() - started, 2), "version": fingerprint}
    progress(0.95, "Saving")
    repository.save_profile(dataset, user_id, model_name, fingerprint, payload)
    progress(1.0, "Done")
    return payload | {"cached": False}


def category_mix(frame: pd.DataFrame) -> pd.DataFrame:
    """Interactions per category (an item counts once in each of its categories) with mean rating."""
    exploded = frame.assign(category=frame["category"].map(intent.categories_of)).explode("category")
    exploded = exploded.dropna(subset=["category"])
    mix = exploded.groupby("category").agg(interactions=("item_id", "size"), mean_rating=("rating", "mean"))
    mix["share"] = mix["interactions"] / max(len(frame), 1)
    return mix.sort_values("interactions", ascending=False).reset_index()


def activity(frame: pd.DataFrame, freq: str = "W") -> pd.DataFrame:
    """Interactions and mean rating per period (weeks by default), for the activity chart."""
    dated = frame.assign(period=pd.to_datetime(frame["timestamp"], unit="s").dt.to_period(freq).dt.start_time)
    return dated.groupby("period").agg(interactions=("item_id", "size"),
                                       mean_rating=("rating", "mean")).reset_index()


def import_csv(name: str, items_data: bytes, interactions_data: bytes, items_name: str = "items.csv",
               interactions_name: str = "interactions.csv", replace: bool = False) -> dict[str, int]:
    """Validate and import uploaded CSV files; raises csv_import.ImportFailed listing every problem."""
    return csv_import.import_bytes(name, items_data, interactions_data, items_name, interactions_name, replace)


def import_csv_files(name: str, items_path: str | Path, interactions_path: str | Path,
                     replace: bool = False) -> dict[str, int]:
    return csv_import.import_files(name, items_path, interactions_path, replace)


def import_message(name: str, counts: dict[str, int]) -> str:
    """What an import did, in words, for the Audience page and the CLI; says what was redacted, as a receipt."""
    message = (f"Imported '{name}': {counts['users']} users, {counts['items']} items, {counts['interactions']} "
               f"interactions; redacted {counts.get('redacted', 0)} personal identifiers")
    if counts.get("neutralised"):
        message += f"; neutralised {counts['neutralised']} texts holding instructions or markup"
    return message + "."


def environment() -> dict:
    """What the Settings page shows: resolved settings with their sources, device and loaded models."""
    cfg = settings.load()
    return {"settings": cfg.public(), "sources": cfg.sources, "env_vars": settings.ENV_VARS,
            "device": models.resolve_device(cfg.device), "settings_file": str(settings.settings_file()),
            "loaded_models": models.loaded(), "model_loads": models.load_counts(), "problems": config_problems()}


def config_problems() -> list[str]:
    """Settings that will fail at first use (a broken brand kit, a model folder that is not there), found now so
    the Settings page can name them before the Studio or a run trips over them."""
    cfg = settings.load()
    problems = []
    try:
        compose.load_brand_kit(cfg.brand_kit)
    except ValueError as exc:
        problems.append(f"brand_kit ({cfg.sources['brand_kit']}): {exc}")
    for key in ("text_model", "embedding_model", "image_model", "text_adapter", "image_adapter", "brief_adapter"):
        value = str(getattr(cfg, key, "") or "")
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            problems.append(f"{key} ({cfg.sources[key]}): the folder {value} does not exist")
    return problems


def save_settings(changes: dict[str, str]) -> str:
    """Persist settings to the settings file; they apply to the next model load. A brand kit that does not load
    is refused here, naming the file and the key, rather than at the next generation."""
    kit = changes.get("brand_kit")
    if isinstance(kit, str) and kit.strip() and kit.strip() != settings.load().brand_kit:
        compose.load_brand_kit(kit.strip())
    return str(settings.save(changes))


def eval_intent(dataset: str = DEFAULT_DATASET, users: int | None = None, negatives: int = 100, seed: int = 0,
                progress: Progress = _quiet) -> dict:
    """Leave-last-one-out ranking quality of profiles against popularity and matrix factorization."""
    from evaluation import intent_ranking

    limits.check_all({"users": users, "negatives": negatives, "seed": seed},
                     {"users": limits.EVAL_USERS, "negatives": limits.NEGATIVES, "seed": limits.SEED})
    ensure_demo_data()
    vectors = embeddings.item_vectors(dataset, progress=lambda f, m: progress(0.1 * f, m))
    started = time.perf_counter()
    report = intent_ranking.evaluate(repository.interactions(dataset), repository.items(dataset), vectors,
                                     users, negatives, seed,
                                     progress=lambda f, m: progress(0.1 + 0.9 * f, m))
    return report | {"dataset": dataset, "seconds": round(time.perf_counter() - started, 1)}


# --- Campaign Lab -------------------------------------------------------------------------------------------

def catalog(dataset: str) -> pd.DataFrame:
    """The dataset's items indexed by item id (for pickers)."""
    return repository.items(dataset).set_index("item_id", drop=False)


_derived: dict[tuple, object] = {}
_derived_lock = threading.Lock()


def _per_dataset(kind: str, dataset: str, build):
    """Build something derived from a whole dataset once per loaded state of it (pages rerun often)."""
    key = (kind, *repository.dataset_version(dataset))
    with _derived_lock:
        if key not in _derived:
            _derived[key] = build()
        return _derived[key]


def default_item(dataset: str) -> str:
    """The most interacted-with item: a sensible first thing to promote."""
    return _per_dataset("default_item", dataset, lambda: str(
        repository.interactions(dataset)["item_id"].value_counts().index[0]))


def parse_variants(data: bytes, name: str) -> list[dict[str, str]]:
    return variant_file.parse(data, name)


def parse_variants_file(path: str | Path) -> list[dict[str, str]]:
    return variant_file.read_file(path)


def validate_variants(rows: list[dict]) -> list[dict[str, str]]:
    return variant_file.validate(rows, "variants")


def example_variants(dataset: str, item_id: str) -> list[dict[str, str]]:
    """Starting variants for an item written from its catalog facts, for a marketer to edit or replace."""
    item = catalog(dataset).loc[item_id]
    name = re.sub(r"\s*\(\d{4}\)\s*$", "", str(item["title"]))
    cats = intent.categories_of(item["category"])
    kind = f"{cats[0].lower()} " if cats else ""
    article = "An" if (kind or "pick")[0] in "aeiou" else "A"
    year = f" ({int(item['year'])})" if pd.notna(item["year"]) else ""
    return [
        {"title": f"{name}{year}", "body": f"The {kind}classic everyone talks about.", "cta": "Watch now"},
        {"title": f"Tonight: {name}", "body": f"{article} {kind}pick made for your next night in.",
         "cta": "Start watching"},
        {"title": f"Rediscover {name}", "body": "See why audiences keep coming back to it.", "cta": "Play"},
    ]


def segment_kinds() -> dict[str, str]:
    return dict(segments.KINDS)


def segment_table(dataset: str) -> pd.DataFrame:
    """Every user's segments (demographics and taste theme); built once per loaded state of the dataset."""
    table = _per_dataset("segments", dataset, lambda: segments.table(
        repository.list_users(dataset), repository.interactions(dataset), repository.items(dataset)))
    return table.copy()


def segment_values(dataset: str, kind: str) -> list[str]:
    """The groups of a segment kind, largest first ('everyone' for 'all')."""
    table = segment_table(dataset)
    return table[kind].dropna().value_counts().index.astype(str).tolist()


def csv_export(frame: pd.DataFrame) -> bytes:
    """CSV bytes safe to open in a spreadsheet: cells that would start a formula are prefixed with '."""
    def guard(value: object) -> object:
        return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value

    # CRLF rows (RFC 4180) make the writer quote any cell holding a bare CR; with '\n' rows a CR in a cell is left
    # unquoted, a spreadsheet splits the row there, and what follows the CR starts a new, unguarded cell
    return frame.map(guard).to_csv(index=False, lineterminator="\r\n").encode("utf-8")


def click_matrix(dataset: str, item_id: str, user_ids: list[str], variants: list[dict],
                 audience_name: str = "train", seed: int = 0) -> np.ndarray:
    """Expected click probability of every (user, variant) pair for an item, in one batch."""
    from rewards.audience import Impression, audience

    crowd = audience(audience_name, dataset, seed)
    pairs = [Impression(u, item_id, v) for u in user_ids for v in variants]
    return crowd.probabilities(pairs).reshape(len(user_ids), len(variants))


def run_campaign(dataset: str, item_id: str, variants: list[dict], segment_kind: str = "all",
                 segment_value: str | None = None, impressions: int = 20_000, allocation: str = "thompson",
                 seed: int = 0, audience_name: str = "train", max_users: int | None = None,
                 progress: Progress = _quiet) -> dict:
    """Simulate a campaign for an item's variants on a segment, log its impressions, and summarise it."""
    from rewards import campaign
    from rewards.audience import Impression, audience

    limits.check_all({"impressions": impressions, "max_users": max_users, "seed": seed},
                     {"impressions": limits.IMPRESSIONS, "max_users": limits.CAMPAIGN_USERS, "seed": limits.SEED})
    item_id = _known_item(dataset, item_id)  # before minutes of scoring, not after
    variants = validate_variants(variants)
    table = segment_table(dataset)
    user_ids = segments.members(table, segment_kind, segment_value)
    if max_users is not None and max_users < len(user_ids):
        rng = np.random.default_rng(seed)
        user_ids = sorted(rng.choice(user_ids, size=max_users, replace=False).tolist(), key=str)
    progress(0.02, f"Scoring {len(variants)} variants for {len(user_ids)} simulated users")
    matrix = click_matrix(dataset, item_id, user_ids, variants, audience_name, seed)
    result = campaign.simulate(matrix, impressions, allocation, seed=seed, user_ids=user_ids,
                               progress=lambda f, m: progress(0.05 + 0.85 * f, m))
    progress(0.92, "Saving the impression log")
    log = result.impressions
    crowd = audience(audience_name, dataset, seed)
    crowd.record([Impression(u, item_id, variants[v], int(p)) for u, v, p in
                  zip(log["user_id"], log["variant"], log["position"], strict=True)],
                 log["probability"].to_numpy(), log["click"].to_numpy())
    by_user = table.set_index("user_id").loc[user_ids].reset_index(drop=True)
    breakdowns = {kind: campaign.segment_breakdown(result, by_user[kind]) for kind in segments.KINDS if kind != "all"}
    progress(1.0, "Done")
    return {"allocation": allocation, "users": len(user_ids), "variants": result.variants,
            "timeline": result.timeline, "impressions": log.drop(columns=["user_index"]),
            "regret": result.regret, "best_variant": result.best_variant, "segments": breakdowns,
            "audience": audience_name}


def validate_simulator(dataset: str = DEFAULT_DATASET, users: int = 200, seed: int = 0,
                       progress: Progress = _quiet) -> dict:
    """Is the simulated audience believable? Appeal AUC, attack win rates and CTR calibration, both audiences."""
    from rewards import validation

    limits.SIMULATOR_USERS.check(users)
    limits.SEED.check(seed)
    ensure_demo_data()
    progress(0.0, "Building the train and judge audiences")
    return validation.validate(dataset, users, seed, progress=lambda f, m: progress(0.1 + 0.9 * f, m))


# --- Studio -------------------------------------------------------------------------------------------------

def catalog_vocabulary(dataset: str) -> tuple[list[str], list[str]]:
    """Every category label and every item's display name: what the grounding check compares copy to."""
    items = repository.items(dataset)
    labels = sorted({c for value in items["category"].dropna() for c in intent.categories_of(value)})
    return labels, sorted({copy.display_name(t) for t in items["title"]})


def score_variants(dataset: str, item_id: str, user_ids: list[str], variants: list[dict],
                   audience_name: str = "train") -> np.ndarray:
    """Expected CTR of each variant, averaged over the users (one user, or a segment's members)."""
    if not variants:
        return np.zeros(0)
    return click_matrix(dataset, item_id, user_ids, variants, audience_name).mean(axis=0)


def brand_kit() -> compose.BrandKit:
    """The configured brand kit (validated; a broken file raises ValueError naming the key)."""
    return compose.load_brand_kit(settings.load().brand_kit)


def studio_folder(batch: str) -> Path:
    """Where a generation batch's banners are, once its variants are stored."""
    return settings.home() / "studio" / batch


def _draft_folder(batch: str) -> Path:
    """Where a batch's banners are drawn until its variants are committed: a generation killed halfway leaves
    a draft, never a folder that looks finished."""
    return settings.home() / "studio" / f"{batch}.partial"


def sweep_studio() -> dict[str, int]:
    """Settle drafts left by generations that were killed: publish the ones whose variants were committed
    (killed between the commit and the rename), delete the others. Returns the counts."""
    counts = {"published": 0, "deleted": 0}
    for draft in sorted((settings.home() / "studio").glob("*.partial")):
        batch = draft.name.removesuffix(".partial")
        if repository.batch_stored(batch):
            os.replace(draft, studio_folder(batch))
            counts["published"] += 1
        else:
            shutil.rmtree(draft, ignore_errors=True)
            counts["deleted"] += 1
    return counts


def _targets(variant: dict, profile: dict) -> list[str]:
    """The user's interests this variant speaks to: its angle, plus any interest its text names."""
    text = f"{variant['title']} {variant['body']}".lower()
    named = [i["label"] for i in profile.get("interests", []) if i["label"].lower() in text]
    return list(dict.fromkeys([variant["angle"], *named]))


def _studio_users(dataset: str, user_id: str | None, segment: tuple[str, str | None] | None, max_users: int,
                  seed: int) -> tuple[list[str], str | None]:
    if user_id is not None:
        repository.get_user(dataset, user_id)
        return [str(user_id).strip()], None
    kind, value = segment or ("all", None)
    members = segments.members(segment_table(dataset), kind, value)
    if len(members) > max_users:
        members = sorted(np.random.default_rng(seed).choice(members, size=max_users, replace=False).tolist(), key=str)
    return members, f"{segments.KINDS[kind]}: {value or 'everyone'}"


def generate(dataset: str, item_id: str, user_id: str | None = None, segment: tuple[str, str | None] | None = None,
             n: int = 4, seed: int = 0, renderer: str | None = None, max_users: int = 16,
             candidates: int = writer.DEFAULT_CANDIDATES, progress: Progress = _quiet) -> list[dict]:
    """Write, check, illustrate, score and store N variants of an item for a user or a segment's users.

    One user gets a full profile (with the LLM summary); a segment's users get their cached profile
    or one from the structured signals alone, so a large segment does not wait on N summaries. Each
    variant is the best of `candidates` samples by the train audience's predicted CTR for its user.
    Returns the variants, accepted ones sorted by predicted CTR first, then rejected ones with reasons.
    """
    limits.check_all({"n": n, "max_users": max_users, "seed": seed, "candidates": candidates},
                     {"n": limits.VARIANTS_PER_USER, "max_users": limits.SEGMENT_USERS, "seed": limits.SEED,
                      "candidates": limits.CANDIDATES})
    asked = n * (1 if user_id is not None else max_users)
    if asked > limits.VARIANTS_PER_REQUEST:
        raise ValueError(f"A request makes at most {limits.VARIANTS_PER_REQUEST} variants; {n} per user for "
                         f"{max_users} users is {asked}: ask for fewer variants or users")
    if asked * candidates > limits.SAMPLES_PER_REQUEST:
        raise ValueError(f"A request draws at most {limits.SAMPLES_PER_REQUEST} candidates; {asked} variants x "
                         f"{candidates} candidates is {asked * candidates}: ask for fewer variants or candidates")
    item = catalog(dataset).loc[_known_item(dataset, item_id)].to_dict()
    users, segment_label = _studio_users(dataset, user_id, segment, max_users, seed)
    sweep_studio()
    kit, cfg = brand_kit(), settings.load()
    painter = render.renderer_for(renderer or cfg.image_model)
    progress(0.02, f"Profiling {len(users)} user(s)")
    profiles = {u: profile(dataset, u) if user_id is not None else
                (cached_profile(dataset, u) or profile(dataset, u, use_llm=False)) for u in users}
    llm = models.text_model()
    labels, titles = catalog_vocabulary(dataset)
    checks = writer.Checks(labels, titles, kit.check_terms())
    jobs = [writer.Job(item, profiles[u], n, seed + 7919 * k, u) for k, u in enumerate(users)]
    written = writer.write_variants(llm.generate, models.embedder().encode, jobs, checks,
                                    score=reranker(dataset, item["item_id"]), candidates=candidates,
                                    progress=lambda f, m: progress(0.05 + 0.6 * f, m),
                                    examples=copy.uses_examples(llm.adapter))
    batch = uuid.uuid4().hex[:12]
    progress(0.65, "Writing the art direction")
    arts = _art_direction(item, users, profiles, written, seed)
    work = [partial(_finish_variant, dataset, batch, u, segment_label, item, variant, profiles[u], kit, painter,
                    seed + k, f"{u}-v{k + 1}", llm, arts.get((u, k)))
            for u, variants in zip(users, written, strict=True) for k, variant in enumerate(variants)]
    rows = _in_parallel(work, lambda done: progress(0.67 + 0.28 * done / len(work),
                                                    f"Drew banners for {done} of {len(work)} variants"))
    progress(0.95, "Scoring with the simulated audience")
    _score(dataset, item["item_id"], rows)
    ids = repository.save_variants([{k: v for k, v in r.items() if k not in ("targets", "raw")} for r in rows])
    if _draft_folder(batch).exists():
        os.replace(_draft_folder(batch), studio_folder(batch))  # after the commit: the banners are now published
    for row, variant_id in zip(rows, ids, strict=True):
        row["id"] = variant_id
    progress(1.0, "Done")
    return sorted(rows, key=lambda r: (r["safety"]["status"] != "passed", -(r["score"] or 0)))


def _in_parallel(work: list[Callable[[], dict]], done: Callable[[int], None]) -> list[dict]:
    """Each call's result in order, run on as many threads as there are cores: drawing and PNG encoding
    release the GIL, so a request's banners take about half as long on two cores (a diffusion renderer
    serialises its own model calls). `done(count)` reports progress; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=engine.threads()) as pool:
        futures = [pool.submit(call) for call in work]
        for count, _ in enumerate(as_completed(futures), 1):
            done(count)
        return [f.result() for f in futures]


def reranker(dataset: str, item_id: str) -> writer.Scorer:
    """The writer's reranking signal: each candidate's predicted CTR for its own user (train audience)."""
    def score(user_ids: list[str], variants: list[dict]) -> list[float]:
        from rewards.audience import Impression, audience

        crowd = audience("train", dataset)
        return crowd.probabilities([Impression(u, item_id, v) for u, v in zip(user_ids, variants, strict=True)])

    return score


def _known_item(dataset: str, item_id: str) -> str:
    from rewards.audience import UnknownItem

    item_id = str(item_id).strip()
    if item_id not in set(repository.items(dataset)["item_id"]):
        raise UnknownItem(f"Unknown item '{item_id}' in dataset '{dataset}'")
    return item_id


def _art_direction(item: dict, users: list[str], profiles: dict[str, dict], written: list[list[dict]],
                   seed: int) -> dict[tuple[str, int], tuple[briefs.Brief, dict]]:
    """The brief of every accepted variant by (user, variant index), with who wrote it.

    With the `brief_writer` setting at "llm" the text model (with the `brief_adapter` LoRA, if any) writes
    all of the request's briefs in one batch; a variant whose answer does not parse gets the rule-based brief
    alone, and its provenance says so.
    """
    jobs = {(u, k): brief_writer.BriefJob(profiles[u], item, seed + k)
            for u, variants in zip(users, written, strict=True)
            for k, variant in enumerate(variants) if variant["safety"]["status"] == "passed"}
    cfg = settings.load()
    if cfg.brief_writer != "llm" or not jobs:
        return {key: (briefs.brief_from(*job), {"source": "rules"}) for key, job in jobs.items()}
    written_briefs = brief_writer.write_briefs(models.text_model(cfg.brief_adapter).generate, list(jobs.values()),
                                               seed)
    return {key: (art, {"source": source, "brief_adapter": (cfg.brief_adapter or None) if source == "llm" else None})
            for key, (art, source) in zip(jobs, written_briefs, strict=True)}


def _finish_variant(dataset: str, batch: str, user_id: str, segment_label: str | None, item: dict, variant: dict,
                    profile_: dict, kit: compose.BrandKit, painter: render.Renderer, seed: int, stem: str,
                    llm: models.TextModel, art_direction: tuple[briefs.Brief, dict] | None) -> dict:
    """A stored row for one written variant: its brief and banners (accepted variants only) and provenance.

    `art_direction` is the accepted variant's brief and who wrote it (`_art_direction`); None when rejected.
    """
    passed = variant["safety"]["status"] == "passed"
    brief, banners, banner_features = None, None, None
    if passed and art_direction is not None:
        art, provenance = art_direction
        made = compose.banners_for_brief(painter, art, variant["title"], variant["cta"], kit, seed)
        drawn = compose.save_banners(made, _draft_folder(batch), stem)
        banners = {size: str(studio_folder(batch) / Path(path).name) for size, path in drawn.items()}
        brief = {"text": briefs.brief_to_text(art), "mood": art.mood, "palette": list(art.palette),
                 "renderer": painter.name, "image_adapter": painter.adapter, **provenance}
        banner_features = made["300x250"].features()
    return {"batch": batch, "dataset": dataset, "user_id": user_id, "segment": segment_label,
            "item_id": item["item_id"], "title": variant["title"], "body": variant["body"], "cta": variant["cta"],
            "angle": variant["angle"], "model": llm.model_id, "adapter": llm.adapter, "prompt": variant["prompt"],
            "seed": variant["seed"], "profile_version": profile_.get("version", intent.ALGORITHM_VERSION),
            "safety": variant["safety"], "score": None, "candidates": variant.get("candidates"), "brief": brief,
            "banners": banners,
            "targets": _targets(variant, profile_), "raw": variant.get("raw", ""),
            "banner_features": banner_features}


def _score(dataset: str, item_id: str, rows: list[dict]) -> None:
    """Expected CTR of each accepted variant (now with its banner) for its own user, from the train audience."""
    accepted = [r for r in rows if r["safety"]["status"] == "passed"]
    creatives = [{"title": r["title"], "body": r["body"], "cta": r["cta"], "banner": r.pop("banner_features")}
                 for r in accepted]
    for r in rows:
        r.pop("banner_features", None)
    if accepted:
        scores = reranker(dataset, item_id)([r["user_id"] for r in accepted], creatives)
        for r, s in zip(accepted, scores, strict=True):
            r["score"] = round(float(s), 5)


def keep_variants(variant_ids: list[int], kept: bool = True) -> None:
    repository.set_kept([int(i) for i in variant_ids], kept)


def export_variants(variant_ids: list[int]) -> bytes:
    """A ZIP of the variants: every banner size as PNG, plus manifest.json and manifest.csv."""
    wanted = {int(i) for i in variant_ids}
    frames = [repository.variants(d) for d in repository.dataset_names()]
    table = pd.concat(frames) if frames else pd.DataFrame()
    table = table[table["id"].isin(wanted)] if len(table) else table
    if table.empty:
        raise ValueError("Choose at least one stored variant to export")
    buffer = io.BytesIO()
    manifest = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for row in table.itertuples():
            files = {}
            for size, path in (row.banners or {}).items():
                name = f"banners/variant-{row.id}-{size}.png"
                archive.write(path, name)
                files[size] = name
            manifest.append({"id": row.id, "dataset": row.dataset, "user_id": row.user_id, "item_id": row.item_id,
                             "title": row.title, "body": row.body, "cta": row.cta, "score": row.score,
                             "safety": row.safety["status"], "model": row.model, "adapter": row.adapter,
                             "seed": row.seed, "profile_version": row.profile_version, "banners": files})
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        flat = pd.DataFrame(manifest).drop(columns=["banners"])
        archive.writestr("manifest.csv", csv_export(flat))
    return buffer.getvalue()


# --- Reward Tuning ------------------------------------------------------------------------------------------

def tuning_defaults(method: str = "grpo") -> dict:
    """A run's default settings for a method (what the page's form starts from)."""
    from tuning.trainers import TuningConfig

    return TuningConfig(method=method).to_dict()


def launch_run(config: dict) -> str:
    """Start a tuning run in its own process; returns the run id at once. Absurd settings (zero or ten million
    steps, a negative learning rate) and an unknown dataset are refused here, before a run is stored."""
    from tuning import runs

    limits.check_all(config, limits.TUNING)
    repository.require_dataset(config.get("dataset") or DEFAULT_DATASET)
    return runs.launch(config)


def runs_table() -> pd.DataFrame:
    """Every run with its status (dead workers are marked failed on the way)."""
    from tuning import runs

    rows = [r | {"target": r["config"].get("target", "copy") if r["method"] != "diffusion_dpo" else "image",
                 "judge_uplift": ((r["evaluation"] or {}).get("uplift") or {}).get("tuned_vs_base", {}).get("mean")}
            for r in runs.list_runs()]
    columns = ["id", "method", "target", "status", "global_step", "max_steps", "judge_uplift", "created_at",
               "adapter_path", "error"]
    return pd.DataFrame(rows, columns=columns)


def run_details(run_id: str) -> dict:
    from tuning import runs

    return runs.get(run_id)


def run_metrics(run_id: str) -> pd.DataFrame:
    """One row per logged step (step, attempt, logged_at), one column per metric the trainer reported."""
    from tuning import runs

    return pd.DataFrame(runs.metrics(run_id)).assign(run=run_id)


def cancel_run(run_id: str) -> dict:
    from tuning import runs

    return runs.cancel(run_id)


def resume_run(run_id: str) -> dict:
    from tuning import runs

    return runs.resume(run_id)


def evaluate_run(run_id: str, users: int = 16, best_of: int = 4, samples: int = 5, draws: int = 1) -> dict:
    """Judge a run's adapter on held-out users with the judge audience (never the train one), here and now;
    `draws` outputs per prompt and setting are averaged (less noise, proportionally more sampling)."""
    _check_evaluation(run_id, users, best_of, draws)
    from tuning.evaluate import evaluate_run as judge

    return judge(run_id, users=users, best_of=best_of, samples=samples, draws=draws)


def start_evaluation(run_id: str, users: int = 16, best_of: int = 4, draws: int = 1) -> dict:
    """The same evaluation in a worker process (for the dashboard: minutes of sampling off the page's thread)."""
    from tuning import runs

    _check_evaluation(run_id, users, best_of, draws)
    return runs.evaluate_in_background(run_id, users=users, best_of=best_of, draws=draws)


def _check_evaluation(run_id: str, users: int, best_of: int, draws: int) -> None:
    """Refuse an unknown run or absurd sizes before the seconds it takes to import the training stack."""
    from store import runs as run_store

    run_store.get_run(run_id)
    limits.HELD_OUT_USERS.check(users)
    limits.BEST_OF.check(best_of)
    limits.DRAWS.check(draws)


def promote_run(run_id: str) -> str:
    """Make the Studio generate with this run's adapter (saved in the settings file; next model load)."""
    run = run_details(run_id)
    if not run.get("adapter_path") or not Path(run["adapter_path"]).exists():
        raise ValueError(f"Run '{run_id}' has no adapter to promote ({run['status']})")
    if run["method"] == "diffusion_dpo":  # a LoRA for the art model, which only fits the model it was trained on
        save_settings({"image_adapter": run["adapter_path"]} | ({"image_model": run["config"]["model"]}
                                                                if run["config"].get("model") else {}))
    elif run["config"].get("target") == "brief":  # the brief writer: the Studio writes art direction with the LLM
        save_settings({"brief_adapter": run["adapter_path"], "brief_writer": "llm"})
    else:
        save_settings({"text_adapter": run["adapter_path"]})
    return run["adapter_path"]


def rollback_adapter() -> None:
    """Return the Studio to the base models (no copy, brief or image adapter) and to rule-based briefs."""
    save_settings({key: "" for key in settings.ENV_VARS if key.endswith("_adapter") or key == "brief_writer"})
