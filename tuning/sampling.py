"""Sampling copy from a policy as the Studio does (same temperature and nucleus), keeping the token ids.

Shared by the evaluation (base, best-of-N, tuned), the held-out judge that runs during training and the
DPO pair sampler, so all of them measure what the Studio would actually draw from the model: with its rules
(`Rules`: the words its checks would reject get no chance, no answer loops on a run of its own tokens, copy
stops at the first sentence end of its body's line and may not end before it), on both paths.

Fixed weights (the base model before training, a finished adapter) are sampled on the Studio's engine
(`engine_for` + `sample_on`: llama.cpp on a CPU; copy ends with its body's first sentence, as in the
Studio). A model being trained changes every step, so it is sampled with transformers (`sample`).

Several samples of one prompt share its prefill: the prompt is run once, its key/value cache is copied
for each sample, and only the answers are decoded per copy. On a CPU the prompt (about 180 tokens of
instructions and profile) costs more than a 48-token answer, so best-of-N and repeated draws get much
cheaper than sampling the same prompt N times over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

import settings
from generation import engine, models

TEMPERATURE = 0.7  # the Studio's writer (`generation.writer`)
TOP_P = 0.9  # the Studio's nucleus sampling (`generation.models.TextModel.generate`), so tuned@1 is what users get


@dataclass(frozen=True)
class Rules:
    """How the Studio draws from its writer (`generation.writer`): per prompt text, the words its answers may
    not write (`avoid`) and the only numbers they may (`numbers`; None: any); no answer repeats a run of
    `no_repeat` of its own tokens; an answer ends after `lines` lines, the last at its first sentence
    (`generation.engine.Ends`), and not before (0: no limit)."""

    avoid: list[list[str]] | None = None
    no_repeat: int = 0
    lines: int = 0
    numbers: list[frozenset[str]] | None = None

    def part(self, start: int, stop: int) -> Rules:
        """The rules of the texts from `start` to `stop`."""
        return Rules(self.avoid[start:stop] if self.avoid else None, self.no_repeat, self.lines,
                     self.numbers[start:stop] if self.numbers else None)

    def number_rules(self, tokenizer, copies: int) -> list | None:
        """The `engine.Numbers` of every answer (each text's `copies` answers in turn), or None."""
        rules = models.number_rules(tokenizer, self.numbers)
        return [r for r in rules for _ in range(copies)] if rules else None

    def tokens(self, tokenizer, copies: int) -> list[models.Avoided] | None:
        """The avoided words of every answer as tokens (each text's `copies` answers in turn), or None."""
        if not self.avoid:
            return None
        return [models.avoided_tokens(tokenizer, words) for words in self.avoid for _ in range(copies)]


def _prefilled(model, enc: dict, copies: int):
    """The cache of every prompt but its last token, repeated `copies` times (generate continues from there).
    Positions follow the attention mask, so left padding does not shift them."""
    positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        cache = model(input_ids=enc["input_ids"][:, :-1], attention_mask=enc["attention_mask"][:, :-1],
                      position_ids=positions[:, :-1], use_cache=True).past_key_values
    cache.batch_repeat_interleave(copies)
    return cache


def sample(model, tokenizer, texts: list[str], max_new_tokens: int, temperature: float, seed: int,
           batch: int = 16, copies: int = 1, rules: Rules = Rules()) -> tuple[list[str], list[torch.Tensor],
                                                                             list[torch.Tensor]]:
    """`copies` sampled continuations of each text (in order: text 0's copies, then text 1's...) under the
    Studio's `rules`, with their prompt and completion token ids (the ids are what KL is computed on)."""
    from transformers import LogitsProcessorList

    out_texts, prompt_ids, completion_ids = [], [], []
    tokenizer.padding_side = "left"
    per_batch = max(batch // copies, 1)
    avoided, numbers = rules.tokens(tokenizer, copies), rules.number_rules(tokenizer, copies)
    ends = models.answer_ends(tokenizer) if rules.lines else None
    end_ids = models.end_ids(model, tokenizer)
    for start in range(0, len(texts), per_batch):
        enc = tokenizer(texts[start:start + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        cache = _prefilled(model, enc, copies)
        enc = {k: v.repeat_interleave(copies, dim=0) for k, v in enc.items()}
        width, lines = enc["input_ids"].shape[1], [rules.lines] * enc["input_ids"].shape[0]
        rows = slice(start * copies, (start + per_batch) * copies)
        bans = models.Bans(avoided[rows] if avoided else None, rules.no_repeat, width, lines,
                           ends or engine.Ends(frozenset()), end_ids, numbers[rows] if numbers else None)
        stop = [models.AnswerStop(ends, width, lines, model.device)] if ends else None
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            out = model.generate(**enc, past_key_values=cache, max_new_tokens=max_new_tokens, do_sample=True,
                                 temperature=temperature, top_p=TOP_P, top_k=models.TOP_K,
                                 pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([bans]),
                                 stopping_criteria=stop)
        for row, mask in zip(out.cpu(), enc["attention_mask"].cpu(), strict=True):
            completion = row[width:]
            # an answer under the line rule stops before any end token (it may not write one before); padding
            # follows; one without it keeps the end token it wrote
            ends_at = ((completion == tokenizer.eos_token_id) | (completion == tokenizer.pad_token_id)).nonzero()
            completion = completion[: int(ends_at[0]) + (ends is None)] if len(ends_at) else completion
            prompt_ids.append(row[:width][mask.bool()])
            completion_ids.append(completion)
            out_texts.append(tokenizer.decode(completion, skip_special_tokens=True))
    return out_texts, prompt_ids, completion_ids


@contextmanager
def engine_for(path: str, adapter: str | None = None) -> Iterator[models.TextModel | None]:
    """These weights (a model folder, a LoRA adapter merged in) on the Studio's fast engine for the length of a
    job, or None where the Studio itself generates with transformers (CUDA with `auto`, the `transformers`
    engine, a model llama.cpp cannot take). On exit the engine's memory is freed and an adapter's exported
    file removed: a run's adapter is exported again only if it is promoted."""
    cfg = settings.load()
    choice = cfg.engine.strip() or "auto"
    if choice == "transformers" or (choice == "auto" and models.resolve_device(cfg.device) != "cpu"):
        yield None
        return
    llm = models.load_text_model(path, "cpu", Path(cfg.model_cache), adapter or None, choice)
    try:
        yield llm if llm.fast is not None else None
    finally:
        exported = llm.fast.path if llm.fast is not None and adapter else None
        llm.close()
        if exported is not None:
            exported.unlink(missing_ok=True)


def sample_on(llm: models.TextModel, texts: list[str], max_new_tokens: int, temperature: float, seed: int,
              copies: int = 1, rules: Rules = Rules()) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Like `sample`, on the engine: `copies` answers per text (text 0's first) under the Studio's `rules`, with
    their token ids."""
    prompts = [llm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    avoid = [llm.avoided_tokens(words) for words in rules.avoid] if rules.avoid else None
    answers = llm.complete(prompts, copies, max_new_tokens, temperature, TOP_P, seed, rules.lines, avoid,
                           rules.no_repeat, models.number_rules(llm.tokenizer, rules.numbers))
    prompt_ids = [torch.tensor(prompts[k // copies]) for k in range(len(answers))]
    completion_ids = [torch.tensor(a, dtype=torch.long) for a in answers]
    return llm.tokenizer.batch_decode(answers, skip_special_tokens=True), prompt_ids, completion_ids
