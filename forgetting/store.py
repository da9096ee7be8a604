"""Content-addressed artifact store: a stage's output lives under a key hashed from what it depends on.

    pytest tests/test_store.py

An artifact is a directory ``<root>/<stage>/<key>/`` holding the stage's files and a ``manifest.json``
(config slice, versions, file sizes and checksums). It is built in a temp directory and renamed into place,
so a crash never leaves a half-written artifact; a directory with a manifest is complete and is reused.
Every lookup is appended to ``<root>/log.jsonl`` ({stage, key, hit}) so tests and users can see what ran.
Stages that need scratch space that survives a crash (training checkpoints) get ``work_dir(stage, key)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Artifact):
        return {"stage": obj.stage, "key": obj.key}
    return obj


def key_of(stage: str, spec: dict) -> str:
    blob = json.dumps({"stage": stage, **_jsonable(spec)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, spec: dict) -> Artifact | None:
        key = key_of(stage, spec)
        path = self.path(stage, key)
        return Artifact(stage, key, path) if (path / "manifest.json").exists() else None

    def work_dir(self, stage: str, spec: dict) -> Path:
        """Scratch space that survives a crash (e.g. checkpoints); removed when the artifact lands."""
        path = self.root / stage / f".work-{key_of(stage, spec)}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def build(self, stage: str, spec: dict, make: Callable[[Path], Any]) -> Artifact:
        """Return the artifact for ``spec``, running ``make(tmp_dir)`` only when it is not stored yet."""
        key = key_of(stage, spec)
        final = self.path(stage, key)
        if (final / "manifest.json").exists():
            self._log(stage, key, hit=True)
            return Artifact(stage, key, final)
        self._log(stage, key, hit=False)
        tmp = self.root / stage / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            make(tmp)
            self._write_manifest(tmp, stage, key, spec, time.time() - started)
            if final.exists():  # another process finished the same artifact first: keep theirs
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.root / stage / f".work-{key}", ignore_errors=True)
        return Artifact(stage, key, final)

    def log(self) -> list[dict]:
        path = self.root / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _log(self, stage: str, key: str, hit: bool) -> None:
        with open(self.root / "log.jsonl", "a") as f:
            f.write(json.dumps({"stage": stage, "key": key, "hit": hit, "time": time.time()}) + "\n")

    @staticmethod
    def _write_manifest(tmp: Path, stage: str, key: str, spec: dict, seconds: float) -> None:
        import torch
        import transformers

        files = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                files[str(p.relative_to(tmp))] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        manifest = {
            "stage": stage,
            "key": key,
            "spec": _jsonable(spec),
            "seconds": round(seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "files": files,
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
