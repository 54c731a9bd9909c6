"""Private data: e-mail addresses, phone numbers and similar identifiers in imported files never reach the
store, prompts, generated text, logs or exports.

A unit corpus pins what is redacted and what must stay (years, ratings, ids, titles with digits); the end-to-end
test imports files full of identifiers through the CLI, profiles and generates with the real models, exports,
and then searches every output and every file under ADLOOP_HOME for the originals.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import cli
import pii
import services
from store import db, repository
from untrusted import clean

# (identifier, the placeholder kind it must become)
FOUND = [
    ("jane.doe+ads@example.co.uk", "email"), ("J.Smith@Mail.Example.org", "email"),
    ("+44 20 7946 0958", "phone"), ("+1 (415) 555-0132", "phone"), ("(415) 555-0132", "phone"),
    ("415-555-0132", "phone"), ("415.555.0132", "phone"), ("020 7946 0958", "phone"), ("+49 151 12345678", "phone"),
    ("4111 1111 1111 1111", "card"), ("5500-0000-0000-0004", "card"), ("378282246310005", "card"),
    ("DE89 3704 0044 0532 0130 00", "iban"), ("GB82WEST12345698765432", "iban"), ("123-45-6789", "ssn"),
    ("192.168.1.20", "ip"), ("2001:db8::8a2e:370:7334", "ip"),
    ("221B Baker Street", "address"), ("1600 Pennsylvania Avenue", "address"),
]
# Look like numbers or identifiers, are not personal: must pass unchanged.
KEPT = [
    "Seven (Se7en) (1995)", "2001: A Space Odyssey (1968)", "9 1/2 Weeks (1986)", "Apollo 13 (1995)", "1-900 (1994)",
    "187 (1997)", "Miracle on 34th Street (1947)", "42nd Street (1933)", "Rated 4.5 of 5", "2020-01-02T10:00:00",
    "1577923200", "item 1234567890123", "4111 1111 1111 1112", "ISBN 978-3-16-148410-0", "12:30:45",
    "version 1.2.3", "Room 1408", "Nov 3, 1995", "user 4242", "Action|Sci-Fi|War",
]


@pytest.mark.parametrize(("value", "kind"), FOUND, ids=[v for v, _ in FOUND])
def test_identifiers_become_typed_placeholders(value: str, kind: str) -> None:
    assert pii.redact(f"Contact {value} today.") == (f"Contact [{kind}] today.", [kind])
    assert clean(f"Contact {value}") == f"Contact [{kind}]"  # the second line of defence before prompts


@pytest.mark.parametrize("value", KEPT)
def test_numbers_that_are_not_personal_pass_unchanged(value: str) -> None:
    assert pii.redact(value) == (value, [])
    assert clean(value) == value


def test_ids_that_are_identifiers_become_stable_pseudonyms() -> None:
    first, kind = pii.pseudonym("alice.smith@example.com")
    assert kind == "email" and re.fullmatch(r"email-[0-9a-f]{12}", first)
    assert pii.pseudonym("alice.smith@example.com")[0] == first  # the same person keeps one id
    assert pii.pseudonym("bob@example.com")[0] != first
    assert pii.pseudonym("user-42") == ("user-42", None)


# --- end to end ----------------------------------------------------------------------------------------------

EMAIL_USER, PHONE_USER, CARD_ITEM = "alice.smith@example.com", "+1 (415) 555-0199", "4111111111111111"
TEXT_PII = ["bob.jones@example.org", "+44 20 7946 0958", "(212) 555-0147", "5500 0000 0000 0004",
            "GB82 WEST 1234 5698 7654 32", "10.20.30.40", "221B Baker Street", "078-05-1120"]
SECRETS = [EMAIL_USER, PHONE_USER, CARD_ITEM, *TEXT_PII]
ITEMS = [  # item_id, title, category, year, description: identifiers in every text column and one id
    ("1", "Star Wars (1977)", "Action|Adventure|Sci-Fi", 1977, f"Signed copy, ask {TEXT_PII[0]}"),
    ("2", f"Fargo (1996) - owner {TEXT_PII[1]}", "Crime|Drama|Thriller", 1996, f"Call {TEXT_PII[2]}"),
    (CARD_ITEM, "Heat (1995)", "Action|Crime|Thriller", 1995, f"Paid with {TEXT_PII[3]}, refund to {TEXT_PII[4]}"),
    ("4", "Alien (1979)", f"Horror|Sci-Fi|seen from {TEXT_PII[5]}", 1979, ""),
    ("5", "Toy Story (1995)", "Animation|Comedy", 1995, f"Ship to {TEXT_PII[6]}; SSN {TEXT_PII[7]}"),
    ("6", "Jaws (1975)", "Action|Horror", 1975, ""),
]
PLANTED = len(TEXT_PII) + 3  # each identifier in a text, plus the two user ids and the item id, once each


def private_csv() -> tuple[bytes, bytes]:
    items = pd.DataFrame(ITEMS, columns=["item_id", "title", "category", "year", "description"])
    rows = [(user, item, 1_600_000_000 + 3600 * step, 1 + (step * 3) % 5)
            for user, order in ((EMAIL_USER, [0, 1, 2, 3, 4, 5, 2, 0]), (PHONE_USER, [5, 4, 3, 1]))
            for step, item in enumerate(ITEMS[k][0] for k in order)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return items.to_csv(index=False).encode(), events.to_csv(index=False).encode()


def assert_no_secrets(text: str, where: str) -> None:
    found = [s for s in SECRETS if s.lower() in text.lower()]
    assert not found, f"{found} in {where}"


@pytest.mark.embedded
def test_identifiers_never_reach_store_prompts_output_logs_or_exports(
        isolated_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    torch.set_num_threads(1)
    caplog.set_level(logging.DEBUG)
    items, events = private_csv()
    (tmp_path / "items.csv").write_bytes(items)
    (tmp_path / "events.csv").write_bytes(events)
    assert cli.main(["import", "--name", "private", "--items", str(tmp_path / "items.csv"),
                     "--interactions", str(tmp_path / "events.csv")]) == 0
    assert f"redacted {PLANTED} personal identifiers" in capsys.readouterr().out

    stored = [repository.items("private"), repository.interactions("private"), repository.list_users("private")]
    assert_no_secrets("\n".join(frame.to_csv() for frame in stored), "the store")
    user = pii.pseudonym(EMAIL_USER)[0]
    assert set(stored[2]["user_id"]) == {user, pii.pseudonym(PHONE_USER)[0]}
    assert "[email]" in stored[0].set_index("item_id").loc["1", "description"]

    profile = services.audience.profile("private", user, recompute=True)
    assert profile["intent"]["llm_output"] is not None
    variants = services.studio.generate("private", "1", user_id=user, n=2, seed=0)
    assert any(v["safety"]["status"] == "passed" for v in variants), [v["safety"] for v in variants]
    assert_no_secrets(json.dumps(profile, default=str), "the profile")
    for v in variants:
        assert_no_secrets(json.dumps(v, default=str), "a variant, its prompt or its banners' paths")
    export = services.studio.export_variants([v["id"] for v in variants])
    with zipfile.ZipFile(io.BytesIO(export)) as archive:
        for name in archive.namelist():
            assert_no_secrets(archive.read(name).decode("latin-1"), f"the export's {name}")
    exported = services.common.csv_export(repository.variants("private", batch=None)).decode()
    assert_no_secrets(exported, "the variants CSV")
    assert_no_secrets("\n".join(r.getMessage() for r in caplog.records), "the logs")
    # SQLite's locks are per process and closing ANY descriptor of the file drops them all: with connections
    # still open, reading the database here would let the next process to close it delete the live WAL.
    db.dispose_all()
    for file in (f for f in isolated_home.rglob("*") if f.is_file()):  # database, WAL, banners, run logs
        assert_no_secrets(file.read_bytes().decode("latin-1"), str(file))


def test_a_store_filled_without_the_import_keeps_identifiers_out_of_prompts(empty_store: str, tiny_llm: str) -> None:
    """A database written by someone else holds identifiers; the prompts built from it must not."""
    items, events = (pd.read_csv(io.BytesIO(b), dtype=str, keep_default_na=False) for b in private_csv())
    items = items.assign(year=items["year"].astype(int), description=items["description"].replace("", None))
    events = events.assign(timestamp=events["timestamp"].astype(int), rating=events["rating"].astype(float))
    users = pd.DataFrame({"user_id": events["user_id"].unique()}).assign(age=None, gender=None, occupation=None,
                                                                         zip_code=None)
    repository.write_dataset("raw", "written directly", users, items, events)
    profile = services.audience.profile("raw", EMAIL_USER, recompute=True)
    assert_no_secrets(profile["intent"]["summary"], "the summary")
    for v in services.studio.generate("raw", "2", user_id=EMAIL_USER, n=2, seed=0):
        assert_no_secrets(v["prompt"], "the prompt")
        assert "Fargo (1996) - owner [phone]" in v["prompt"]
