"""CSV import: valid files land with the right counts; every bad input is reported precisely and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.exc import IntegrityError

import services
from store import pictures, repository
from store.csv_import import MAX_PROBLEMS, ImportFailed, validate

ITEMS_NAME, EVENTS_NAME = "shop-items.csv", "shop-events.csv"

ITEMS = (
    b"item_id,title,category,year,description\n"
    b"1,Heat (1995),Action|Crime,1995,A heist goes wrong\n"
    b"2,Toy Story (1995),Animation|Comedy,1995,\n"
    b"3,Babe,Comedy,,A pig who wants to herd sheep\n"
)

EVENTS = (
    b"user_id,item_id,timestamp,rating\n"
    b"u1,1,2020-01-02,4\n"
    b"u1,2,1577923300,5\n"
    b"u2,3,2020-01-03T10:00:00+02:00,\n"
    b"u2,1,1577923200.9,3.5\n"
)


def day(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def import_csv(name: str, items: bytes, events: bytes, replace: bool = False) -> dict[str, int]:
    return services.audience.import_csv(name, items, events, ITEMS_NAME, EVENTS_NAME, replace=replace)


@pytest.fixture
def base(empty_store: str) -> dict[str, int]:
    """A fresh store that already holds one dataset, so a failed import has rows it could disturb."""
    import_csv("base", ITEMS, EVENTS)
    counts = repository.table_counts()
    assert counts["items"] == 3 and counts["interactions"] == 4
    return counts


def expect_failure(name: str, items: bytes, events: bytes, *fragments: str, replace: bool = False) -> ImportFailed:
    """Run an import that must fail; check the message and that no table changed."""
    before = repository.table_counts()
    names_before = repository.dataset_names()
    with pytest.raises(ImportFailed) as info:
        import_csv(name, items, events, replace=replace)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert "nothing was written" in message
    assert repository.table_counts() == before
    assert repository.dataset_names() == names_before
    return info.value


def test_valid_files_import_with_counts_and_readable_history(empty_store: str):
    counts = import_csv("shop", ITEMS, EVENTS)
    assert counts == {"users": 2, "items": 3, "interactions": 4, "redacted": 0, "neutralised": 0}
    assert repository.table_counts() == {"datasets": 1, "users": 2, "items": 3, "interactions": 4,
                                         "item_embeddings": 0, "profiles": 0, "variants": 0, "impressions": 0,
                                         "served_impressions": 0, "runs": 0, "run_metrics": 0}
    summary = services.audience.datasets().set_index("dataset")
    assert summary.loc["shop", ["users", "items", "interactions"]].tolist() == [2, 3, 4]

    history = services.audience.history("shop", "u1")
    assert history["item_id"].tolist() == ["1", "2"]  # oldest first
    assert history["title"].tolist() == ["Heat (1995)", "Toy Story (1995)"]
    assert history["category"].tolist() == ["Action|Crime", "Animation|Comedy"]
    assert history["rating"].tolist() == [4.0, 5.0]
    assert history["description"].iloc[0] == "A heist goes wrong"
    assert pd.isna(history["description"].iloc[1])  # empty cell -> NULL
    assert history["date"].iloc[0] == pd.Timestamp("2020-01-02")

    u2 = services.audience.history("shop", "u2")
    assert u2["item_id"].tolist() == ["1", "3"]
    babe = u2.set_index("item_id").loc["3"]
    assert pd.isna(babe["year"]) and pd.isna(babe["rating"])


def test_iso_dates_and_unix_timestamps_both_parse(empty_store: str):
    import_csv("shop", ITEMS, EVENTS)
    stamps = repository.interactions("shop").set_index(["user_id", "item_id"])["timestamp"]
    assert stamps[("u1", "1")] == day("2020-01-02") == 1577923200
    assert stamps[("u1", "2")] == 1577923300
    assert stamps[("u2", "3")] == day("2020-01-03T08:00:00")  # +02:00 converted to UTC
    assert stamps[("u2", "1")] == 1577923200  # fractional seconds truncated


def test_files_on_disk_import_and_name_the_file_in_errors(empty_store: str, tmp_path: Path):
    items, events = tmp_path / "catalog.csv", tmp_path / "events.csv"
    items.write_bytes(ITEMS)
    events.write_bytes(EVENTS)
    assert services.audience.import_csv_files("disk", items, events) == {"users": 2, "items": 3, "interactions": 4,
                                                                 "redacted": 0, "neutralised": 0}

    items.write_bytes(b"item_id,title\n1,\n")
    with pytest.raises(ImportFailed, match=r"catalog\.csv, line 2, column 'title': is empty"):
        services.audience.import_csv_files("disk2", items, events)
    with pytest.raises(ImportFailed, match="file not found"):
        services.audience.import_csv_files("disk2", tmp_path / "missing.csv", events)
    assert repository.dataset_names() == ["disk"]


GOOD_EVENTS = b"user_id,item_id,timestamp,rating\nu1,1,1577923200,4\n"


@pytest.mark.parametrize(("items", "events", "fragments"), [
    pytest.param(b"item_id,category\n1,Drama\n", GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 1, column 'title': required column is missing"], id="missing-column"),
    pytest.param(b"item_id,title,price\n1,Heat,9.99\n", GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 1, column 'price': unexpected column"], id="unknown-column"),
    pytest.param(b"item_id,title\n1,Heat\n2,Babe\n1,Toy Story\n", GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 4, column 'item_id': duplicate id '1' (first on line 2)"], id="duplicate-id"),
    pytest.param(b"item_id,title\n1,Heat\n2,  \n", GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 3, column 'title': is empty"], id="empty-title"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp\nu1,1,1577923200\nu1,99,1577923200\n",
                 [f"{EVENTS_NAME}, line 3, column 'item_id': '99' is not in the items file"], id="unknown-item"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp\nu1,1,yesterday\n",
                 [f"{EVENTS_NAME}, line 2, column 'timestamp': 'yesterday' is not a Unix time or ISO date"],
                 id="bad-timestamp"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp\nu1,1,5000000000\n",
                 [f"{EVENTS_NAME}, line 2, column 'timestamp'"], id="timestamp-after-2100"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp\nu1,1,2020-02-30\n",
                 [f"{EVENTS_NAME}, line 2, column 'timestamp'"], id="impossible-date"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp,rating\nu1,1,1577923200,good\n",
                 [f"{EVENTS_NAME}, line 2, column 'rating': 'good' is not a number between 0 and 1000"],
                 id="non-numeric-rating"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp,rating\nu1,1,1577923200,4\nu1,2,1577923200,4,extra\n",
                 [f"{EVENTS_NAME}, line 3: expected 4 fields, found 5"], id="wrong-field-count"),
    pytest.param("item_id,title\n1,Heat\n2,Am\u00e9lie\n".encode("latin-1"), GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 3: not valid UTF-8"], id="latin-1"),
    pytest.param(b"", GOOD_EVENTS, [f"{ITEMS_NAME}: file is empty"], id="empty-file"),
    pytest.param(b"  \n\n", GOOD_EVENTS, [f"{ITEMS_NAME}: file is empty"], id="blank-file"),
    pytest.param(ITEMS, b"user_id,item_id,timestamp\n", [f"{EVENTS_NAME}: file has a header but no data rows"],
                 id="header-only"),
    pytest.param(b"item_id,title\n1,He\x00at\n", GOOD_EVENTS, [f"{ITEMS_NAME}, line 2: contains NUL bytes"],
                 id="nul-bytes"),
    pytest.param(b"item_id,title,year\n1,Heat,95\n", GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 2, column 'year': '95' is not a year between 1800 and 2100"], id="bad-year"),
    pytest.param(("item_id,title\n" + "x" * 129 + ",Heat\n").encode(), GOOD_EVENTS,
                 [f"{ITEMS_NAME}, line 2, column 'item_id': is 129 characters long; the limit is 128"],
                 id="id-too-long"),
])
def test_bad_input_is_reported_with_file_line_and_column(base: dict, items: bytes, events: bytes,
                                                         fragments: list[str]):
    failure = expect_failure("shop", items, events, *fragments)
    assert len(failure.problems) == 1
    assert failure.problems[0].file in (ITEMS_NAME, EVENTS_NAME)


@pytest.mark.parametrize("rating", ["-1", "1e9", "1001", "nan", "NaN", "inf", "-inf", "1e400"])
def test_out_of_range_ratings_are_rejected(base: dict, rating: str):
    events = f"user_id,item_id,timestamp,rating\nu1,1,1577923200,{rating}\n".encode()
    failure = expect_failure("shop", ITEMS, events,
                             f"{EVENTS_NAME}, line 2, column 'rating': '{rating}' is not a number between 0 and 1000")
    assert (failure.problems[0].line, failure.problems[0].column) == (2, "rating")


@pytest.mark.parametrize("name", ["../etc", "", "-starts-with-dash", "has space", "x" * 65, "shop\n", "caf\u00e9"])
def test_bad_dataset_names_are_rejected(base: dict, name: str):
    failure = expect_failure(name, ITEMS, EVENTS, "dataset name: ", "must be 1-64 letters, digits")
    assert failure.problems[0].line is None


def test_problems_carry_structured_locations(base: dict):
    failure = expect_failure("shop", b"item_id,title\n1,Heat\n1,\n", GOOD_EVENTS)
    # line 3 has both a duplicate id and an empty title: both are reported
    assert [(p.file, p.line, p.column) for p in failure.problems] == [
        (ITEMS_NAME, 3, "item_id"), (ITEMS_NAME, 3, "title")]


def test_many_errors_are_reported_together(base: dict):
    events = (b"user_id,item_id,timestamp,rating\n"
              b"u1,1,1577923200,4\n"
              b"u1,1,not-a-date,4\n"
              b"u1,1,1577923200,4\n"
              b"u1,77,1577923200,4\n"
              b"u2,2,1577923200,-3\n")
    failure = expect_failure("shop", ITEMS, events, "Import failed with 3 problem(s)")
    assert [(p.line, p.column) for p in failure.problems] == [(3, "timestamp"), (5, "item_id"), (6, "rating")]


def test_problem_list_is_capped_but_the_total_is_counted(base: dict):
    lines = "".join(f"u{n},1,never\n" for n in range(MAX_PROBLEMS + 10))
    events = f"user_id,item_id,timestamp\n{lines}".encode()
    failure = expect_failure("shop", ITEMS, events, f"Import failed with {MAX_PROBLEMS + 10} problem(s)",
                             "... and 10 more problems")
    assert len(failure.problems) == MAX_PROBLEMS
    assert failure.problems[-1].line == MAX_PROBLEMS + 1


def test_invalid_interactions_leave_the_valid_items_unwritten(base: dict):
    events = b"user_id,item_id,timestamp\nu1,1,1577923200\nu1,1,bad\n"
    expect_failure("shop", ITEMS, events, f"{EVENTS_NAME}, line 3, column 'timestamp'")
    assert "shop" not in repository.dataset_names()
    with pytest.raises(repository.UnknownDataset):
        repository.items("shop")


def test_existing_name_needs_replace(base: dict):
    # same name as the loaded dataset: refused, nothing changes
    expect_failure("base", ITEMS, EVENTS, "dataset name: Dataset 'base' already exists")
    import_csv("shop", ITEMS, EVENTS)
    # the cached derived rows of the old version must go with it on replace
    repository.save_profile("shop", "u1", "model", "hash", {"interests": []})
    repository.save_embeddings("shop", "model", [("1", "hash", np.ones(4, dtype=np.float32))])
    assert repository.table_counts()["profiles"] == 1

    items = b"item_id,title,category\nA,Alien (1979),Horror|Sci-Fi\nB,Aliens (1986),Action|Sci-Fi\n"
    events = b"user_id,item_id,timestamp,rating\nu9,A,2021-05-01,5\nu9,B,2021-05-02,4\nu8,B,2021-05-03,2\n"
    expect_failure("shop", items, events, "Dataset 'shop' already exists")

    assert import_csv("shop", items, events, replace=True) == {"users": 2, "items": 2, "interactions": 3,
                                                               "redacted": 0, "neutralised": 0}
    summary = repository.dataset_summary().set_index("dataset")
    assert summary.loc["shop", ["users", "items", "interactions"]].tolist() == [2, 2, 3]
    assert summary.loc["base", ["users", "items", "interactions"]].tolist() == [2, 3, 4]  # untouched
    assert repository.table_counts() == base | {"datasets": 2, "users": 4, "items": 5, "interactions": 7}
    assert sorted(repository.items("shop")["item_id"]) == ["A", "B"]
    assert services.audience.history("shop", "u9")["title"].tolist() == ["Alien (1979)", "Aliens (1986)"]
    with pytest.raises(repository.UnknownUser):
        services.audience.history("shop", "u1")


def test_failure_in_the_middle_of_the_write_rolls_back(base: dict):
    """Frames written without validation: the foreign key fails after the dataset, users and items went in."""
    users, items, events = validate(ITEMS, EVENTS)
    orphan = pd.concat([events, pd.DataFrame([{"user_id": "ghost", "item_id": "1", "timestamp": 1, "rating": 1.0}])])
    with pytest.raises(IntegrityError):
        repository.write_dataset("partial", "test", users, items, orphan)
    assert repository.table_counts() == base
    assert "partial" not in repository.dataset_names()

    # the same failure while replacing an existing dataset keeps the old version whole
    with pytest.raises(IntegrityError):
        repository.write_dataset("base", "test", users, items.iloc[:1], events, replace=True)
    assert repository.table_counts() == base
    assert services.audience.history("base", "u1")["item_id"].tolist() == ["1", "2"]


def test_item_pictures_are_checked_on_import_and_stored_as_absolute_paths(empty_store: str, tmp_path: Path):
    """The optional `image` column: a path relative to the items file's folder (or absolute) to a PNG, JPEG or
    WebP that opens; anything else is reported on its line, and nothing is written."""
    from PIL import Image

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (120, 180), (200, 30, 30)).save(tmp_path / "pics" / "heat.png")
    Image.new("RGB", (120, 180), (30, 30, 200)).save(tmp_path / "babe.jpg", format="JPEG")
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    events = tmp_path / "events.csv"
    events.write_bytes(EVENTS)
    items = tmp_path / "items.csv"
    items.write_text(f"item_id,title,image\n1,Heat,pics/heat.png\n2,Toy Story,\n3,Babe,{tmp_path / 'babe.jpg'}\n")
    services.audience.import_csv_files("pictured", items, events)
    stored = repository.items("pictured").set_index("item_id")["image"]
    assert stored["1"] == str(tmp_path / "pics" / "heat.png") and stored["3"] == str(tmp_path / "babe.jpg")
    assert pictures.load(stored["1"]).size == (120, 180) and pictures.load(stored["2"]) is None

    items.write_text("item_id,title,image\n1,Heat,missing.png\n2,Toy Story,notes.png\n3,Babe,tiny.png\n"
                     "4,Fargo,events.csv\n")
    with pytest.raises(ImportFailed) as info:
        services.audience.import_csv_files("broken", items, events)
    message = str(info.value)
    for line, problem in ((2, "is not a file"), (3, "does not open as an image"), (4, "8x8 pixels"),
                          (5, "is not a .png, .jpg or .webp image")):
        assert f"items.csv, line {line}, column 'image': " in message and problem in message, message
    assert "broken" not in repository.dataset_names()
    expect_failure("uploaded", b"item_id,title,image\n1,Heat,pics/heat.png\n", GOOD_EVENTS,
                   "an uploaded file needs absolute image paths")
