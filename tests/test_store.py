"""The artifact store: atomic builds, manifests, cache hits, and keys that follow the config slice."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from forgetting.store import Store, StoreError, key_of, main


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


# ---- verification ----------------------------------------------------------------------------------------------
def _counting(calls: list, text: str = "hello"):
    def make(out):
        calls.append(1)
        (out / "x.txt").write_text(text)
    return make


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_damaged_artifact_is_rebuilt_on_the_next_hit(tmp_path, damage, caplog):
    store, calls = Store(tmp_path), []
    art = store.build("stage", {"k": 1}, _counting(calls))
    if damage == "truncate":  # a half-copied store
        (art.path / "x.txt").write_text("he")
    elif damage == "delete":
        (art.path / "x.txt").unlink()
    else:
        (art.path / "manifest.json").write_text('{"stage": "st')
    again = store.build("stage", {"k": 1}, _counting(calls))
    assert calls == [1, 1]  # rebuilt, not reused
    assert (again.path / "x.txt").read_text() == "hello" and again.manifest["files"]["x.txt"]["bytes"] == 5
    last = store.log()[-1]
    assert last["hit"] is False and last["corrupt"]
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert [p.name for p in (tmp_path / "stage").iterdir()] == [art.key]  # no leftovers
    assert store.build("stage", {"k": 1}, _counting(calls)) == again and calls == [1, 1]  # and sound again


def test_flipped_byte_is_named_by_verify_and_rebuilt_under_full_verification(tmp_path, capsys, monkeypatch):
    store, calls = Store(tmp_path), []
    art = store.build("stage", {"k": 1}, _counting(calls))
    store.build("other", {"k": 1}, _counting([]))
    assert main(["--root", str(tmp_path), "verify"]) == 0
    (art.path / "x.txt").write_text("hellO")  # same size: only a checksum sees it
    assert Store(tmp_path).build("stage", {"k": 1}, _counting(calls)) == art and calls == [1]  # size check passes
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "verify"]) == 1
    out = capsys.readouterr().out
    assert f"corrupt: stage/{art.key}: x.txt does not match its sha256" in out and "other/" not in out
    monkeypatch.setenv("FORGETTING_STORE_VERIFY", "full")
    Store(tmp_path).build("stage", {"k": 1}, _counting(calls))
    assert calls == [1, 1] and (art.path / "x.txt").read_text() == "hello"
    assert main(["--root", str(tmp_path), "verify"]) == 0


def test_verify_remove_deletes_the_corrupt_artifact_only(tmp_path, capsys):
    store = Store(tmp_path)
    bad = store.build("stage", {"k": 1}, _counting([]))
    good = store.build("stage", {"k": 2}, _counting([]))
    (bad.path / "x.txt").write_text("jello")
    assert main(["--root", str(tmp_path), "verify", "--remove"]) == 1
    assert not bad.path.exists() and good.path.exists()
    assert store.get("stage", {"k": 1}) is None and main(["--root", str(tmp_path), "verify"]) == 0


# ---- locking -----------------------------------------------------------------------------------------------------
def _build_slowly(root: str, arrived, n: int) -> None:
    """A process of a sweep that needs artifact {"k": 1}; its make takes a while and writes who made it."""
    def make(out):
        while arrived.value < n:  # every process has reached build(): the others must now wait on the lock
            time.sleep(0.05)
        time.sleep(0.5)
        (out / "maker.txt").write_text(str(os.getpid()))
        with open(Path(root) / "makes.txt", "a") as f:
            f.write(f"{os.getpid()}\n")

    with arrived.get_lock():
        arrived.value += 1
    Store(root).build("stage", {"k": 1}, make)


def test_concurrent_processes_build_an_artifact_once_while_the_others_wait(tmp_path):
    n = 3
    ctx = multiprocessing.get_context("spawn")
    arrived = ctx.Value("i", 0)
    procs = [ctx.Process(target=_build_slowly, args=(str(tmp_path), arrived, n)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n
    assert len((tmp_path / "makes.txt").read_text().split()) == 1  # one make, in one process
    log = Store(tmp_path).log()
    assert [e["hit"] for e in log].count(False) == 1 and len(log) == n
    assert all(e["waited"] > 0 for e in log if e["hit"])  # the others waited, then hit
    key = key_of("stage", {"k": 1})
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [key]  # the lock file is gone too


def _build_and_hang(root: str, ready) -> None:
    store = Store(root)

    def make(out):
        (store.work_dir("stage", {"k": 1}) / "checkpoint-1").write_text("step 1")
        (out / "half.txt").write_text("half")
        ready.set()
        time.sleep(600)

    store.build("stage", {"k": 1}, make)


def test_lock_of_a_killed_builder_is_recovered_and_its_leftovers_cleaned(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    builder = ctx.Process(target=_build_and_hang, args=(str(tmp_path), ready))
    builder.start()
    try:
        assert ready.wait(120), "the builder never reached its make()"
        store = Store(tmp_path)
        assert not store.lock("stage", key_of("stage", {"k": 1})).acquire(blocking=False)  # held while it lives
    finally:
        os.kill(builder.pid, signal.SIGKILL)
        builder.join()
    key = key_of("stage", {"k": 1})
    left = sorted(p.name for p in (tmp_path / "stage").iterdir())
    assert left == [f".lock-{key}", f".tmp-{key}-{builder.pid}", f".work-{key}"]

    seen = []

    def make(out):
        seen.append(sorted(p.name for p in store.work_dir("stage", {"k": 1}).iterdir()))
        (out / "whole.txt").write_text("whole")

    art = store.build("stage", {"k": 1}, make)  # does not wait for the dead builder
    assert seen == [["checkpoint-1"]]  # its checkpoint was there to resume from
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [key]  # tmp, work and lock cleaned
    assert sorted(p.name for p in art.path.iterdir()) == ["manifest.json", "whole.txt"]


def test_work_dir_is_only_handed_out_under_the_build_lock(tmp_path):
    with pytest.raises(StoreError, match="outside build"):
        Store(tmp_path).work_dir("train", {"k": 1})


# ---- the command line ------------------------------------------------------------------------------------------
def _chain(store: Store):
    """world <- model <- evaluation, and an unrelated model: the references a run's artifacts carry."""
    world = store.build("world", {"w": 1}, _counting([], "w"))
    model = store.build("train", {"base": world, "lr": 1}, _counting([], "m"))
    evaluation = store.build("evaluate", {"model": model}, _counting([], "e"))
    other = store.build("train", {"base": world, "lr": 2}, _counting([], "o"))
    return world, model, evaluation, other


def test_list_shows_every_artifact_with_its_size_and_users(tmp_path, capsys):
    world, model, evaluation, other = _chain(Store(tmp_path))
    assert main(["--root", str(tmp_path), "list"]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert set(lines) == {world.key, model.key, evaluation.key, other.key}
    assert f"train/{model.key}" in lines[world.key] and f"train/{other.key}" in lines[world.key]
    assert f"evaluate/{evaluation.key}" in lines[model.key]
    assert lines[evaluation.key].split()[0] == "evaluate" and lines[evaluation.key].rstrip().endswith("-")
    assert "ok" in lines[model.key].split()


def test_gc_is_a_dry_run_by_default_and_leaves_live_builds_alone(tmp_path, capsys):
    store = Store(tmp_path)
    world, model, evaluation, other = _chain(store)
    runs = tmp_path / "runs"
    (runs / "0").mkdir(parents=True)
    (runs / "0" / "results.json").write_text(json.dumps(  # what pipeline.run writes
        {"artifacts": {"base": world.key, "model": model.key,
                       "used": [{"stage": "world", "key": world.key}, {"stage": "evaluate", "key": evaluation.key}]}}))
    dead = tmp_path / "train" / ".tmp-deadbeef00000000-4242"  # a killed build
    dead.mkdir()
    resumable = tmp_path / "train" / ".work-cafe000000000000"  # checkpoints of a killed training
    resumable.mkdir()
    finished = tmp_path / "world" / f".work-{world.key}"  # scratch a build did not get to remove
    finished.mkdir()
    live = store.lock("train", "feed000000000000")  # a build running now (another open file: flock excludes it)
    assert live.acquire(blocking=False)
    running = tmp_path / "train" / ".tmp-feed000000000000-99"
    running.mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    assert main(["--root", str(tmp_path), "gc", "--unused-by", str(runs)]) == 0
    out = capsys.readouterr().out
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # a dry run touches nothing
    assert "would remove" in out and "--delete" in out

    assert main(["--root", str(tmp_path), "gc", "--delete"]) == 0
    assert not dead.exists() and not finished.exists()
    assert running.exists() and resumable.exists()  # a live build; a rerun's resume point
    assert all(a.path.exists() for a in (world, model, evaluation, other))  # no --unused-by: no artifact goes

    assert main(["--root", str(tmp_path), "gc", "--unused-by", str(runs), "--delete"]) == 0
    assert world.path.exists() and model.path.exists() and evaluation.path.exists()  # used, or built from
    assert not other.path.exists()
    assert running.exists() and resumable.exists()
    main(["--root", str(tmp_path), "gc", "--work", "--delete"])
    assert not resumable.exists() and running.exists()
    live.release()


def test_cli_rejects_a_missing_root_in_one_line(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "nope"), "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--root=" in err and not (tmp_path / "nope").exists()
