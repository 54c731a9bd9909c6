"""Reading ad variants from a file (CSV or JSON) for campaigns, with clear messages for bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

FIELDS = {"title": 200, "body": 600, "cta": 60}
MAX_VARIANTS = 50
MAX_FILE_BYTES = 1024 * 1024  # 50 variants at their field limits fit in a tenth of this


class VariantFileError(ValueError):
    """The variants file cannot be used; the message says where and why."""


def read_file(path: str | Path) -> list[dict[str, str]]:
    """Variants from a file on disk; a missing, oversized or non-file path is refused before reading."""
    path = Path(path)
    if not path.is_file():
        raise VariantFileError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise VariantFileError(f"{path.name}: {_too_big(path.stat().st_size)}")
    return parse(path.read_bytes(), path.name)


def _too_big(size: int) -> str:
    return f"file is {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit"


def parse(data: bytes, name: str = "variants") -> list[dict[str, str]]:
    """Variants as dicts with title, body and cta (body and cta may be empty) from CSV or JSON bytes."""
    if len(data) > MAX_FILE_BYTES:
        raise VariantFileError(f"{name}: {_too_big(len(data))}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VariantFileError(f"{name}: not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise VariantFileError(f"{name}: file is empty")
    if "\x00" in text:
        raise VariantFileError(f"{name}: contains NUL bytes; is it a CSV or JSON file?")
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
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)  # strict: an unclosed quote is an error
    if reader.fieldnames is None or "title" not in [f.strip().lower() for f in reader.fieldnames]:
        raise VariantFileError(f"{name}, line 1: a 'title' column is required (columns: title, body, cta)")
    rows: list[tuple[str, dict]] = []
    line = reader.line_num
    try:
        for row in reader:
            line = reader.line_num
            rows.append((f"line {line}", {k.strip().lower(): v for k, v in row.items() if k}))
    except csv.Error as exc:  # the bad record starts on the line after the last good one
        reason = 'a quote (") opened on this line is never closed' if "unexpected end of data" in str(exc) else exc
        raise VariantFileError(f"{name}, line {line + 1}: malformed CSV: {reason}") from exc
    return rows


def validate(rows: list[tuple[str, dict]] | list[dict], name: str = "variants") -> list[dict[str, str]]:
    """Check each variant: a title, every field within its limit, and no more than MAX_VARIANTS."""
    labelled = [r if isinstance(r, tuple) else (f"variant {i + 1}", r) for i, r in enumerate(rows)]
    variants, problems = [], []
    for where, row in labelled:
        values = {f: _text(row.get(f)) for f in FIELDS}
        problems += [f"{name}, {where}: {f} must be text, not {type(row.get(f)).__name__}"
                     for f, v in values.items() if v is None]
        variant = {f: v or "" for f, v in values.items()}
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


def _text(value: object) -> str | None:
    """A field as stripped text: empty for a missing cell (None, or NaN from a table editor); None if not text."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value.strip() if isinstance(value, str) else None
