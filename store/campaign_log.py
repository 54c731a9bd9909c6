"""Validated import of a real campaign's log: one row per impression, with whether it was clicked.

    impression_id,user_id,item_id,variant,clicked,timestamp[,converted]

`variant` is the ad as shown, "title | body | cta" (body and call to action may be left out). Checked like the
dataset CSVs (`store.csv_import`): every problem is reported with its line and column before anything is
written, ids must be the dataset's, an impression id may not repeat or already be stored, and the ad's text
is neutralised and stripped of personal data before it is stored. The write is one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

import pii
import untrusted
from store import repository, serving
from store.csv_import import (
    LATEST_TIMESTAMP,
    NAME_PATTERN,
    ImportFailed,
    Problem,
    _check_id,
    _Collector,
    _decode,
    _rows,
    parse_timestamp,
)
from store.schema import ServedImpression

LOG_COLUMNS = {"required": ["impression_id", "user_id", "item_id", "variant", "clicked", "timestamp"],
               "optional": ["converted"]}
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}
LIMITS = {column: ServedImpression.__table__.c[column].type.length for column in ("title", "body", "cta")}


def source_name(campaign: str) -> str:
    return f"import:{campaign}"


def _flag(value: str, file: str, line: int, column: str, out: _Collector) -> bool | None:
    flag = FLAGS.get(value.strip().lower())
    if flag is None:
        out.add(file, line, column, f"'{value}' is not one of 1/0, true/false, yes/no")
    return flag


def _ad(value: str, file: str, line: int, out: _Collector) -> dict[str, str] | None:
    """The shown ad's title, body and CTA from "title | body | cta", neutralised and without personal data."""
    parts = [p.strip() for p in value.split("|")]
    if not parts[0] or len(parts) > 3:
        out.add(file, line, "variant", "must be 'title | body | cta' with a title (body and CTA may be left out)")
        return None
    ad = dict(zip(("title", "body", "cta"), [*parts, "", ""][:3], strict=True))
    for field, text in ad.items():
        if len(text) > LIMITS[field]:
            out.add(file, line, "variant", f"its {field} is {len(text)} characters long; the limit is {LIMITS[field]}")
            return None
        ad[field] = pii.redact(untrusted.neutralise(text).text)[0] if text else ""
    return ad


def validate(data: bytes, file: str, users: set[str], items: set[str]) -> pd.DataFrame:
    """Rows ready to store (without dataset, segment and source; `line` says where each came from), or
    ImportFailed listing every problem."""
    out = _Collector()
    text = _decode(data, file, out)
    records, first_line = [], {}
    for line, row in _rows(text, file, LOG_COLUMNS, out) if text is not None else []:
        valid = {c: _check_id(row[c], file, line, c, out) for c in ("impression_id", "user_id", "item_id")}
        ok = all(valid.values())
        if valid["impression_id"] and row["impression_id"] in first_line:
            out.add(file, line, "impression_id", f"repeats line {first_line[row['impression_id']]}")
            ok = False
        first_line.setdefault(row["impression_id"], line)
        for column, known in (("user_id", users), ("item_id", items)):
            if valid[column] and row[column] not in known:
                out.add(file, line, column, f"'{row[column]}' is not in the dataset")
                ok = False
        stamp = parse_timestamp(row["timestamp"])
        if stamp is None or not 0 <= stamp <= LATEST_TIMESTAMP:
            out.add(file, line, "timestamp", f"'{row['timestamp']}' is not a Unix time or ISO date between 1970 "
                                             "and 2100")
            ok = False
        clicked = _flag(row["clicked"], file, line, "clicked", out)
        converted = _flag(row.get("converted", ""), file, line, "converted", out)
        ad = _ad(row["variant"], file, line, out)
        if ok and ad is not None and clicked is not None and converted is not None:
            shown = datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)
            records.append({"line": line, "id": row["impression_id"], "user_id": row["user_id"],
                            "item_id": row["item_id"], "variant_id": None, **ad, "shown_at": shown,
                            "clicked_at": shown if clicked else None, "converted_at": shown if converted else None})
    out.raise_if_any()
    return pd.DataFrame(records)


def import_log(dataset: str, campaign: str, data: bytes, file: str, segments: dict[str, str],
               default_segment: str) -> dict[str, int]:
    """Validate a campaign log and store it as source "import:<campaign>"; each impression is filed under its
    user's segment (`segments`, else `default_segment`). Returns the counts written."""
    if not NAME_PATTERN.fullmatch(campaign or ""):
        raise ImportFailed([Problem("campaign name", None, None,
                                    f"'{campaign}' must be 1-64 letters, digits, '.', '_' or '-'")])
    if source_name(campaign) in serving.sources(dataset):
        raise ImportFailed([Problem("campaign name", None, None, f"a campaign '{campaign}' is already imported "
                                                                 f"into '{dataset}'; choose another name")])
    users = set(repository.list_users(dataset)["user_id"])
    items = set(repository.items(dataset)["item_id"])
    rows = validate(data, file, users, items)
    taken = rows[rows["id"].isin(serving.existing_ids(rows["id"].tolist()))]
    if len(taken):
        out = _Collector()
        for row in taken.itertuples():
            out.add(file, row.line, "impression_id", f"'{row.id}' is already stored (imported or served)")
        out.raise_if_any()
    rows = rows.drop(columns=["line"]).assign(dataset=dataset, source=source_name(campaign),
                       segment=rows["user_id"].map(segments).fillna(default_segment))
    serving.import_log(rows.astype(object).where(rows.notna(), None).to_dict("records"))
    return {"impressions": len(rows), "clicks": int(rows["clicked_at"].notna().sum()),
            "conversions": int(rows["converted_at"].notna().sum())}

