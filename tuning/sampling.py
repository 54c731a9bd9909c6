"""Sampling copy from a policy as the Studio does (same temperature and nucleus), keeping the token ids.

Shared by the evaluation (base, best-of-N, tuned) and the held-out judge that runs during training, so
both measure what the Studio would actually draw from the model.
"""

from __future__ import annotations

import torch

TEMPERATURE = 0.7  # the Studio's writer (`generation.writer`)
TOP_P = 0.9  # the Studio's nucleus sampling (`generation.models.TextModel.generate`), so tuned@1 is what users get


def sample(model, tokenizer, texts: list[str], max_new_tokens: int, temperature: float, seed: int,
           batch: int = 16) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Sampled continuations with their prompt and completion token ids (the ids are what KL is computed on)."""
    out_texts, prompt_ids, completion_ids = [], [], []
    tokenizer.padding_side = "left"
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start:start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                 top_p=TOP_P, top_k=0, pad_token_id=tokenizer.pad_token_id)
        width = enc["input_ids"].shape[1]
        for row, mask in zip(out.cpu(), enc["attention_mask"].cpu(), strict=True):
            completion = row[width:]
            ends = (completion == tokenizer.eos_token_id).nonzero()
            completion = completion[: int(ends[0]) + 1] if len(ends) else completion
            prompt_ids.append(row[:width][mask.bool()])
            completion_ids.append(completion)
            out_texts.append(tokenizer.decode(completion, skip_special_tokens=True))
    return out_texts, prompt_ids, completion_ids
