"""Validated import of a user's own data: an items CSV and an interactions CSV.

Everything is checked before anything is written, every problem is reported with its file, line
and column, and the write is one transaction, so a failed import leaves the store as it was.
Valid files are then scrubbed (`scrub`): personal identifiers are redacted and text that speaks to
a language model is neutralised before it is stored, so everything downstream reads clean data.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import pii
import untrusted
from store import pictures, repository

MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_PROBLEMS = 50
ITEM_COLUMNS = {"required": ["item_id", "title"], "optional": ["description", "category", "year", "image"]}
INTERACTION_COLUMNS = {"required": ["user_id", "item_id", "timestamp"], "optional": ["rating"]}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LATEST_TIMESTAMP = 4102444800  # 2100-01-01
# plain ASCII decimal numbers only: float() would also take '1_0', Arabic-Indic digits, 'nan' and 'inf'
NUMBER = re.compile(r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?")
TEXT_COLUMNS = ("title", "description", "category")
REMOVED_TITLE = "[removed]"  # a title that was nothing but instructions, markup or personal data


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f", line {self.line}" if self.line else "")
        where += f", column '{self.column}'" if self.column else ""
        return f"{where}: {self.message}"


class ImportFailed(ValueError):
    """The files did not validate; nothing was written. `problems` lists every issue found."""

    def __init__(self, problems: list[Problem], total: int | None = None):
        self.problems = problems
        total = total or len(problems)
        more = f"\n... and {total - len(problems)} more problems" if total > len(problems) else ""
        super().__init__(f"Import failed with {total} problem(s); nothing was written.\n"
                         + "\n".join(str(p) for p in problems) + more)


class _Collector:
    """Keeps the first problems in full and counts the rest."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.total = 0

    def add(self, file: str, line: int | None, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(file, line, column, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise ImportFailed(self.problems, self.total)


def _too_big(size: int) -> str:
    return f"file is {size / 2**20:,.1f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit"


def _decode(data: bytes, file: str, out: _Collector) -> str | None:
    if len(data) > MAX_FILE_BYTES:
        out.add(file, None, None, _too_big(len(data)))
        return None
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        out.add(file, 1, None, "is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8 CSV")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        out.add(file, line, None, f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8 CSV")
        return None
    if "\x00" in text:
        out.add(file, text[: text.index("\x00")].count("\n") + 1, None, "contains NUL bytes; is it a CSV file?")
        return None
    if not text.strip():
        out.add(file, None, None, "file is empty")
        return None
    return text


def _rows(text: str, file: str, spec: dict, out: _Collector) -> list[tuple[int, dict[str, str]]]:
    """Parse a CSV into (line number, row) pairs after checking its header against `spec`."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: an unclosed quote is an error
    before = out.total  # problems of other files do not stop this one from being checked
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as exc:
        out.add(file, 1, None, f"cannot read the header: {exc}")
        return []
    allowed = spec["required"] + spec["optional"]
    for col in spec["required"]:
        if col not in header:
            out.add(file, 1, col, f"required column is missing (found: {', '.join(header) or 'nothing'})")
    for col in header:
        if col not in allowed:
            out.add(file, 1, col or "(empty)", f"unexpected column; allowed columns are {', '.join(allowed)}")
    dupes = {c for c in header if header.count(c) > 1}
    for col in sorted(dupes):
        out.add(file, 1, col, "column appears more than once")
    if out.total > before:
        return []
    rows, line = [], 1
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                out.add(file, line, None, f"expected {len(header)} fields, found {len(values)}")
                continue
            rows.append((line, {h: v.strip() for h, v in zip(header, values, strict=True)}))
    except csv.Error as exc:
        unclosed = "unexpected end of data" in str(exc)
        out.add(file, line + 1, None, 'malformed CSV: a quote (") opened on this line is never closed'
                if unclosed else f"malformed CSV: {exc}")
    if not rows and out.total == before:
        out.add(file, None, None, "file has a header but no data rows")
    return rows


def _check_id(value: str, file: str, line: int, column: str, out: _Collector) -> bool:
    if not value:
        out.add(file, line, column, "is empty")
    elif len(value) > 128:
        out.add(file, line, column, f"is {len(value)} characters long; the limit is 128")
    elif control := next((c for c in value if ord(c) < 32 or 127 <= ord(c) < 160), None):
        out.add(file, line, column, f"contains the control character U+{ord(control):04X}")
    else:
        return True
    return False


def _number(value: str) -> float | None:
    """A finite plain decimal number, else None."""
    return float(value) if NUMBER.fullmatch(value) and math.isfinite(float(value)) else None


def parse_timestamp(value: str) -> int | None:
    """Unix seconds from a Unix time or an ISO 8601 date/datetime (naive means UTC)."""
    if NUMBER.fullmatch(value):
        number = _number(value)
        return int(number) if number is not None else None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _image(value: str, base: Path | None) -> tuple[str | None, str | None]:
    """(absolute path, problem) of an `image` cell: a path to the item's picture, relative to the items file's
    folder when the file was read from disk (an upload has no folder: its paths must be absolute)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        if base is None:
            return None, f"'{value}' is a relative path; an uploaded file needs absolute image paths"
        path = base / path
    path = path.resolve()
    problem = pictures.problem(path)
    return (None, problem) if problem else (str(path), None)


def _items(text: str, file: str, out: _Collector, base: Path | None = None) -> pd.DataFrame:
    records, first_line = [], {}
    for line, row in _rows(text, file, ITEM_COLUMNS, out):
        item_id, title = row["item_id"], row["title"]
        ok = _check_id(item_id, file, line, "item_id", out)
        if ok and item_id in first_line:
            out.add(file, line, "item_id", f"duplicate id '{item_id}' (first on line {first_line[item_id]})")
            ok = False
        if not title:
            out.add(file, line, "title", "is empty")
            ok = False
        elif len(title) > 500:
            out.add(file, line, "title", f"is {len(title)} characters long; the limit is 500")
            ok = False
        for column, limit in (("category", 500), ("description", 5000)):
            if len(row.get(column) or "") > limit:
                out.add(file, line, column, f"is {len(row[column])} characters long; the limit is {limit}")
                ok = False
        year = row.get("year") or None
        if year is not None and not (year.isascii() and year.isdigit() and 1800 <= int(year) <= 2100):
            out.add(file, line, "year", f"'{year}' is not a year between 1800 and 2100")
            ok = False
        image = None
        if row.get("image"):
            image, problem = _image(row["image"], base)
            if problem:
                out.add(file, line, "image", problem)
                ok = False
        if ok:
            first_line[item_id] = line
            records.append({"item_id": item_id, "title": title, "description": row.get("description") or None,
                            "category": row.get("category") or None, "year": int(year) if year else None,
                            "image": image})
    return pd.DataFrame(records, columns=["item_id", "title", "description", "category", "year", "image"])


def _interactions(text: str, file: str, item_ids: set[str] | None, out: _Collector) -> pd.DataFrame:
    records = []
    for line, row in _rows(text, file, INTERACTION_COLUMNS, out):
        ok = _check_id(row["user_id"], file, line, "user_id", out)
        valid_item = _check_id(row["item_id"], file, line, "item_id", out)
        ok = ok and valid_item
        if valid_item and item_ids is not None and row["item_id"] not in item_ids:
            out.add(file, line, "item_id", f"'{row['item_id']}' is not in the items file")
            ok = False
        stamp = parse_timestamp(row["timestamp"])
        if stamp is None or not 0 <= stamp <= LATEST_TIMESTAMP:
            out.add(file, line, "timestamp",
                    f"'{row['timestamp']}' is not a Unix time or ISO date between 1970 and 2100")
            ok = False
        rating = _number(row["rating"]) if row.get("rating") else None
        if row.get("rating") and (rating is None or not 0 <= rating <= 1000):
            out.add(file, line, "rating", f"'{row['rating']}' is not a number between 0 and 1000")
            ok = False
        if ok:
            records.append({"user_id": row["user_id"], "item_id": row["item_id"], "timestamp": stamp,
                            "rating": rating})
    return pd.DataFrame(records, columns=["user_id", "item_id", "timestamp", "rating"])


def validate(items_data: bytes, interactions_data: bytes, items_name: str = "items.csv",
             interactions_name: str = "interactions.csv", base: Path | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check both files completely; return (users, items, interactions) or raise ImportFailed. `base`: the items
    file's folder, against which relative image paths are read."""
    out = _Collector()
    items_text = _decode(items_data, items_name, out)
    items = _items(items_text, items_name, out, base) if items_text is not None else None
    inter_text = _decode(interactions_data, interactions_name, out)
    if items is not None and inter_text is not None:
        # with a broken items file, unknown-item errors would only echo it, so that check waits for a clean one
        known = set(items["item_id"]) if not out.total else None
        interactions = _interactions(inter_text, interactions_name, known, out)
    out.raise_if_any()
    users = pd.DataFrame({"user_id": interactions["user_id"].drop_duplicates()}).assign(
        age=None, gender=None, occupation=None, zip_code=None)
    return users, items, interactions


def import_files(name: str, items_path: str | Path, interactions_path: str | Path,
                 replace: bool = False) -> dict[str, int]:
    """Validate and import two CSV files from disk as dataset `name`."""
    return import_bytes(name, read_file(items_path), read_file(interactions_path),
                        Path(items_path).name, Path(interactions_path).name, replace, Path(items_path).parent)


def read_file(path: str | Path) -> bytes:
    """The file's bytes; its size is checked with stat() first, so an oversized file is never read."""
    path = Path(path)
    if path.is_dir():
        raise ImportFailed([Problem(str(path), None, None, "is a folder, not a CSV file")])
    if not path.is_file():
        raise ImportFailed([Problem(str(path), None, None, "file not found")])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ImportFailed([Problem(path.name, None, None, _too_big(path.stat().st_size))])
    return path.read_bytes()


def import_bytes(name: str, items_data: bytes, interactions_data: bytes, items_name: str = "items.csv",
                 interactions_name: str = "interactions.csv", replace: bool = False,
                 base: Path | None = None) -> dict[str, int]:
    """Validate and import uploaded bytes as dataset `name` (`base`: the items file's folder, when it has one);
    returns the counts written."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ImportFailed([Problem("dataset name", None, None,
                                    f"'{name}' must be 1-64 letters, digits, '.', '_' or '-'")])
    users, items, interactions = validate(items_data, interactions_data, items_name, interactions_name, base)
    (users, items, interactions), scrubbed = scrub(users, items, interactions)
    source = pii.redact(f"CSV import ({items_name}, {interactions_name})")[0]
    try:
        repository.write_dataset(name, source, users, items, interactions, replace=replace)
    except repository.DatasetExists as exc:
        raise ImportFailed([Problem("dataset name", None, None, str(exc))]) from exc
    return {"users": len(users), "items": len(items), "interactions": len(interactions), **scrubbed}


def scrub(users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame
          ) -> tuple[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], dict[str, int]]:
    """Validated frames made safe to store, with counts: `redacted` personal identifiers (an id that is one
    becomes a stable pseudonym, counted once) and `neutralised` texts that held instructions or markup."""
    tally: Counter = Counter()
    items = items.copy()
    for column in TEXT_COLUMNS:
        results = [untrusted.neutralise(v) if isinstance(v, str) else None for v in items[column]]
        items[column] = [r.text or None if r else None for r in results]
        tally["redacted"] += sum(r.personal for r in results if r)
        tally["neutralised"] += sum(r.attack for r in results if r)
    items["title"] = items["title"].fillna(REMOVED_TITLE)
    item_ids = _pseudonyms(items["item_id"], tally)
    user_ids = _pseudonyms(users["user_id"], tally)
    items["item_id"] = items["item_id"].map(item_ids)
    interactions = interactions.assign(item_id=interactions["item_id"].map(item_ids),
                                       user_id=interactions["user_id"].map(user_ids))
    users = users.assign(user_id=users["user_id"].map(user_ids))
    return (users, items, interactions), {"redacted": tally["redacted"], "neutralised": tally["neutralised"]}


def _pseudonyms(ids: pd.Series, tally: Counter) -> dict[str, str]:
    """Each distinct id mapped to itself, or to a pseudonym when it holds a personal identifier."""
    mapping = {value: pii.pseudonym(value) for value in ids.unique()}
    tally["redacted"] += sum(kind is not None for _, kind in mapping.values())
    return {value: new for value, (new, _) in mapping.items()}
