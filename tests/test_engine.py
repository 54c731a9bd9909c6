"""The CPU inference engine: llama.cpp with weights exported from transformers (adapters merged), batched
copies, stopping at the end of the call to action, fallback to transformers, and parity with transformers.

The tiny random model proves the mechanics (export, cache per adapter, copies, stops, fallback); only the
real embedded model can show that the exported weights compute the same model (greedy answers agree) and
that the Studio's copy is as good on the engine as on transformers (accepted share and train-audience CTR
within noise on the same prompts).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import services
import settings
from generation import copy, engine, gguf_export, models, safety, writer
from tuning import prompts

CHAT = [[{"role": "user", "content": "Write a line about the sea."}],
        [{"role": "user", "content": "Write a line about the mountains, please."}]]


def tiny(folder: Path, cache: Path, adapter: str | None = None, choice: str = "auto") -> models.TextModel:
    return models.load_text_model(str(folder), "cpu", cache, adapter, choice)


def test_the_avx512_kernels_run_where_the_cpu_has_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`make setup` builds the AVX-512 kernels; on a CPU with the instructions llama.cpp runs on them (the
    process maps that library, not the AVX2 one), and on any other CPU on the AVX2 build."""
    tiny(tiny_model_dir, tmp_path)  # loads llama.cpp
    maps = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libggml-cpu" in line}
    if engine.cpu_flags() >= engine.AVX512_FLAGS:
        assert engine.AVX512_KERNELS.exists(), "make setup did not build the AVX-512 kernels"
        assert engine.KERNELS == "AVX-512" and maps == {str(engine.AVX512_KERNELS.resolve())}, maps
    else:
        assert engine.KERNELS == "AVX2" and all("ggml-avx512" not in m for m in maps), maps


def test_the_tiny_model_runs_on_llama_cpp_with_copies_and_line_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    llm = tiny(tiny_model_dir, tmp_path)
    assert llm.engine == "llama.cpp (Q8_0)" and not llm.engine_note
    assert len(list((tmp_path / "gguf").glob("*.gguf"))) == 1
    prompts_ = llm.prompt_ids(CHAT, ["Title:", "Title:"])
    answers = llm.complete(prompts_ * 2, copies=3, max_new_tokens=12, temperature=0.9, seed=1, stop_lines=1)
    assert len(answers) == 12 and all(0 < len(a) <= 12 for a in answers)
    ends = llm.ends()
    for answer in answers:  # one line, one sentence at most: a line break or sentence end can only be the last token
        assert all(t not in ends.newlines | ends.sentences for t in answer[:-1])
    again = llm.complete(prompts_ * 2, copies=3, max_new_tokens=12, temperature=0.9, seed=1, stop_lines=1)
    assert again == answers  # the prefix kept from the first call changes nothing; the seed decides
    greedy = llm.complete(prompts_, copies=2, max_new_tokens=8, temperature=0.0)
    assert greedy[0] == greedy[1] and greedy[2] == greedy[3]  # copies of one prompt share its cache exactly


def _assert_ended_by_the_line_rule(answer: list[int], ends: engine.Ends, lines: int, cap: int) -> None:
    """The answer ended at its `lines`-th line break, at the first sentence end of its last line, or at the cap;
    never earlier, and never past a sentence end on its last line."""
    breaks = [k for k, t in enumerate(answer) if t in ends.newlines]
    last_line = answer if lines == 1 else answer[breaks[lines - 2] + 1:] if len(breaks) >= lines - 1 else None
    if len(answer) < cap:
        assert breaks and breaks[-1] == len(answer) - 1 and len(breaks) == lines or \
            (len(breaks) == lines - 1 and answer[-1] in ends.sentences), answer
    if last_line is not None:
        assert all(t not in ends.sentences for t in last_line[:-1]), answer


def _has_repeated_run(tokens: list[int], n: int) -> bool:
    runs = [tuple(tokens[k:k + n]) for k in range(len(tokens) - n + 1)]
    return len(runs) != len(set(runs))


LOOPING = [[{"role": "user", "content": "Count: one, two, one, two, one, two"}],
           [{"role": "user", "content": "Repeat after me: go go go go go go go go"}]]


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_keep_avoided_tokens_loops_and_early_ends_out(embedded_model_dir: Path, tmp_path: Path,
                                                                   choice: str) -> None:
    """The same bans on llama.cpp and transformers. Unbanned, the embedded model's greedy answers to these
    prompts loop; banned, no answer takes an avoided token (here each one's own first two), repeats a run of
    three of its own tokens, or ends before its line stop."""
    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine=choice)
    assert llm.engine.startswith("llama.cpp" if choice == "auto" else "transformers"), llm.engine_note
    ids = llm.prompt_ids(LOOPING)
    free = llm.complete(ids, max_new_tokens=24, temperature=0.0)
    assert any(_has_repeated_run(a, 3) for a in free), [llm.tokenizer.decode(a) for a in free]
    avoid = [engine.Avoided(frozenset(a[:2])) for a in free]
    for temperature in (0.0, 0.9):
        banned = llm.complete(ids, copies=2, max_new_tokens=24, temperature=temperature, seed=4, stop_lines=3,
                              avoid=avoid, no_repeat=3)
        for k, answer in enumerate(banned):
            assert not set(answer) & avoid[k // 2].tokens, (answer, avoid[k // 2])
            assert not _has_repeated_run(answer, 3), answer
            _assert_ended_by_the_line_rule(answer, llm.ends(), 3, 24)
    assert engine.repeating_tokens([5, 6, 7, 5, 6], 3) == [7] and engine.repeating_tokens([5, 6], 3) == []


SPLIT_WORDS = [[{"role": "user", "content": "Write the word thriller five times, separated by commas."}],
               [{"role": "user", "content": "Name three kinds of movies: thrillers, comedies and dramas."}]]


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_keep_a_word_the_tokenizer_splits_out(embedded_model_dir: Path, tmp_path: Path,
                                                           choice: str) -> None:
    """" thriller" is two tokens (" thr" + "iller"): banning whole-word tokens cannot keep it out, so its last
    piece may not follow its first. Unbanned, the model writes it; banned, neither engine does, in any case."""
    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine=choice)
    avoided = llm.avoided_tokens(["thriller"])
    assert not avoided.tokens and avoided.endings  # split in every form
    phrase = llm.avoided_tokens(["science fiction"])  # a phrase the same way: its last word after the first
    assert not phrase.tokens and phrase.after(llm.tokenizer.encode(" science", add_special_tokens=False))
    ids = llm.prompt_ids(SPLIT_WORDS)
    free = [llm.tokenizer.decode(a) for a in llm.complete(ids, max_new_tokens=24, temperature=0.0)]
    assert any("thriller" in a.lower() for a in free), free
    for temperature in (0.0, 0.9):
        banned = llm.complete(ids, copies=2, max_new_tokens=24, temperature=temperature, seed=4,
                              avoid=[avoided] * len(ids))
        assert not any("thriller" in llm.tokenizer.decode(a).lower() for a in banned), \
            [llm.tokenizer.decode(a) for a in banned]


def test_an_avoided_words_last_piece_is_banned_only_after_its_first() -> None:
    avoided = engine.Avoided(frozenset({3}), {(7,): frozenset({8}), (5, 6): frozenset({9})})
    assert avoided.after([1, 7]) == [8] and avoided.after([5, 6]) == [9] and avoided.after([6]) == []
    assert avoided.after([]) == [] and not engine.Avoided() and avoided


NUMBERED = [[{"role": "user", "content": "Count from 1 to 30, separated by commas."}],
            [{"role": "user", "content": "List the years from 1950 to 1999, one per line."}]]


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_write_only_the_numbers_a_prompt_allows(embedded_model_dir: Path, tmp_path: Path,
                                                              choice: str) -> None:
    """Asked to count, the embedded model writes many numbers; bounded, every number it writes on either engine
    is one of its prompt's (a number cut by the token cap is the start of one), greedy and sampled."""
    import re

    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine=choice)
    ids = llm.prompt_ids(NUMBERED)
    free = llm.tokenizer.batch_decode(llm.complete(ids, max_new_tokens=40, temperature=0.0))
    allowed = [frozenset({"1", "7", "12"}), frozenset({"1977", "1980"})]
    assert all(set(re.findall(r"\d+", text)) - a for text, a in zip(free, allowed, strict=True)), free
    rules = models.number_rules(llm.tokenizer, allowed)
    for temperature in (0.0, 0.9):
        answers = llm.complete(ids, copies=2, max_new_tokens=40, temperature=temperature, seed=2, numbers=rules)
        for k, answer in enumerate(answers):
            numbers = re.findall(r"\d+", llm.tokenizer.decode(answer))
            cut = numbers[-1:] if len(answer) == 40 and llm.tokenizer.decode(answer[-1:]).isdigit() else []
            assert set(numbers) - set(cut) <= allowed[k // 2], (numbers, allowed[k // 2])
            assert all(any(a.startswith(c) for a in allowed[k // 2]) for c in cut)


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_open_the_second_line_with_the_body_label(embedded_model_dir: Path, tmp_path: Path,
                                                                choice: str) -> None:
    """A two-line answer's second line opens with "Body:", written by the engine, not chosen by the model (the
    tuned writer once wrote "Body." and the parser lost the body): asked for years one per line, the model's
    second line is a year; with two lines to write, it is the label and then the model's own words."""
    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine=choice)
    ends, ids = llm.ends(), llm.prompt_ids(NUMBERED[1:])
    label = list(ends.label)

    def second_line(answer: list[int]) -> list[int] | None:
        breaks = [k for k, t in enumerate(answer) if t in ends.newlines]
        return answer[breaks[0] + 1:] if breaks else None

    [free] = llm.complete(ids, max_new_tokens=32, temperature=0.0)
    assert second_line(free)[:len(label)] != label, llm.tokenizer.decode(free)
    answers = [a for temperature in (0.0, 0.9) for a in llm.complete(ids, copies=2, max_new_tokens=32, seed=3,
                                                                       temperature=temperature, stop_lines=2)]
    assert second_line(answers[0]) is not None  # greedy: the same first line as the free answer
    for rest, answer in ((second_line(a), a) for a in answers):
        assert rest is None or (rest[:len(label)] == label and len(rest) > len(label)), llm.tokenizer.decode(answer)


REPEATING = [[{"role": "user", "content": "Describe a great movie in one sentence using the word great three times."}],
             [{"role": "user", "content": "Write one line that says classic, classic, classic."}]]


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_say_a_content_word_once_per_line(embedded_model_dir: Path, tmp_path: Path, choice: str) -> None:
    """Asked for a word three times, the model writes it twice in its line; under a line rule, no line of an
    answer takes a content word's token twice ("A classic 1994 classic" was the small model's padding), greedy
    and sampled, while grammar ("a", "the") may come back."""
    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine=choice)
    ends, ids = llm.ends(), llm.prompt_ids(REPEATING)

    def repeated(answer: list[int]) -> list[str]:
        twice, line = [], set()
        for token in answer:
            if token in ends.newlines:
                line = set()
            elif token in ends.words and token in line:
                twice.append(llm.tokenizer.decode([token]))
            line.add(token)
        return twice

    free = llm.complete(ids, max_new_tokens=32, temperature=0.0)
    assert any(repeated(a) for a in free), llm.tokenizer.batch_decode(free)
    for temperature in (0.0, 0.9):
        answers = llm.complete(ids, copies=2, max_new_tokens=32, temperature=temperature, seed=3, stop_lines=2)
        for answer in answers:
            assert not repeated(answer), llm.tokenizer.decode(answer)
    assert not {llm.tokenizer.convert_tokens_to_ids(w) for w in ("Ġthe", "Ġwith", "Ġtheir")} & ends.words


def test_a_line_says_each_content_word_once() -> None:
    ends = engine.Ends(frozenset({1}), words=frozenset({7, 8}))
    assert sorted(ends.said([7, 5, 8, 8])) == [7, 8, 8] and ends.said([7, 1, 8, 5]) == [8] and ends.said([]) == []


def test_the_label_is_forced_only_while_the_second_line_spells_it() -> None:
    ends = engine.Ends(frozenset({1}), label=(7, 8))
    assert ends.forced([5, 1], 2) == 7 and ends.forced([5, 1, 7], 2) == 8 and ends.forced([5, 1, 7, 8], 2) is None
    assert ends.forced([5], 2) is None and ends.forced([5, 1], 1) is None and ends.forced([5, 1, 7, 8, 1], 3) is None
    assert engine.Ends(frozenset({1})).forced([5, 1], 2) is None


def test_a_number_is_bounded_digit_by_digit() -> None:
    """`engine.Numbers` on a tokenizer with bare and spaced digit tokens: a digit may only start or go on to an
    allowed number, and an unfinished one must go on."""
    digits = {10 + d: str(d) for d in range(10)} | {20 + d: f" {d}" for d in range(10)}
    rule = engine.Numbers(digits, frozenset({"1977", "12"}))
    banned, only = rule.next([5])  # after a word: "1" or " 1" may start a number, nothing else
    assert set(digits) - set(banned) == {11, 21} and only == []
    banned, only = rule.next([5, 11])  # "1": must go on to "12" or "19..."
    assert set(digits) - set(banned) == {12, 19, 21} and only == [12, 19]
    banned, only = rule.next([5, 11, 12])  # "12" is finished: nothing may go on, anything else may follow
    assert set(digits) - set(banned) == {21} and only == []
    assert rule.next([21, 19, 17])[1] == [17]  # " 197" goes on to " 1977"
    assert set(digits) <= set(engine.Numbers(digits, frozenset()).next([])[0])  # no numbers: no digit at all


def test_a_begun_number_is_finished_even_where_it_repeats_a_run() -> None:
    """A year written twice ("a 1977 film ... in 1977") repeats a run of digit tokens: the repeat rule would ban
    the one digit the number rule leaves, and a row with every token banned has no distribution to sample
    (transformers raised on it). The number rule wins in both engines' rules."""
    import torch

    digits = {10 + d: str(d) for d in range(10)} | {20 + d: f" {d}" for d in range(10)}
    answer = [21, 19, 17, 17, 5, 21, 19, 17]  # " 1977" then a word, then " 197": only "7" goes on
    assert 17 in engine.repeating_tokens(answer, 4)
    rule = models.Bans(None, 4, 0, numbers=[engine.Numbers(digits, frozenset({"1977"}))])
    scores = rule(torch.tensor([answer]), torch.zeros(1, 40))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [17]


def test_an_adapter_is_merged_and_exported_once_and_cached_by_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    first = tiny(tiny_model_dir, tmp_path / "cache", str(adapter))
    files = sorted((tmp_path / "cache" / "gguf").glob("*.gguf"))
    assert first.engine.startswith("llama.cpp") and len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    tiny(tiny_model_dir, tmp_path / "cache", str(adapter))
    assert files[0].stat().st_mtime_ns == stamp  # loaded again from the cache, not exported again
    tiny(tiny_model_dir, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "gguf").glob("*.gguf"))) == 2  # the base model is its own file
    with torch.no_grad():
        assert not torch.equal(first.model.model.layers[0].self_attn.q_proj.weight,
                               AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].self_attn.q_proj
                               .weight)  # the adapter really is merged into what was exported


def test_a_broken_conversion_falls_back_to_transformers_with_a_message(tiny_model_dir: Path, tmp_path: Path) -> None:
    tiny(tiny_model_dir, tmp_path)
    [exported] = (tmp_path / "gguf").glob("*.gguf")
    exported.write_bytes(b"GGUF but not really")
    llm = tiny(tiny_model_dir, tmp_path)
    assert llm.engine == "transformers" and "llama.cpp is not used" in llm.engine_note
    assert len(llm.generate(CHAT, max_new_tokens=4)) == 2  # and it still writes


def test_a_model_llama_cpp_cannot_take_stays_on_transformers(embedded_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "tiny-gpt2"
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    llm = tiny(folder, tmp_path / "cache")
    assert llm.engine == "transformers" and "Only Llama-architecture models" in llm.engine_note
    assert tiny(folder, tmp_path / "cache", choice="transformers").engine_note == ""  # asked for: no message
    with pytest.raises(gguf_export.ExportError, match="Only Llama"):
        gguf_export.export(llm.model, [], Path("unused.gguf"), tmp_path / "x.gguf")


def test_prompts_that_do_not_fit_the_cache_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    llm = tiny(tiny_model_dir, tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        llm.complete([[1] * (engine.CONTEXT + 10)])


@pytest.mark.embedded
def test_exported_weights_compute_the_same_model(embedded_model_dir: Path, tmp_path: Path) -> None:
    """Greedy answers of llama.cpp (Q8_0) and transformers (fp32) agree: a wrong tensor name or rotary layout
    would make llama.cpp write noise from the first token."""
    fast = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path)
    slow = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path, engine="transformers")
    chats = CHAT + [[{"role": "user", "content": "Name three colours."}],
                    [{"role": "user", "content": "Write a short ad for a film about dinosaurs."}]]
    ids = fast.prompt_ids(chats)
    a, b = fast.complete(ids, max_new_tokens=8), slow.complete(ids, max_new_tokens=8)
    assert sum(x[:6] == y[:6] for x, y in zip(a, b, strict=True)) >= 3, (a, b)


def _studio_samples(llm: models.TextModel, rows: list[dict], items: list[dict], seed: int) -> list[dict | None]:
    starts = [copy.answer_start(i) for i in items]
    labels, _ = safety.catalog_vocabulary(services.common.DEFAULT_DATASET)
    kit = services.studio.brand_kit().check_terms()
    raw = llm.generate([r["chat"] for r in rows], max_new_tokens=48, temperature=0.7, seed=seed,
                       assistant_prefix=starts, copies=2, stop_lines=copy.ANSWER_LINES, no_repeat=writer.NO_REPEAT,
                       avoid=[safety.words_to_avoid(i, labels, kit) for i in items])
    return [copy.parse(t, "Watch now", starts[k // 2]) for k, t in enumerate(raw)]


@pytest.mark.embedded
def test_the_fast_path_writes_copy_as_good_as_transformers(demo_store: str) -> None:
    """Same prompts (held-out users, the Studio's prompt, sampling and bans), two samples each on both engines: the
    accepted share and the train audience's CTR differ by no more than noise (3 standard errors)."""
    rows = prompts.prompt_rows(demo_store, "held_out", 24)
    catalog = services.common.catalog(demo_store)
    items = [catalog.loc[r["item_id"]].to_dict() | {"item_id": r["item_id"]} for r in rows]
    labels, titles = safety.catalog_vocabulary(demo_store)
    kit = services.studio.brand_kit().check_terms()
    fast = models.text_model()
    assert fast.engine.startswith("llama.cpp"), fast.engine_note
    slow = models.load_text_model(fast.model_id, "cpu", Path(settings.load().model_cache),
                                  engine="transformers")
    measured = {}
    for name, llm in (("fast", fast), ("transformers", slow)):
        parsed = _studio_samples(llm, rows, items, seed=3)
        ok = [f is not None and safety.check(f, items[k // 2], labels, titles, kit).passed
              for k, f in enumerate(parsed)]
        scored = [(rows[k // 2]["user_id"], rows[k // 2]["item_id"], f) for k, f in enumerate(parsed) if f]
        ctr = [services.studio.reranker(demo_store, item)([user], [f])[0] for user, item, f in scored]
        measured[name] = (np.array(ok, dtype=float), np.array(ctr))
    (ok_a, ctr_a), (ok_b, ctr_b) = measured["fast"], measured["transformers"]
    assert ok_a.mean() >= 0.4 and ok_b.mean() >= 0.4, (ok_a.mean(), ok_b.mean())  # one draw, no reranking
    pooled = (ok_a.mean() + ok_b.mean()) / 2
    assert abs(ok_a.mean() - ok_b.mean()) <= 3 * math.sqrt(2 * pooled * (1 - pooled) / len(ok_a)) + 1e-9
    spread = math.sqrt(ctr_a.var(ddof=1) / len(ctr_a) + ctr_b.var(ddof=1) / len(ctr_b))
    assert abs(ctr_a.mean() - ctr_b.mean()) <= 3 * spread, (ctr_a.mean(), ctr_b.mean(), spread)


@pytest.mark.embedded
@pytest.mark.parametrize("choice", ["auto", "transformers"])
def test_both_engines_end_studio_copy_at_the_bodys_first_sentence(demo_store: str, choice: str) -> None:
    """On the Studio's prompts, every answer ends at its body's first sentence end (or its line break, or the
    token cap): no sentence end before the last token of the body's line, and most bodies end on one. One call
    mixes answers that write their title line with answers whose title code wrote (a hook's headline): each
    stops by its own number of lines."""
    rows = prompts.prompt_rows(demo_store, "held_out", 8)
    catalog = services.common.catalog(demo_store)
    items = [catalog.loc[r["item_id"]].to_dict() for r in rows]
    starts = [copy.answer_start(i, f"{copy.headline_name(i)}, tonight" if k % 2 else None)
              for k, i in enumerate(items)]
    lines = [copy.ANSWER_LINES - k % 2 for k in range(len(rows))]
    fast = models.text_model()
    llm = fast if choice == "auto" else models.load_text_model(fast.model_id, "cpu",
                                                               Path(settings.load().model_cache), engine=choice)
    assert llm.engine.startswith("llama.cpp" if choice == "auto" else "transformers"), llm.engine_note
    answers = llm.complete(llm.prompt_ids([r["chat"] for r in rows], starts), copies=2, max_new_tokens=48,
                           temperature=0.7, seed=5, stop_lines=lines, no_repeat=writer.NO_REPEAT)
    ends = llm.ends()
    for k, answer in enumerate(answers):
        _assert_ended_by_the_line_rule(answer, ends, lines[k // 2], 48)
    on_a_sentence = [a[-1] in ends.sentences for a in answers]
    assert sum(on_a_sentence) >= len(answers) / 2, [llm.tokenizer.decode(a) for a in answers]
