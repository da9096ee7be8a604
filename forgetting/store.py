"""Content-addressed artifact store: a stage's output lives under a key hashed from what it depends on.

    python -m forgetting.store --root .store list      # artifacts, sizes, what uses them
    python -m forgetting.store --root .store verify    # full checksums; exit 1 naming every corrupt artifact
    python -m forgetting.store --root .store gc        # what a clean-up would remove (dry run; --delete does it)
    pytest tests/test_store.py tests/test_kill.py

An artifact is a directory ``<root>/<stage>/<key>/`` holding the stage's files and a ``manifest.json``
(config slice, versions, file sizes and checksums). It is built in ``<stage>/.tmp-<key>-<pid>/`` and renamed
into place. Every hit compares the files' sizes with the manifest (``FORGETTING_STORE_VERIFY=full``: their
sha256 too); an artifact that does not match is logged as corrupt and rebuilt, never used.

A build holds the key's lock (``<stage>/.lock-<key>``, ``flock``): concurrent processes that need the same
artifact build it once while the others wait and then hit. The kernel (or the NFS server) drops the lock when
its holder dies, so a killed builder never blocks the key; the next builder removes what it left
(``.tmp-<key>-*``). ``work_dir(stage, spec)`` is scratch space that survives a crash (training checkpoints),
used under the same lock, so two trainings of one key never share a checkpoint directory.
Every lookup is appended to ``<root>/log.jsonl`` ({stage, key, hit}, plus ``waited`` seconds when the key was
locked by another build and ``corrupt`` when a stored copy was rejected) so tests and users can see what ran.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

log = logging.getLogger("forgetting")

VERIFY_ENV = "FORGETTING_STORE_VERIFY"  # "size" (default: every hit) or "full" (sha256 of every file on every hit)


class StoreError(RuntimeError):
    pass


def verify_mode(verify: Optional[str] = None) -> str:
    """How hits are checked: ``verify``, else $FORGETTING_STORE_VERIFY, else "size"."""
    verify = verify or os.environ.get(VERIFY_ENV) or "size"
    if verify not in ("size", "full"):
        raise StoreError(f"{VERIFY_ENV}={verify!r} is invalid: expected 'size' or 'full'")
    return verify


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


def input_sha256(path: str | Path) -> str:
    """The sha256 of an input file that goes into a key (a data file, a GGUF, a corpus), computed once per process
    for a given (path, size, mtime): keys are derived many times per run (plan, stages, recycling sources)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _input_sha256(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _input_sha256(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def damage(path: Path, full: bool = False) -> Optional[str]:
    """Why the artifact directory ``path`` cannot be trusted, or None when its files match its manifest: sizes
    always (a stat per file), sha256 too when ``full`` (≈0.5 GB/s per core here)."""
    try:
        files = json.loads((path / "manifest.json").read_text())["files"]
        for name, meta in files.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != meta["bytes"]:
                return f"{name} has {file.stat().st_size} bytes, its manifest says {meta['bytes']}"
            if full and file_sha256(file) != meta["sha256"]:
                return f"{name} does not match its sha256"
    except FileNotFoundError:
        return "manifest.json is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"manifest.json is unreadable ({type(err).__name__}: {err})"
    return None


def references(spec: Any) -> Iterator[tuple[str, str]]:
    """The artifacts a manifest's spec names: every ``{"stage": ..., "key": ...}`` inside it."""
    if isinstance(spec, dict):
        if set(spec) == {"stage", "key"}:
            yield spec["stage"], spec["key"]
        else:
            for v in spec.values():
                yield from references(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from references(v)


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())


class KeyLock:
    """An exclusive lock on one key: ``flock`` on ``<stage>/.lock-<key>``. The lock belongs to the open file, so
    it goes away with its holder, however that dies (SIGKILL included); on NFS the client emulates it with a
    POSIX lock that the server holds (docs/store.md)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def acquire(self, blocking: bool = True) -> bool:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as err:
                os.close(fd)
                raise StoreError(f"store_dir={self.path.parent.parent}: cannot lock {self.path.name} "
                                 f"({err.strerror}): expected a filesystem with file locks (local disk, NFS "
                                 f"with locking, Lustre mounted -o flock)") from None
            # the holder we waited for may have removed the file: a lock on a removed file excludes nobody
            try:
                here, there = os.fstat(fd), os.stat(self.path)
                if (here.st_ino, here.st_dev) == (there.st_ino, there.st_dev):
                    self.fd = fd
                    os.ftruncate(fd, 0)
                    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.time():.0f}\n".encode())
                    return True
            except FileNotFoundError:
                pass
            os.close(fd)

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self, remove: bool = True) -> None:
        if remove:  # while held: whoever waits on this file sees it gone and locks the next one
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


class Store:
    def __init__(self, root: str | os.PathLike, verify: Optional[str] = None, create: bool = True):
        """``create=False``: only look (``--plan`` writes nothing, not even the store's directory)."""
        self.root = Path(root).resolve()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.full = verify_mode(verify) == "full"
        self.used: list[dict] = []  # every artifact this process got from build(), in order: results.json keeps it
        self._held: set[tuple[str, str]] = set()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lock(self, stage: str, key: str) -> KeyLock:
        return KeyLock(self.root / stage / f".lock-{key}")

    def get(self, stage: str, spec: dict) -> Artifact | None:
        key = key_of(stage, spec)
        path = self.path(stage, key)
        return Artifact(stage, key, path) if path.exists() and damage(path, self.full) is None else None

    def work_dir(self, stage: str, spec: dict) -> Path:
        """Scratch space that survives a crash (e.g. checkpoints); removed when the artifact lands. Only inside
        ``build(stage, spec, make)``'s ``make``: the key's lock keeps other processes out of it."""
        key = key_of(stage, spec)
        if (stage, key) not in self._held:
            raise StoreError(f"work_dir({stage!r}, ...) outside build({stage!r}, ...) of the same spec: "
                             "expected to be called from that build's make()")
        path = self.root / stage / f".work-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def planned(self, stage: str, spec: dict) -> Artifact:
        """The artifact ``spec`` names, whether or not it is stored (nothing is built or read)."""
        key = key_of(stage, spec)
        return Artifact(stage, key, self.path(stage, key))

    def build(self, stage: str, spec: dict, make: Callable[[Path], Any]) -> Artifact:
        """Return the artifact for ``spec``, running ``make(tmp_dir)`` only when no sound copy is stored."""
        key = key_of(stage, spec)
        final = self.path(stage, key)
        art = Artifact(stage, key, final)
        if final.exists() and damage(final, self.full) is None:
            return self._hit(art)
        if (stage, key) in self._held:
            raise StoreError(f"build({stage!r}, ...) of key {key} inside its own make()")
        lock, waited = self.lock(stage, key), None
        try:
            (self.root / stage).mkdir(parents=True, exist_ok=True)
            if not lock.acquire(blocking=False):
                log.info("store: waiting for %s/%s, being built by %s", stage, key, lock.holder())
                started = time.time()
                lock.acquire()
                waited = round(time.time() - started, 3)
        except OSError:  # e.g. a full or read-only disk: still a lookup that found nothing
            self._log(stage, key, hit=False)
            raise
        self._held.add((stage, key))
        try:
            reason = damage(final, self.full) if final.exists() else None
            if final.exists() and reason is None:  # built by the process we waited for
                return self._hit(art, waited)
            if reason is not None:
                log.warning("store: %s/%s is corrupt (%s): rebuilding it", stage, key, reason)
                _remove(final, self.root / stage / f".trash-{key}-{os.getpid()}")
            self._clear_leftovers(stage, key)
            self._log(stage, key, hit=False, waited=waited, corrupt=reason)
            tmp = self.root / stage / f".tmp-{key}-{os.getpid()}"
            tmp.mkdir()
            started = time.time()
            try:
                make(tmp)
                self._write_manifest(tmp, stage, key, spec, time.time() - started)
                if final.exists():  # landed meanwhile by a build the lock did not exclude (node-local NFS locks)
                    shutil.rmtree(tmp)
                else:
                    os.replace(tmp, final)
            except BaseException as err:
                written = _bytes(tmp) if tmp.exists() else 0
                full = out_of_space(err, self.root)
                shutil.rmtree(tmp, ignore_errors=True)
                if full:
                    raise StoreError(self._full(stage, key, written, err)) from None
                raise
            shutil.rmtree(self.root / stage / f".work-{key}", ignore_errors=True)
            self.used.append({"stage": stage, "key": key})
            return art
        finally:
            self._held.discard((stage, key))
            lock.release()

    def _full(self, stage: str, key: str, written: int, err: BaseException) -> str:
        """One line for a build the disk could not hold: the store, the stage, what it had written, what is free."""
        work = self.root / stage / f".work-{key}"
        kept = _bytes(work) if work.exists() else 0
        free = shutil.disk_usage(self.root).free
        where = f" (writing {err.filename})" if getattr(err, "filename", None) else ""
        return (f"store_dir={self.root}: no space left on the device while building {stage} {key}{where}: it had "
                f"written {_human(written)} of the artifact" + (f" and keeps {_human(kept)} of checkpoints to resume "
                                                                 "from" if kept else "") +
                f", {_human(free)} free now; expected room for the stage's artifact: free some space and rerun (stored "
                "stages are reused, training resumes from its last whole checkpoint)")

    def log(self) -> list[dict]:
        path = self.root / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def _hit(self, art: Artifact, waited: Optional[float] = None) -> Artifact:
        self._log(art.stage, art.key, hit=True, waited=waited)
        self.used.append({"stage": art.stage, "key": art.key})
        return art

    def _clear_leftovers(self, stage: str, key: str) -> None:
        """Remove what killed builds of this key left (only called under the key's lock: none of them is live)."""
        for pattern in (f".tmp-{key}-*", f".trash-{key}-*"):
            for p in (self.root / stage).glob(pattern):
                shutil.rmtree(p, ignore_errors=True)

    def _log(self, stage: str, key: str, hit: bool, waited: Optional[float] = None,
             corrupt: Optional[str] = None) -> None:
        entry = {"stage": stage, "key": key, "hit": hit, "time": time.time()}
        if waited is not None:  # the key was locked by another process's build
            entry["waited"] = waited
        if corrupt is not None:
            entry["corrupt"] = corrupt
        with open(self.root / "log.jsonl", "a") as f:  # one short write: appends of concurrent processes don't mix
            f.write(json.dumps(entry) + "\n")

    @staticmethod
    def _write_manifest(tmp: Path, stage: str, key: str, spec: dict, seconds: float) -> None:
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
            "versions": {name: _version(name) for name in ("torch", "transformers")},
            "files": files,
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))

    # ---- what the command line reads ---------------------------------------------------------------------------
    def artifacts(self) -> list[Artifact]:
        """Every ``<stage>/<key>`` directory (dot-names are builds, scratch and locks, not artifacts)."""
        return [Artifact(s.name, d.name, d) for s in sorted(self.root.iterdir()) if s.is_dir() and s.name[0] != "."
                for d in sorted(s.iterdir()) if d.is_dir() and d.name[0] != "."]

    def leftovers(self) -> dict[tuple[str, str], list[Path]]:
        """Per (stage, key): its ``.tmp-``, ``.trash-``, ``.work-`` directories and ``.lock-`` file."""
        found = defaultdict(list)
        for s in sorted(self.root.iterdir()):
            if s.is_dir() and s.name[0] != ".":
                for p in sorted(s.glob(".*-*")):
                    kind, _, rest = p.name[1:].partition("-")
                    if kind in ("tmp", "trash", "work", "lock"):
                        found[(s.name, rest.split("-")[0])].append(p)
        return found

    def remove(self, art: Artifact) -> bool:
        """Delete an artifact unless a build of its key is running; True when deleted."""
        lock = self.lock(art.stage, art.key)
        if not lock.acquire(blocking=False):
            return False
        try:
            _remove(art.path, art.path.parent / f".trash-{art.key}-{os.getpid()}")
        finally:
            lock.release()
        return True


# what the writers underneath say when the disk fills: OSError's errno; safetensors' Rust error; torch.save's writer
_FULL_TEXT = ("No space left on device", "StorageFull", "Disk quota exceeded")


def out_of_space(err: BaseException, root: Path) -> bool:
    """Whether ``err`` (raised while a stage wrote under ``root``) is the disk filling up: an ENOSPC / EDQUOT OSError,
    the same failure as safetensors words it, or any error with (almost) no space left when it was raised — torch.save
    reports a full disk as a bare zip-writer position mismatch ("unexpected pos 5120 vs 5012")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not the disk
        return False
    if any(t in str(err) for t in _FULL_TEXT):
        return True
    try:
        return shutil.disk_usage(root).free < 4 << 20
    except OSError:
        return False


def _version(package: str) -> Optional[str]:
    # from the installed metadata, not by importing: a small stage (or a test) should not pay torch's import
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _remove(path: Path, trash: Path) -> None:
    """Rename first, then delete: a reader sees the artifact whole or not at all."""
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _manifest(art: Artifact) -> dict:
    try:
        return art.manifest
    except (OSError, ValueError):
        return {}


# ---- python -m forgetting.store ----------------------------------------------------------------------------------
def list_artifacts(store: Store) -> int:
    arts = store.artifacts()
    manifests = {(a.stage, a.key): _manifest(a) for a in arts}
    used_by = defaultdict(list)
    for (stage, key), m in manifests.items():
        for ref in set(references(m.get("spec"))):
            used_by[ref].append(f"{stage}/{key}")
    rows = [("stage", "key", "size", "created", "state", "used by")]
    total = 0
    for a in arts:
        m, size = manifests[(a.stage, a.key)], _bytes(a.path)
        total += size
        users = sorted(used_by[(a.stage, a.key)])
        shown = " ".join(users[:3]) + (f" +{len(users) - 3} more" if len(users) > 3 else "")
        rows.append((a.stage, a.key, _human(size), m.get("created", "?"),
                     "ok" if damage(a.path) is None else "CORRUPT", shown or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[5])
    print(f"{len(arts)} artifacts, {_human(total)} in {store.root}; leftovers of builds under "
          f"{len(store.leftovers())} keys (see gc)")
    return 0


def verify(store: Store, remove: bool) -> int:
    started, arts = time.time(), store.artifacts()
    total, bad = sum(_bytes(a.path) for a in arts), 0
    for a in arts:
        reason = damage(a.path, full=True)
        if reason is not None:
            bad += 1
            gone = " (removed: the next run rebuilds it)" if remove and store.remove(a) else ""
            print(f"corrupt: {a.stage}/{a.key}: {reason}{gone}")
    print(f"verified {len(arts)} artifacts, {_human(total)} in {time.time() - started:.1f} s: {bad} corrupt")
    return 1 if bad else 0


def _runs_keep(store: Store, run_dirs: Sequence[Path]) -> set[tuple[str, str]]:
    """The artifacts the runs under ``run_dirs`` used (``results.json``: ``artifacts.used``), and everything they
    were built from."""
    by_key = {a.key: a for a in store.artifacts()}
    keep: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = []
    for run_dir in run_dirs:
        for file in sorted(Path(run_dir).rglob("results.json")):
            recorded = json.loads(file.read_text()).get("artifacts", {})
            if "used" not in recorded:
                print(f"warning: {file} predates artifacts.used: only its base and model (and what they were built "
                      "from) are kept, not its samples and evaluations", file=sys.stderr)
            todo += [(u["stage"], u["key"]) for u in recorded.get("used", [])]
            todo += [(by_key[k].stage, k) for k in (recorded.get("base"), recorded.get("model")) if k in by_key]
    while todo:
        ref = todo.pop()
        if ref not in keep:
            keep.add(ref)
            art = by_key.get(ref[1])
            if art is not None and art.stage == ref[0]:
                todo += list(references(_manifest(art).get("spec")))
    return keep


def gc(store: Store, run_dirs: Optional[Sequence[Path]], work: bool, delete: bool) -> int:
    gone: list[tuple[Path, int, str]] = []  # removed (or, in a dry run, to be removed): path, bytes, why
    kept: list[tuple[Path, str]] = []
    for (stage, key), paths in store.leftovers().items():
        lock = store.lock(stage, key)
        paths = [p for p in paths if p != lock.path]
        stale_lock = lock.path.exists()
        if not lock.acquire(blocking=False):
            kept += [(p, "a build of this key is running") for p in paths]
            continue
        try:
            landed = store.path(stage, key).exists()
            for p in paths:
                kind = p.name[1:].split("-")[0]
                if kind == "work" and not (landed or work):
                    kept.append((p, "checkpoints of an unfinished build: its rerun resumes there (--work removes)"))
                    continue
                why = ("scratch of a finished build" if landed else "checkpoints of an unfinished build") \
                    if kind == "work" else "left by a killed build"
                gone.append((p, _bytes(p), why))
                if delete:
                    shutil.rmtree(p, ignore_errors=True)
        finally:
            lock.release(remove=delete or not stale_lock)  # a dry run leaves the store as it found it
    if run_dirs:
        keep = _runs_keep(store, run_dirs)
        for a in store.artifacts():
            if (a.stage, a.key) not in keep:
                size = _bytes(a.path)
                if delete and not store.remove(a):
                    kept.append((a.path, "a build of this key is running"))
                    continue
                gone.append((a.path, size, f"used by no results.json under {', '.join(map(str, run_dirs))}"))
    for p, size, why in gone:
        print(f"{'removed' if delete else 'would remove'}  {p.relative_to(store.root)}  {_human(size)}  {why}")
    for p, why in kept:
        print(f"kept  {p.relative_to(store.root)}  {why}")
    print(f"{len(gone)} entries, {_human(sum(size for _, size, _ in gone))}"
          + (" removed" if delete else " (dry run: pass --delete to remove them)"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forgetting.store", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".store", help="the store directory (the runs' store_dir; default .store)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="artifacts with stage, key, size, created, state and what uses them")
    check = commands.add_parser("verify", help="full sha256 of every file; exit 1 naming each corrupt artifact")
    check.add_argument("--remove", action="store_true", help="delete corrupt artifacts (the next run rebuilds them)")
    clean = commands.add_parser("gc", help="leftovers of killed builds, and (--unused-by) unused artifacts; "
                                           "a dry run unless --delete")
    clean.add_argument("--unused-by", nargs="+", type=Path, metavar="RUN_DIR",
                       help="also remove artifacts that no results.json under these directories used")
    clean.add_argument("--work", action="store_true", help="also remove checkpoints of unfinished builds")
    clean.add_argument("--delete", action="store_true", help="remove (default: only list what would go)")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: --root={args.root} is not a directory: expected a store (a run's store_dir)", file=sys.stderr)
        return 2
    for run_dir in getattr(args, "unused_by", None) or []:
        if not run_dir.is_dir():
            print(f"error: --unused-by {run_dir} is not a directory: expected run or sweep directories",
                  file=sys.stderr)
            return 2
    store = Store(args.root)
    if args.command == "list":
        return list_artifacts(store)
    if args.command == "verify":
        return verify(store, args.remove)
    return gc(store, args.unused_by, args.work, args.delete)


if __name__ == "__main__":
    sys.exit(main())
