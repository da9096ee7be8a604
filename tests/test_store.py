"""The artifact store: atomic builds, manifests, cache hits, and keys that follow the config slice."""
from __future__ import annotations

import json

import pytest

from forgetting.store import Store, key_of


def test_build_once_then_hit(tmp_path):
    store = Store(tmp_path)
    calls = []

    def make(out):
        calls.append(1)
        (out / "x.txt").write_text("hello")

    a = store.build("stage", {"k": 1}, make)
    b = store.build("stage", {"k": 1}, make)
    assert a == b and calls == [1]
    assert [e["hit"] for e in store.log()] == [False, True]
    manifest = json.loads((a.path / "manifest.json").read_text())
    assert manifest["spec"] == {"k": 1} and manifest["files"]["x.txt"]["bytes"] == 5


def test_failed_build_leaves_nothing_and_reruns(tmp_path):
    store = Store(tmp_path)

    def boom(out):
        (out / "half.txt").write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        store.build("stage", {"k": 2}, boom)
    assert list((tmp_path / "stage").iterdir()) == []
    assert store.get("stage", {"k": 2}) is None
    art = store.build("stage", {"k": 2}, lambda out: (out / "ok").write_text("1"))
    assert (art.path / "ok").exists()


def test_key_depends_on_every_value_but_not_on_key_order():
    assert key_of("s", {"a": 1, "b": 2}) == key_of("s", {"b": 2, "a": 1})
    assert key_of("s", {"a": 1}) != key_of("s", {"a": 2}) != key_of("t", {"a": 2})
