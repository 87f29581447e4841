import sqlite3

import pytest

from backdoorlab import __version__
from backdoorlab.experiments import fingerprint
from backdoorlab.experiments.cache import ModelCache, cache_key
from backdoorlab.experiments.store import ResultRow, ResultsStore
from backdoorlab.models import build_model


def test_rows_round_trip_and_replace(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        store.start_run("r1", {"a": 1})
        row = ResultRow("r1", "digits", "badnet_cnn", "badnets", "none", 0, "asr", 0.5)
        store.add([row, ResultRow("r1", "digits", "badnet_cnn", "none", "none", 0, "clean_accuracy", 0.9)])
        store.add([ResultRow("r1", "digits", "badnet_cnn", "badnets", "none", 0, "asr", 0.75)])
        store.finish_run("r1")
        rows = store.rows("r1")
        assert len(rows) == 2 and {r.value for r in rows} == {0.75, 0.9}
        assert store.run_config("r1") == {"a": 1} and store.runs()[0][2] == "finished"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_cache_key_changes_with_any_part():
    base = cache_key(model="m", seed=0, params={"a": 1})
    assert base == cache_key(seed=0, params={"a": 1}, model="m")
    assert base != cache_key(model="m", seed=1, params={"a": 1})
    assert base != cache_key(model="m", seed=0, params={"a": 2})


def test_cache_treats_corrupt_entries_as_missing(tmp_path):
    cache = ModelCache(tmp_path)
    model = build_model("badnet_cnn", (1, 8, 8), 10, seed=0)
    cache.save_model("k", model, "badnet_cnn", (1, 8, 8), 10)
    assert cache.load_model("k") is not None
    cache.path("k").write_bytes(b"broken")
    assert cache.load_model("k") is None and cache.load_model("absent") is None


def test_settings_and_code_are_stored_with_the_run(tmp_path):
    from backdoorlab.experiments.store import RunCode, SettingInfo

    info = SettingInfo(0, "digits", "badnet_cnn", "digits: 10 classes, 1x8x8, ...", ("0", "1"), (1, 8, 8))
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store.run_code("r") is None and store.run_times("r") == (None, {})
        store.start_or_resume("r", {"a": 1}, RunCode("0.1.0", "ab" * 32, "c" * 40), [info])
        store.finish_run("r", seconds=12.5, stage_seconds={"clean": 10.0})
        store.finish_run("r")  # a resumed run that computed nothing keeps the recorded times
    with ResultsStore(tmp_path / "r.sqlite") as store:
        assert store.settings("r") == [info]
        assert store.run_code("r") == RunCode("0.1.0", "ab" * 32, "c" * 40)
        assert store.run_times("r") == (12.5, {"clean": 10.0})


def test_a_database_from_before_settings_and_code_opens_and_gains_them(tmp_path):
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE results (run TEXT NOT NULL, dataset TEXT NOT NULL, model TEXT NOT NULL, attack TEXT NOT NULL,
            defense TEXT NOT NULL, seed INTEGER NOT NULL, metric TEXT NOT NULL, value REAL, created TEXT NOT NULL,
            PRIMARY KEY (run, dataset, model, attack, defense, seed, metric));
        CREATE TABLE cells (run TEXT NOT NULL, cell TEXT NOT NULL, seconds REAL, finished TEXT NOT NULL,
            PRIMARY KEY (run, cell));
        CREATE TABLE runs (run TEXT PRIMARY KEY, config TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
            status TEXT NOT NULL);
        INSERT INTO runs VALUES ('old', '{"name": "x"}', '2024-01-01', NULL, 'finished');
        INSERT INTO results VALUES ('old', 'digits', 'm', 'none', 'none', 0, 'clean_accuracy', 0.9, '2024-01-01');
        """
    )
    old.commit()
    old.close()
    with ResultsStore(path) as store:
        assert store.run_config("old") == {"name": "x"} and len(store.rows("old")) == 1
        assert store.settings("old") == [] and store.run_code("old").source_hash is None
        store.start_or_resume("new", {"name": "y"})
        assert store.run_code("new").version is None


@pytest.fixture()
def fresh_fingerprint():
    fingerprint.code_fingerprint.cache_clear()
    yield
    fingerprint.code_fingerprint.cache_clear()


def test_a_changed_model_source_changes_the_cache_key(tmp_path, monkeypatch, fresh_fingerprint):
    sources = [tmp_path / "a.py", tmp_path / "b.py"]
    for p in sources:
        p.write_text("x = 1\n")
    monkeypatch.setattr(fingerprint, "model_source_files", lambda: sources)
    key = cache_key(model="m", seed=0)
    fingerprint.code_fingerprint.cache_clear()
    assert cache_key(model="m", seed=0) == key  # same sources, same key
    sources[1].write_text("x = 2\n")
    assert cache_key(model="m", seed=0) == key  # read once per process
    fingerprint.code_fingerprint.cache_clear()
    assert cache_key(model="m", seed=0) != key


def test_the_fingerprint_covers_the_model_packages_and_not_the_rest():
    files = fingerprint.model_source_files()
    packages = {p.relative_to(fingerprint.PACKAGE).parts[0] for p in files}
    assert packages == {"data", "models", "triggers", "attacks"}
    assert files == sorted(files) and all(p.suffix == ".py" for p in files)
    assert fingerprint.PACKAGE / "attacks" / "badnets.py" in files
    fp = fingerprint.code_fingerprint()
    assert len(fp.source) == 64 and fp.version == __version__
    # from this repository's checkout, the commit is recorded (and is not part of the key)
    assert fp.commit is None or len(fp.commit) == 40
