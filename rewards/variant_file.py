"""Reading ad variants from a file (CSV or JSON) for campaigns, with clear messages for bad input."""

from __future__ import annotations

import csv
import io
import json

FIELDS = {"title": 200, "body": 600, "cta": 60}
MAX_VARIANTS = 50


class VariantFileError(ValueError):
    """The variants file cannot be used; the message says where and why."""


def parse(data: bytes, name: str = "variants") -> list[dict[str, str]]:
    """Variants as dicts with title, body and cta (body and cta may be empty) from CSV or JSON bytes."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VariantFileError(f"{name}: not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise VariantFileError(f"{name}: file is empty")
    rows = _json_rows(text, name) if text.lstrip()[:1] in "[{" else _csv_rows(text, name)
    return validate(rows, name)


def _json_rows(text: str, name: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VariantFileError(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    data = data.get("variants", data) if isinstance(data, dict) else data
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise VariantFileError(f"{name}: expected a JSON list of objects with title, body and cta")
    return [(f"variant {i + 1}", v) for i, v in enumerate(data)]


def _csv_rows(text: str, name: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or "title" not in [f.strip().lower() for f in reader.fieldnames]:
        raise VariantFileError(f"{name}, line 1: a 'title' column is required (columns: title, body, cta)")
    try:
        return [(f"line {reader.line_num}", {k.strip().lower(): v for k, v in row.items() if k}) for row in reader]
    except csv.Error as exc:
        raise VariantFileError(f"{name}, line {reader.line_num}: malformed CSV: {exc}") from exc


def validate(rows: list[tuple[str, dict]] | list[dict], name: str = "variants") -> list[dict[str, str]]:
    """Check each variant: a title, every field within its limit, and no more than MAX_VARIANTS."""
    labelled = [r if isinstance(r, tuple) else (f"variant {i + 1}", r) for i, r in enumerate(rows)]
    variants, problems = [], []
    for where, row in labelled:
        variant = {f: str(row.get(f) or "").strip() for f in FIELDS}
        if not any(variant.values()):
            continue
        if not variant["title"]:
            problems.append(f"{name}, {where}: the title is empty")
        problems += [f"{name}, {where}: {f} is {len(variant[f])} characters; the limit is {limit}"
                     for f, limit in FIELDS.items() if len(variant[f]) > limit]
        variants.append(variant)
    if not variants and not problems:
        problems.append(f"{name}: no variants found")
    if len(variants) > MAX_VARIANTS:
        problems.append(f"{name}: {len(variants)} variants; a campaign takes at most {MAX_VARIANTS}")
    if problems:
        raise VariantFileError("\n".join(problems[:20]))
    return variants
