"""A real one-node SLURM cluster in a temp directory, for tests/test_relaunch.py: Debian's ``munge``,
``slurmctld``, ``slurmd`` and ``slurm-client`` (``make test`` installs them on Linux when it runs as root).

    with Cluster.start() as cluster:      # or: Cluster.start() ... cluster.stop()
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

Its own ``slurm.conf`` (this host as the only node, 2 CPUs, one partition), munge key and socket, state, spool and
log directories, and free TCP ports, so that it touches nothing of a SLURM or munge the machine may run already.
No accounting daemon (slurmdbd needs a database): ``sacct`` answers "accounting storage is disabled", which
submitit tolerates (it then learns a job is over from its result file). A requeued job is held ``cred_expire``
seconds (SLURM's default: 120; 10 here): it starts again about 30 s after its requeue here (measured).
:func:`unavailable` says why a cluster cannot start here (not Linux, not root, the packages missing), or None.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra.experimental.callback import Callback

PACKAGES = "slurmctld slurmd munge slurm-client"
PARTITION = "test"
CPUS = 2
DAEMONS = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
           "scontrol": "slurm-client", "squeue": "slurm-client", "scancel": "slurm-client"}
_SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SBIN)


def unavailable() -> str | None:
    """Why a cluster cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return f"a local SLURM cluster needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd starts jobs as their user; munged and slurmd run as root)"
    missing = sorted({pkg for exe, pkg in DAEMONS.items() if _which(exe) is None})
    if missing:
        return (f"SLURM is not installed (missing packages: {' '.join(missing)}); `make test` installs them with "
                f"apt-get when it runs as root, or: apt-get install -y {PACKAGES}")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    pass


class Cluster:
    """The running daemons (their ``Popen``s, stopped by process id in :meth:`stop`) and the environment that
    points SLURM's commands at them (``SLURM_CONF``)."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.logs = root / "log"
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment, with SLURM's commands pointed at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": _SBIN}

    @classmethod
    def start(cls, timeout: float = 60) -> Cluster:
        """Write the configuration, start munged, slurmctld and slurmd, wait until the node takes jobs."""
        # munged wants every directory above its socket searchable by all (pytest's temp dirs are 0700)
        root = Path(tempfile.mkdtemp(prefix="slurm-"))
        root.chmod(0o755)
        cluster = cls(root)
        try:
            cluster._configure()
            cluster._launch(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _configure(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge", "run"):
            (r / d).mkdir()
        (r / "munge").chmod(0o700)  # the key's directory: root's only
        (r / "run").chmod(0o755)  # the socket's: every job's user reaches it
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        mem_mb = 4096
        self.conf.write_text("\n".join([
            "ClusterName=forgetting-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # a requeued job waits cred_expire seconds before it may start again (SLURM's default: 120)
            f"AuthInfo=socket={r / 'run' / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "MailProg=/bin/true",
            "MpiDefault=none",
            # no cgroups (containers often have none to give): processes tracked by parent id, no task binding
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "SlurmdTimeout=30",
            "KillWait=5",
            "MinJobAge=600",  # finished jobs stay visible to scontrol for the test's assertions
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _spawn(self, name: str, *args: str) -> None:
        out = open(self.logs / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen([_which(name), *args], stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def _launch(self, timeout: float) -> None:
        r = self.root
        self._spawn("munged", "--foreground", f"--socket={r / 'run' / 'munge.socket'}",
                    f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'run' / 'munged.pid'}",
                    f"--seed-file={r / 'munge' / 'munged.seed'}", f"--log-file={self.logs / 'munged.log'}")
        self._wait("munged", lambda: (r / "run" / "munge.socket").exists(), timeout)
        self._spawn("slurmctld", "-D", "-i")  # -i: no state to recover, a new cluster
        self._wait("slurmctld", lambda: self._ok(["scontrol", "ping"], "UP"), timeout)
        self._spawn("slurmd", "-D", "-N", self.node)
        self._wait("slurmd", lambda: self._ok(["sinfo", "-h", "-N", "-o", "%T"], "idle"), timeout)

    def _ok(self, cmd: list[str], word: str) -> bool:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and word in out.stdout

    def _wait(self, name: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self.procs[name].returncode}" if self.procs[name].poll() is not None
                         else f"not ready after {timeout:.0f} s")
                raise ClusterError(f"{name} {state}; its log ({self.logs}):\n{self.log(name)[-2000:]}")
            time.sleep(0.3)

    def log(self, name: str) -> str:
        """A daemon's log file (``slurmctld``, ``slurmd``, ``munged``) and what it printed."""
        return "".join(p.read_text(errors="replace") for p in (self.logs / f"{name}.log", self.logs / f"{name}.out")
                       if p.exists())

    def run(self, *cmd: str) -> str:
        """A SLURM command against this cluster; its stdout."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def stop(self) -> None:
        """Cancel every job, stop the daemons this object started (by their process ids; slurmd first), remove the
        cluster's directory."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", f"--partition={self.partition}"], env=self.env, capture_output=True,
                           timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # slurmd kills the jobs' processes while it runs
                out = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True,
                                     timeout=30)
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class HoldAfterFirstCheckpoint(Callback):
    """A Hydra callback for a job's process (``+hydra.callbacks.hold._target_=slurm_cluster.HoldAfterFirstCheckpoint``;
    Hydra runs ``on_job_start`` in the SLURM task): training stops right after its first checkpoint and waits there
    for SLURM's time-limit signal, so that the limit strikes mid-training however fast the machine trains, and the
    requeued attempt must resume from that checkpoint. Once per sweep point: the hold leaves a marker
    (``<sweep dir>/.held-<job num>``), and later attempts train on."""

    def on_job_start(self, config, **kwargs) -> None:
        marker = Path(config.hydra.sweep.dir) / f".held-{config.hydra.job.num}"
        if marker.exists():
            return
        from transformers import Trainer

        save = Trainer._save_checkpoint

        def save_then_hold(self, *args, **kw):
            save(self, *args, **kw)
            marker.touch()
            print(f"hold: checkpoint-{self.state.global_step} saved, waiting for the time limit", flush=True)
            time.sleep(600)  # submitit's USR2 handler requeues the task and exits from inside this sleep

        Trainer._save_checkpoint = save_then_hold
