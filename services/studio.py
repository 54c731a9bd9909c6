"""Studio: variants for a user or a segment's users (written, checked, reranked, illustrated, scored, stored),
kept, exported; the drafts of killed generations settled.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

import limits
import settings
from generation import brief as briefs
from generation import brief_writer, compose, copy, designs, engine, intent, models, render, safety, writer
from generation.profiles import cached_profile, hooks, profile
from rewards import segments
from services.audience import segment_table
from services.campaigns import click_matrix
from services.common import Progress, catalog, csv_export, known_item, quiet
from store import pictures, repository


def score_variants(dataset: str, item_id: str, user_ids: list[str], variants: list[dict],
                   audience_name: str = "train") -> np.ndarray:
    """Expected CTR of each variant, averaged over the users (one user, or a segment's members)."""
    if not variants:
        return np.zeros(0)
    return click_matrix(dataset, item_id, user_ids, variants, audience_name).mean(axis=0)


def brand_kit() -> compose.BrandKit:
    """The configured brand kit (validated; a broken file raises ValueError naming the key)."""
    return compose.configured_brand_kit()


def studio_folder(batch: str) -> Path:
    """Where a generation batch's banners are, once its variants are stored."""
    return settings.home() / "studio" / batch


def _draft_folder(batch: str) -> Path:
    """Where a batch's banners are drawn until its variants are committed: a generation killed halfway leaves
    a draft, never a folder that looks finished."""
    return settings.home() / "studio" / f"{batch}.partial"


def _draft_lock(batch: str) -> FileLock:
    """The lock a generation holds while its draft is being drawn and published. The operating system drops it
    when the process dies, however it dies, so a draft whose lock can be taken has no live owner."""
    return FileLock(str(_draft_folder(batch)) + ".lock")


def sweep_studio() -> dict[str, int]:
    """Settle drafts left by generations that were killed: publish the ones whose variants were committed
    (killed between the commit and the rename), delete the others; a draft another live generation (in
    this process or another) is still drawing is left alone. Returns the counts."""
    counts = {"published": 0, "deleted": 0}
    for draft in sorted((settings.home() / "studio").glob("*.partial")):
        batch = draft.name.removesuffix(".partial")
        try:
            with _draft_lock(batch).acquire(timeout=0):
                if repository.batch_stored(batch):
                    os.replace(draft, studio_folder(batch))
                    counts["published"] += 1
                else:
                    shutil.rmtree(draft, ignore_errors=True)
                    counts["deleted"] += 1
        except Timeout:
            continue  # its generation is alive
        Path(str(draft) + ".lock").unlink(missing_ok=True)
    _remove_orphan_locks()
    return counts


def _remove_orphan_locks() -> None:
    """Delete the lock files of generations killed before their draft existed or after it was published (no
    draft left to settle): a lock that can be taken has no live owner, and a batch id is never drawn again."""
    for lock in sorted((settings.home() / "studio").glob("*.partial.lock")):
        if Path(str(lock).removesuffix(".lock")).exists():
            continue  # its draft is being drawn, or was left for the next sweep
        try:
            with FileLock(str(lock)).acquire(timeout=0):
                lock.unlink(missing_ok=True)
        except Timeout:
            continue


def _targets(variant: dict, profile: dict) -> list[str]:
    """The user's interests this variant speaks to: its angle, plus any interest its text names."""
    text = f"{variant['title']} {variant['body']}".lower()
    named = [i["label"] for i in profile.get("interests", []) if i["label"].lower() in text]
    return list(dict.fromkeys([variant["angle"], *named]))


def studio_users(dataset: str, user_id: str | None, segment: tuple[str, str | None] | None, max_users: int,
                 seed: int) -> tuple[list[str], str | None]:
    """The users a generation writes for (one user, or up to `max_users` of a segment drawn with `seed`) and
    the segment's label (None for one user)."""
    if user_id is not None:
        repository.get_user(dataset, user_id)
        return [str(user_id).strip()], None
    kind, value = segment or ("all", None)
    members = segments.members(segment_table(dataset), kind, value)
    if len(members) > max_users:
        members = sorted(np.random.default_rng(seed).choice(members, size=max_users, replace=False).tolist(), key=str)
    return members, f"{segments.KINDS[kind]}: {value or 'everyone'}"


def check_request(n: int, users: int, candidates: int) -> None:
    """Refuse a request (or one batch of a segment job) that would write or sample more than one request may."""
    asked = n * users
    if asked > limits.VARIANTS_PER_REQUEST:
        raise ValueError(f"A request makes at most {limits.VARIANTS_PER_REQUEST} variants; {n} per user for "
                         f"{users} users is {asked}: ask for fewer variants or users")
    if asked * candidates > limits.SAMPLES_PER_REQUEST:
        raise ValueError(f"A request draws at most {limits.SAMPLES_PER_REQUEST} candidates; {asked} variants x "
                         f"{candidates} candidates is {asked * candidates}: ask for fewer variants or candidates")


def generate(dataset: str, item_id: str, user_id: str | None = None, segment: tuple[str, str | None] | None = None,
             n: int = 4, seed: int = 0, renderer: str | None = None, max_users: int = 16,
             candidates: int = writer.DEFAULT_CANDIDATES, progress: Progress = quiet) -> list[dict]:
    """Write, check, illustrate, score and store N variants of an item for a user or a segment's users.

    One user gets a full profile (with the LLM summary); a segment's users get their cached profile
    or one from the structured signals alone, so a large segment does not wait on N summaries. Each
    variant is the best of `candidates` samples by the train audience's predicted CTR for its user.
    Returns the variants, accepted ones sorted by predicted CTR first, then rejected ones with reasons.
    """
    limits.check_all({"n": n, "max_users": max_users, "seed": seed, "candidates": candidates},
                     {"n": limits.VARIANTS_PER_USER, "max_users": limits.SEGMENT_USERS, "seed": limits.SEED,
                      "candidates": limits.CANDIDATES})
    check_request(n, 1 if user_id is not None else max_users, candidates)
    item = catalog(dataset).loc[known_item(dataset, item_id)].to_dict()
    users, segment_label = studio_users(dataset, user_id, segment, max_users, seed)
    sweep_studio()
    rows = generate_for(dataset, item, users, segment_label, n, seed, renderer, candidates, uuid.uuid4().hex[:12],
                        full_profile=user_id is not None, progress=progress)
    progress(1.0, "Done")
    return ranked(rows)


def ranked(rows: list[dict]) -> list[dict]:
    """Accepted variants by predicted CTR, best first, then the rejected ones."""
    return sorted(rows, key=lambda r: (r["safety"]["status"] != "passed", -(r["score"] or 0)))


def generate_for(dataset: str, item: dict, users: list[str], segment_label: str | None, n: int, seed: int,
                 renderer: str | None, candidates: int, batch: str, full_profile: bool = False, first: int = 0,
                 progress: Progress = quiet) -> list[dict]:
    """The work of one generation for `users`: profile, write, check, rerank, illustrate, score, then store every
    variant in one transaction under `batch` and publish the banners after the commit. A segment job calls it per
    batch of users; `first` is the batch's position in the segment, so each user's seed (and so its variants) is
    the same whether the segment runs at once or in batches. Returns the stored rows with their ids."""
    kit, cfg = brand_kit(), settings.load()
    painter = render.renderer_for(renderer or cfg.image_model)
    progress(0.02, f"Profiling {len(users)} user(s)")
    profiles = {u: profile(dataset, u) if full_profile else
                (cached_profile(dataset, u) or profile(dataset, u, use_llm=False)) for u in users}
    llm = models.text_model()
    labels, titles = safety.catalog_vocabulary(dataset)
    checks = writer.Checks(labels, titles, kit.check_terms())
    jobs = [writer.Job(item, profiles[u], n, seed + 7919 * (first + k), u, hooks=hooks(dataset, u, item))
            for k, u in enumerate(users)]
    written = writer.write_variants(llm.generate, models.embedder().encode, jobs, checks,
                                    score=reranker(dataset, item["item_id"]), candidates=candidates,
                                    progress=lambda f, m: progress(0.05 + 0.6 * f, m),
                                    examples=copy.uses_examples(llm.adapter))
    progress(0.65, "Writing the art direction")
    arts = _art_direction(item, users, profiles, written, seed)
    work = [partial(_finish_variant, dataset, batch, u, segment_label, item, variant, profiles[u], kit, painter,
                    seed + k, f"{u}-v{k + 1}", (llm.model_id, llm.adapter), arts.get((u, k)))
            for u, variants in zip(users, written, strict=True) for k, variant in enumerate(variants)]
    return _draw_and_store(dataset, item["item_id"], batch, work, progress)


def _draw_and_store(dataset: str, item_id: str, batch: str, work: list[Callable[[], dict]],
                    progress: Progress = quiet) -> list[dict]:
    """Run the variants' drawing `work`, score and store them in one transaction, then publish their banners;
    the rows with their ids."""
    with _draft_lock(batch):  # held until the draft is published: no other generation's sweep touches it
        rows = _in_parallel(work, lambda done: progress(0.67 + 0.28 * done / len(work),
                                                        f"Drew banners for {done} of {len(work)} variants"))
        progress(0.95, "Scoring with the simulated audience")
        _score(dataset, item_id, rows)
        ids = repository.save_variants([{k: v for k, v in r.items() if k not in ("targets", "raw")} for r in rows])
        if _draft_folder(batch).exists():
            os.replace(_draft_folder(batch), studio_folder(batch))  # after the commit: the banners are published
    Path(str(_draft_folder(batch)) + ".lock").unlink(missing_ok=True)
    for row, variant_id in zip(rows, ids, strict=True):
        row["id"] = variant_id
    return rows


def edit_variant(variant_id: int, title: str, body: str, cta: str, renderer: str | None = None) -> dict:
    """A hand edit of a stored variant, checked, illustrated and scored as a written one is, and stored as a
    new variant that records which one it edits (the original stays as the model wrote it). An edit the
    checks reject is stored too, with its reasons, so nothing typed is lost; an empty or over-long field is
    refused with its limit."""
    original, item = _stored(variant_id)
    fields = {"title": title.strip(), "body": body.strip(), "cta": cta.strip()}
    for key, limit in copy.LIMITS.items():
        if not fields[key]:
            raise ValueError(f"The {key} is empty")
        if len(fields[key]) > limit:
            raise ValueError(f"The {key} is {len(fields[key])} characters long; the limit is {limit}")
    dataset, kit = original["dataset"], brand_kit()
    labels, titles = safety.catalog_vocabulary(dataset)
    evidence = [original["hook"]["title"]] if original["hook"] else []  # an edit may keep naming the card's hook
    verdict = safety.check(fields, item, labels, titles, kit.check_terms(), evidence).to_dict()
    person = (cached_profile(dataset, original["user_id"]) or profile(dataset, original["user_id"], use_llm=False)) \
        if original["user_id"] else {}
    art = _edit_art(original, person, item) if verdict["status"] == "passed" else None
    variant = {**fields, "angle": original["angle"], "hook": original["hook"], "prompt": original["prompt"],
               "seed": original["seed"], "safety": verdict, "candidates": None, "edited_from": int(variant_id)}
    batch = uuid.uuid4().hex[:12]
    work = [partial(_finish_variant, dataset, batch, original["user_id"], original["segment"], item, variant,
                    person | {"version": original["profile_version"]}, kit,
                    render.renderer_for(renderer or settings.load().image_model), original["seed"],
                    f"{original['user_id']}-edit-{variant_id}", (original["model"], original["adapter"]), art)]
    return _draw_and_store(dataset, item["item_id"], batch, work)[0]


def rewrite_variant(variant_id: int, seed: int, renderer: str | None = None,
                    candidates: int = writer.DEFAULT_CANDIDATES, keep: tuple[str, ...] = ()) -> dict:
    """One card written again: a new variant for the same user, item and angle, drawn with another `seed`,
    checked, reranked, illustrated, scored and stored like the rest (the old one stays in the store). `keep`:
    fields (title, body, cta) kept word for word, the rest written anew (after a kept title, the body is
    written to follow it); the whole copy is checked again."""
    limits.check_all({"seed": seed, "candidates": candidates}, {"seed": limits.SEED, "candidates": limits.CANDIDATES})
    if unknown := sorted(set(keep) - set(copy.LIMITS)):
        raise ValueError(f"Cannot keep {', '.join(unknown)}: choose among {', '.join(copy.LIMITS)}")
    if set(keep) == set(copy.LIMITS):
        raise ValueError("Keeping every field leaves nothing to write again; edit the card instead")
    original, item = _stored(variant_id)
    if not original["user_id"]:
        raise ValueError(f"Variant {variant_id} was written for no single user; write the segment again instead")
    dataset, user = original["dataset"], original["user_id"]
    person, kit, llm = cached_profile(dataset, user) or profile(dataset, user), brand_kit(), models.text_model()
    labels, titles = safety.catalog_vocabulary(dataset)
    job = writer.Job(item, person, 1, seed, user, angles=[original["angle"]],
                     hooks=[original["hook"]] if original["hook"] else [], locked={k: original[k] for k in keep})
    [written] = writer.write_variants(llm.generate, models.embedder().encode, [job],
                                      writer.Checks(labels, titles, kit.check_terms()),
                                      score=reranker(dataset, item["item_id"]), candidates=candidates,
                                      examples=copy.uses_examples(llm.adapter))
    batch = uuid.uuid4().hex[:12]
    arts = _art_direction(item, [user], {user: person}, [written], seed)
    work = [partial(_finish_variant, dataset, batch, user, original["segment"], item, written[0], person, kit,
                    render.renderer_for(renderer or settings.load().image_model), seed, f"{user}-rewrite-{variant_id}",
                    (llm.model_id, llm.adapter), arts.get((user, 0)))]
    return _draw_and_store(dataset, item["item_id"], batch, work)[0]


def _stored(variant_id: int) -> tuple[dict, dict]:
    """A stored variant and its item's catalog facts; LookupError when there is no such variant."""
    original = repository.variant(variant_id)
    if original is None:
        raise LookupError(f"There is no variant {variant_id}")
    dataset = original["dataset"]
    return original, catalog(dataset).loc[known_item(dataset, original["item_id"])].to_dict()


def _edit_art(original: dict, person: dict, item: dict) -> tuple[briefs.Brief, dict]:
    """The art direction an edit is drawn on: the original's brief and who wrote it, or (an original the checks
    rejected has none) the rule-based brief for its user."""
    stored = original["brief"]
    if not stored:
        return briefs.brief_from(person, item, original["seed"]), {"source": "rules"}
    drawn = ("text", "mood", "palette", "renderer", "image_adapter", "picture", "seed")  # `_finish_variant` writes
    return briefs.parse_brief(stored["text"]), {k: v for k, v in stored.items() if k not in drawn}


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
                    writer_model: tuple[str, str | None], art_direction: tuple[briefs.Brief, dict] | None) -> dict:
    """A stored row for one written variant: its brief and banners (accepted variants only) and provenance.

    `writer_model` is the model id and adapter that wrote the copy; `art_direction` is the accepted variant's
    brief and who wrote it (`_art_direction`); None when rejected.
    """
    passed = variant["safety"]["status"] == "passed"
    brief, banners, banner_features = None, None, None
    if passed and art_direction is not None:
        art, provenance = art_direction
        picture = pictures.load(item.get("image"))
        design = provenance.get("design") or designs.choose_design(art.mood, seed, picture is not None)
        made = designs.banners_for_brief(painter, art, variant["title"], variant["cta"], kit, seed, design=design,
                                         picture=picture)
        drawn = compose.save_banners(made, _draft_folder(batch), stem)
        banners = {size: str(studio_folder(batch) / Path(path).name) for size, path in drawn.items()}
        brief = {"text": briefs.brief_to_text(art), "mood": art.mood, "palette": list(art.palette),
                 "renderer": painter.name, "image_adapter": painter.adapter, "design": design,
                 "picture": picture is not None, "seed": seed, **provenance}
        banner_features = made["300x250"].features()
    return {"batch": batch, "dataset": dataset, "user_id": user_id, "segment": segment_label,
            "item_id": item["item_id"], "title": variant["title"], "body": variant["body"], "cta": variant["cta"],
            "angle": variant["angle"], "hook": variant.get("hook"), "model": writer_model[0],
            "adapter": writer_model[1],
            "prompt": variant["prompt"], "edited_from": variant.get("edited_from"),
            "seed": variant["seed"], "profile_version": profile_.get("version", intent.ALGORITHM_VERSION),
            "safety": variant["safety"], "score": None, "candidates": variant.get("candidates"), "brief": brief,
            "banners": banners,
            "targets": _targets(variant, profile_), "raw": variant.get("raw", ""),
            "banner_features": banner_features}


def _score(dataset: str, item_id: str, rows: list[dict]) -> None:
    """Expected CTR of each accepted variant (now with its banner) for its own user, from the train audience."""
    accepted = [r for r in rows if r["safety"]["status"] == "passed"]
    creatives = [{"title": r["title"], "body": r["body"], "cta": r["cta"], "hook": r["hook"],
                  "banner": r.pop("banner_features")} for r in accepted]
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
