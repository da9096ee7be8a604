"""logger=wandb: one offline W&B run per sweep point with config, curves, samples, metrics; the report as an
artifact; an unreachable server falls back to offline; logger=none imports no wandb and keeps curves locally.

    pytest tests/test_tracking.py

Offline runs are read back from what wandb writes under ``$WANDB_DIR/wandb/offline-run-*/``: the transaction
log ``run-<id>.wandb`` (LevelDB-log framed ``wandb.proto`` Records: run, history, summary, artifact, exit) and
``files/media/`` (tables and images).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose

from forgetting.errors import ConfigError

wandb = pytest.importorskip("wandb", reason="logger=wandb needs the wandb extra (in .[dev])")


# ---- reading an offline run --------------------------------------------------------------------------------
def _records(path: Path):
    """The protobuf Records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB log
    blocks of 32 KiB holding chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunks = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        chunks += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def _nested(items) -> dict:
    return {"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json) for i in items}


def _offline_run(run_dir: Path) -> dict:
    """What a run recorded: its run record, config, history rows, final summary, artifacts, exit code, files."""
    out = {"dir": run_dir, "history": [], "summary": {}, "artifacts": [], "exit": None}
    (log,) = run_dir.glob("run-*.wandb")
    for r in _records(log):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"] = {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "config":  # later config.update() calls (HF's WandbCallback adds TrainingArguments)
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            out["history"].append(_nested(r.history.item))
        elif kind == "summary":
            out["summary"].update(_nested(r.summary.update))
        elif kind == "artifact":
            out["artifacts"].append(r.artifact)
        elif kind == "exit":
            out["exit"] = r.exit.exit_code
    out["tables"] = {p.name.split("_")[0]: json.loads(p.read_text())
                     for p in sorted(run_dir.glob("files/media/table/*.table.json"))}
    return out


def _offline_runs(wandb_dir: Path) -> list[dict]:
    """In the order they started (directory names have a resolution of one second)."""
    wandb.teardown()  # wandb's service writes the run files: ending the session flushes them
    runs = [_offline_run(d) for d in (wandb_dir / "wandb").glob("offline-run-*")]
    return sorted(runs, key=lambda r: (r["run"].start_time.seconds, r["run"].start_time.nanos))


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch) -> Path:
    """Every directory wandb writes to, inside this test's tmp dir; offline unless a test says otherwise.
    wandb reads its environment once per session: ``wandb.teardown()`` ends the session on both sides."""
    root = tmp_path / "wandb-env"
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        (root / var.lower()).mkdir(parents=True)
        monkeypatch.setenv(var, str(root / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb.teardown()
    yield root / "wandb_dir"
    wandb.teardown()


# ---- config --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("logger.mode=sometimes", "logger.mode='sometimes' is invalid: expected 'online', 'offline' or 'disabled'"),
    ("logger.log_samples=-1", "logger.log_samples=-1 is invalid"),
    ("logger.name=mlflow", "logger.name='mlflow' is invalid: expected 'none' or 'wandb'"),
    ("logger.init_timeout=0", "logger.init_timeout=0.0 is invalid"),
    ("logger.project=", "logger.project='' is invalid"),
])
def test_bad_logger_values_fail_with_one_line(override, expected):
    with pytest.raises(ConfigError) as err:
        compose("logger=wandb", override)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_wandb_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose("logger=wandb").logger.mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert compose("logger=wandb").logger.mode == "online"
    assert compose().logger.name == "none"  # the default


# ---- logger=none ---------------------------------------------------------------------------------------------
def test_logger_none_imports_no_wandb_and_keeps_curves_in_the_run_dir(store_copy, tmp_path):
    run_dir, wandb_root = tmp_path / "run", tmp_path / "wandb"
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from pathlib import Path; "
            "from conftest import compose; from forgetting.pipeline import run; "
            f"run(compose('debug=micro', 'store_dir={store_copy}', 'method=ft'), Path({str(run_dir)!r})); "
            "assert 'wandb' not in sys.modules, 'wandb was imported'")
    env = {**os.environ, "WANDB_DIR": str(wandb_root)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not wandb_root.exists()
    curves = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in curves if "loss" in e] == [2, 4, 6]  # debug=micro: logging_steps=2, max_steps=6
    assert json.loads((run_dir / "results.json").read_text())["label"] == "FT"


# ---- logger=wandb, offline -----------------------------------------------------------------------------------
def test_one_offline_run_per_point_with_config_curves_samples_and_metrics(store_copy, tmp_path, wandb_dir):
    from forgetting.models import load_tokenizer
    from forgetting.pipeline import run
    from forgetting.store import Store

    def point(*overrides):
        c = compose("debug=micro", f"store_dir={store_copy}", "logger=wandb", "logger.group=sweep-a",
                    "logger.log_samples=5", "logger.tags=[toy,test]", *overrides)
        return run(c, tmp_path / "runs" / "-".join(overrides), overrides=list(overrides))

    cfs, ft = point("method=cfs"), point("method=ft")
    runs = {r["run"].display_name: r for r in _offline_runs(wandb_dir)}
    assert set(runs) == {"CFS seed=0", "FT seed=0"}
    assert runs["CFS seed=0"]["run"].run_id != runs["FT seed=0"]["run"].run_id
    for name, result in (("CFS seed=0", cfs), ("FT seed=0", ft)):
        r = runs[name]
        assert r["run"].run_group == "sweep-a" and list(r["run"].tags) == ["toy", "test"]
        assert r["config"]["method"]["name"] == result["method"] and r["config"]["trainer"]["max_steps"] == 6
        assert r["config"]["run"] == {"label": result["label"], "overrides": result["overrides"]}
        # live curves from HF's WandbCallback (which also adds the TrainingArguments to the config)
        assert r["config"]["per_device_train_batch_size"] == 8 and r["config"]["max_steps"] == 6
        assert [h["train/global_step"] for h in r["history"] if "train/loss" in h] == [2, 4, 6]  # logging_steps=2
        assert {k: r["summary"][k] for k in result["metrics"]} == pytest.approx(result["metrics"])
        assert r["exit"] == 0

    # CFS's table holds its first 5 generated rows, decoded; FT generated nothing
    assert "samples" not in runs["FT seed=0"]["tables"]
    table = runs["CFS seed=0"]["tables"]["samples"]
    assert table["columns"] == ["index", "source", "prompt", "text", "tokens"]
    first_chunk = next(e for e in Store(store_copy).log() if e["stage"] == "generate")
    rows = [json.loads(x) for x in (store_copy / "generate" / first_chunk["key"] / "samples.jsonl").open()][:5]
    tok = load_tokenizer(next((store_copy / "pretrain").glob("[!.]*")))
    assert [row[1:] for row in table["data"]] == [
        ["context_free", "", tok.decode(r["ids"], skip_special_tokens=True), len(r["ids"])] for r in rows]
    assert all(row[3] for row in table["data"])

    # the same point again: every stage is a cache hit, the run id is the same (resumed, not a new run), and
    # the curves come from the stored train_log.jsonl
    again = point("method=cfs")
    (third,) = [r for r in _offline_runs(wandb_dir) if r["dir"].name not in {x["dir"].name for x in runs.values()}]
    assert third["run"].run_id == runs["CFS seed=0"]["run"].run_id
    assert "per_device_train_batch_size" not in third["config"]  # no training ran
    assert [h["train/global_step"] for h in third["history"] if "train/loss" in h] == [2, 4, 6]
    assert {k: third["summary"][k] for k in again["metrics"]} == pytest.approx(cfs["metrics"])


def test_multirun_report_is_logged_as_an_artifact_of_a_report_run(tmp_path, wandb_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from forgetting.callbacks import Report
    from forgetting.compose import register

    sweep = tmp_path / "multirun" / "2026-11-23" / "12-00-00"
    for i, (label, pre, down) in enumerate([("Base", 0.6, 0.0), ("CFS", 0.55, 0.4)]):
        (sweep / str(i)).mkdir(parents=True)
        (sweep / str(i) / "results.json").write_text(json.dumps(
            {"label": label, "method": label.lower(), "seed": 0, "overrides": [],
             "metrics": {"pre/avg": pre, "down/arith/exact_match": down}}))
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = hydra_compose(config_name="config", return_hydra_config=True,
                               overrides=["logger=wandb", f"hydra.sweep.dir={sweep}", "hydra.mode=MULTIRUN"])
    Report().on_multirun_end(config)

    assert {"report.md", "report.csv", "frontier.png"} <= {p.name for p in sweep.iterdir()}
    (r,) = _offline_runs(wandb_dir)
    assert r["run"].display_name == "report" and r["run"].job_type == "report"
    assert r["run"].run_group == "2026-11-23_12-00-00"  # the default group: the sweep dir, as for its jobs
    (artifact,) = [a for a in r["artifacts"] if a.type == "report"]
    assert {c.path for c in artifact.manifest.contents} == {"report.md", "report.csv", "frontier.png"}
    assert [row[0] for row in r["tables"]["report"]["data"]] == ["Base", "CFS"]
    assert list(r["dir"].glob("files/media/images/frontier_*.png"))
    assert r["exit"] == 0


# ---- no network ----------------------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("api_key", ["x" * 40, None], ids=["unreachable-server", "no-api-key"])
def test_online_without_network_falls_back_to_offline_and_warns_once(api_key, wandb_dir, monkeypatch, caplog):
    from forgetting import tracking

    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")  # nothing listens there
    if api_key:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(tracking, "_online_failed", False)
    c = compose("logger=wandb", "logger.mode=online", "logger.init_timeout=2", "logger.group=no-network")
    with caplog.at_level(logging.WARNING, logger="forgetting"):
        for point in ("method=ft", "method=cfs"):
            tracker = tracking.start(c, point, [point])
            assert tracker.report_to == "wandb"  # still tracked: offline
            tracker.finish({"pre/avg": 0.5})
    warned = [r.getMessage() for r in caplog.records if "W&B could not start online" in r.getMessage()]
    assert len(warned) == 1 and "wandb sync" in warned[0] and "\n" not in warned[0]
    runs = _offline_runs(wandb_dir)
    assert [r["run"].display_name for r in runs] == ["method=ft seed=0", "method=cfs seed=0"]
    assert all(r["summary"]["pre/avg"] == 0.5 and r["exit"] == 0 for r in runs)
