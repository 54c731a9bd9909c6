"""Catalog titles as MovieLens writes them: 'Usual Suspects, The (1995)'. The one place that knows the year
suffix, so every reader strips and reads it the same way."""

from __future__ import annotations

import re

YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


def without_year(title: object) -> str:
    """'Toy Story (1995)' -> 'Toy Story'."""
    return YEAR_SUFFIX.sub("", str(title)).strip()


def year_of(title: object) -> int | None:
    """The year a title ends with, '(1995)' -> 1995, or None."""
    match = YEAR_SUFFIX.search(str(title))
    return int(match.group(1)) if match else None
