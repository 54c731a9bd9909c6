"""The simulated audience: real users of a dataset answering ad impressions with click probabilities.

`audience("train" | "judge", dataset)` returns an `Audience`; both are built from the same real users
(history, demographics, taste traits: `rewards.appeal`) and differ in their appeal model (own CF
factor count and seed) and in the functional form of the click model (`rewards.click_model`). Tuning
optimises the train audience; only the judge says whether it worked, so a creative that games the
reward's particular form does not also game the evaluation.

Audiences are built once per process per (database, dataset, seed) and dataset size, and shared:
building one takes seconds (CF fit, history signals), scoring a batch takes milliseconds plus one
embedding pass over its distinct creatives.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

import settings
from generation import compose, embeddings, models
from rewards import click_model
from rewards.appeal import Appeal, Population, build_population
from rewards.features import Catalog, creative_features, creative_text
from store import impressions as impression_log
from store import repository


class UnknownItem(ValueError):
    """The item id is not in the dataset's catalog."""


@dataclass(frozen=True)
class Impression:
    """One showing of a creative for an item to a user; `seen` counts earlier showings of the same creative."""

    user_id: str
    item_id: str
    creative: Mapping
    position: int = 0
    seen: int = 0


@dataclass(frozen=True)
class AudienceSpec:
    factors: int  # CF factors of the audience's own appeal model
    seed_offset: int  # added to the simulation seed for its CF fit
    form: Callable[[dict[str, np.ndarray]], np.ndarray]


AUDIENCES = {
    "train": AudienceSpec(32, 0, click_model.train_probability),
    "judge": AudienceSpec(20, 1, click_model.judge_probability),
}


@dataclass
class World:
    """What both audiences of a dataset share: the catalog and the real users."""

    catalog: Catalog
    population: Population


def canonical(creative: Mapping) -> str:
    """One string per distinct creative (key order ignored): deduplicates a batch and names a logged variant."""
    return json.dumps(creative, sort_keys=True, default=str)


@dataclass
class Audience:
    """Real users of a dataset answering impressions through one appeal model and one click-model form."""

    name: str
    dataset: str
    seed: int
    world: World
    appeal: Appeal
    form: Callable[[dict[str, np.ndarray]], np.ndarray] = field(repr=False)

    def batch(self, impressions: Sequence[Impression]) -> tuple[click_model.Batch, list[Mapping]]:
        """Index arrays of the impressions and their distinct creatives (each creative is read once)."""
        keys: dict[str, int] = {}
        distinct: list[Mapping] = []
        rows = np.zeros((len(impressions), 5), dtype=np.int64)
        for n, imp in enumerate(impressions):
            key = canonical(imp.creative)
            if key not in keys:
                keys[key] = len(distinct)
                distinct.append(imp.creative)
            rows[n] = (self._user(imp.user_id), self._item(imp.item_id), keys[key], imp.position, imp.seen)
        return click_model.Batch(*rows.T), distinct

    def _user(self, user_id: str) -> int:
        index = self.world.population.index.get(str(user_id))
        if index is None:
            raise repository.UnknownUser(f"Unknown user '{user_id}' in dataset '{self.dataset}'")
        return index

    def _item(self, item_id: str) -> int:
        index = self.world.catalog.index.get(str(item_id))
        if index is None:
            raise UnknownItem(f"Unknown item '{item_id}' in dataset '{self.dataset}'")
        return index

    def signals(self, impressions: Sequence[Impression]) -> dict[str, np.ndarray]:
        """Every signal behind the probabilities, for explaining a score."""
        batch, distinct = self.batch(impressions)
        features = creative_features(distinct, self.world.catalog)
        embeddings = embed(features.texts)
        return click_model.signals(batch, self.world.population, self.appeal, self.world.catalog, features,
                                   embeddings)

    def probabilities(self, impressions: Sequence[Impression]) -> np.ndarray:
        """Expected click probability of each impression."""
        if not impressions:
            return np.zeros(0)
        return np.clip(self.form(self.signals(impressions)), 1e-6, 0.999)

    def sample_clicks(self, impressions: Sequence[Impression], rng: np.random.Generator | int,
                      probabilities: np.ndarray | None = None) -> np.ndarray:
        """Bernoulli clicks drawn from the probabilities; the same generator state gives the same clicks."""
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        p = self.probabilities(impressions) if probabilities is None else probabilities
        return rng.random(len(p)) < p

    def record(self, impressions: Sequence[Impression], probabilities: np.ndarray, clicks: np.ndarray) -> int:
        """Append the impressions with their outcome to the store's impression log, in one transaction."""
        rows = [{"dataset": self.dataset, "user_id": str(imp.user_id), "item_id": str(imp.item_id),
                 "variant_id": repository.text_hash(canonical(imp.creative)),
                 "variant_text": creative_text(imp.creative), "position": int(imp.position), "seen": int(imp.seen),
                 "probability": float(p), "click": bool(c), "audience": self.name}
                for imp, p, c in zip(impressions, probabilities, clicks, strict=True)]
        return impression_log.write_impressions(rows)


_embeddings: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_embed_lock = threading.Lock()  # separate from the build lock: scoring never waits for another dataset's build
EMBEDDING_CACHE = 50_000  # creative texts kept (~80 MB at 384 dims): both audiences score the same batch


def embed(texts: list[str]) -> np.ndarray:
    """Sentence embeddings of creative texts, one encoder pass for the texts not embedded recently."""
    embedder = models.embedder()
    with _embed_lock:
        known = {}
        for text in dict.fromkeys(texts):
            if (embedder.model_id, text) in _embeddings:
                _embeddings.move_to_end((embedder.model_id, text))
                known[text] = _embeddings[(embedder.model_id, text)]
    missing = [t for t in dict.fromkeys(texts) if t not in known]
    known.update(zip(missing, embedder.encode(missing), strict=True))
    with _embed_lock:
        _embeddings.update({(embedder.model_id, t): known[t] for t in missing})
        while len(_embeddings) > EMBEDDING_CACHE:
            _embeddings.popitem(last=False)
    return np.stack([known[t] for t in texts]) if texts else np.zeros((0, embedder.dimension), dtype=np.float32)


_worlds: dict[tuple, World] = {}
_appeals: dict[tuple, Appeal] = {}
_lock = threading.Lock()


def world(dataset: str, seed: int = 0) -> World:
    """The catalog and real users of a dataset, built once per process."""
    repository.require_dataset(dataset)
    kit = settings.load().brand_kit
    key = (*repository.dataset_version(dataset), seed, kit)
    with _lock:
        if key not in _worlds:
            catalog = Catalog.build(repository.items(dataset), embeddings.item_vectors(dataset),
                                    compose.load_brand_kit(kit).check_terms())
            population = build_population(repository.list_users(dataset), repository.interactions(dataset),
                                          catalog, seed)
            _worlds[key] = World(catalog, population)
        return _worlds[key]


def audience(name: str, dataset: str, seed: int = 0) -> Audience:
    """The `train` (reward for tuning) or `judge` (evaluation only) audience of a dataset."""
    if name not in AUDIENCES:
        raise ValueError(f"Unknown audience '{name}' (choose from {', '.join(AUDIENCES)})")
    spec, shared = AUDIENCES[name], world(dataset, seed)
    key = (*(*repository.dataset_version(dataset), seed), spec.factors, spec.seed_offset)
    with _lock:
        if key not in _appeals:
            population = shared.population
            _appeals[key] = Appeal.fit(population.train, population.user_ids, shared.catalog.item_ids,
                                       spec.factors, seed + spec.seed_offset)
        return Audience(name, dataset, seed, shared, _appeals[key], spec.form)


def clear_cache(embeddings_only: bool = False) -> None:
    """Forget cached creative embeddings and, unless `embeddings_only`, built audiences (benchmarks, tests)."""
    with _embed_lock:
        _embeddings.clear()
    if not embeddings_only:
        with _lock:
            _worlds.clear()
            _appeals.clear()


# --- reward functions for TRL ---------------------------------------------------------------------------------

MALFORMED_FACTOR = 0.1  # a completion the Studio cannot parse keeps a tenth of its raw text's score


def completion_text(completion: object) -> str:
    """The generated text of a completion: a string, or the last assistant message of a chat."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        replies = [m for m in messages if m.get("role") == "assistant"] or messages
        return str(replies[-1].get("content", "")) if replies else ""
    return str(completion or "")


def score_creatives(target: Audience, creatives: Sequence[Mapping | None], texts: Sequence[str],
                    user_ids: Sequence, item_ids: Sequence) -> np.ndarray:
    """Click probability of each creative shown for its (user, item) at the top slot, unseen before. A None
    creative is a completion that did not parse (the caller parses, as the Studio does): it is read as its raw
    text (`texts`) in the body and keeps `MALFORMED_FACTOR` of that score."""
    shown = [c if c is not None else {"title": "", "body": t, "cta": ""} for c, t in zip(creatives, texts,
                                                                                         strict=True)]
    p = target.probabilities([Impression(str(u), str(i), c) for u, i, c in zip(user_ids, item_ids, shown,
                                                                               strict=True)])
    return np.where([c is None for c in creatives], MALFORMED_FACTOR * p, p)


def group_scores(completions: Sequence[Sequence], user_ids: Sequence, item_ids: Sequence,
                 reward: Callable[..., list[float]]) -> list[np.ndarray]:
    """Each prompt's completions scored by `reward` (a TRL reward callable such as `tuning.reward.click_reward`'s),
    in one call."""
    flat = [c for group in completions for c in group]
    owners = [n for n, group in enumerate(completions) for _ in group]
    scores = np.asarray(reward(flat, user_id=[user_ids[n] for n in owners], item_id=[item_ids[n] for n in owners]))
    bounds = np.cumsum([0, *(len(group) for group in completions)])
    return [scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def pairs_from_scores(prompts: Sequence, completions: Sequence[Sequence], scores: Sequence[np.ndarray],
                      min_margin: float = 0.0) -> list[dict]:
    """DPO rows {prompt, chosen, rejected}: per prompt, its best and worst completion by score. Prompts whose
    completions score within `min_margin` of each other give no row (no preference)."""
    rows = []
    for prompt, group, block in zip(prompts, completions, scores, strict=True):
        if len(group) >= 2 and block.max() - block.min() > min_margin:
            rows.append({"prompt": prompt, "chosen": group[int(block.argmax())],
                         "rejected": group[int(block.argmin())]})
    return rows


def preference_pairs(prompts: Sequence, completions: Sequence[Sequence], user_ids: Sequence, item_ids: Sequence,
                     reward: Callable[..., list[float]], min_margin: float = 0.0) -> list[dict]:
    """DPO rows {prompt, chosen, rejected}: per prompt, its best and worst completion by `reward`."""
    return pairs_from_scores(prompts, completions, group_scores(completions, user_ids, item_ids, reward), min_margin)
