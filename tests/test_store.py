import sqlite3

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
