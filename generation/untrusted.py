"""Untrusted text (histories, item descriptions) on its way into a prompt.

Catalog text comes from users' files and third parties, so it is data, never instructions: it is
cleaned of anything a chat template could read as structure and fenced inside a delimited block
that the system prompt tells the model not to obey.
"""

from __future__ import annotations

import re
import unicodedata

DATA_OPEN, DATA_CLOSE = "<data>", "</data>"
# chat-template markers of the common model families, and our own fence
_SPECIAL = re.compile(
    r"<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]|<<\/?SYS>>|<start_of_turn>|<end_of_turn>|</?data>|<\s*/?\s*system\s*>",
    re.IGNORECASE,
)


def clean(text: object, limit: int = 200) -> str:
    """One line of printable text without template markers, cut to `limit` characters."""
    value = unicodedata.normalize("NFKC", str(text or ""))
    value = _SPECIAL.sub(" ", value)
    value = "".join(ch if ch.isprintable() else " " for ch in value)
    value = re.sub(r"\s+", " ", value).strip()
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def fenced(lines: list[str]) -> str:
    """Cleaned lines inside the data fence, one per line."""
    body = "\n".join(f"- {clean(line)}" for line in lines)
    return f"{DATA_OPEN}\n{body}\n{DATA_CLOSE}"
