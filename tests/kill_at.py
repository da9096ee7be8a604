"""``launch.py`` that SIGKILLs itself at a chosen point inside a stage, for tests/test_kill.py.

    KILL_AT=generate:2 python tests/kill_at.py debug=micro method=cfs store_dir=/tmp/s

``KILL_AT=<stage>:<n>``: inside the ``n``-th build of ``<stage>`` (default 1), once its ``make`` has written
the stage's files into the temp directory and before the store seals and renames it — the moment a kill
leaves the most behind. ``KILL_AT=train:checkpoint``: mid-training, right after the first checkpoint is saved;
``KILL_AT=train:mid-checkpoint``: while the second checkpoint is being written (weights and optimizer on disk, its
``trainer_state.json`` not yet).
A signal sent by the process to itself is the same SIGKILL an OOM killer or ``scancel`` sends: no handler,
``finally`` or ``atexit`` runs; killing at a known point instead of after a timed wait makes the test exact
however slow the machine is.
"""
import os
import runpy
import signal
import sys
from pathlib import Path

LAUNCH = Path(__file__).resolve().parents[1] / "launch.py"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    stage, _, when = os.environ["KILL_AT"].partition(":")
    if when == "mid-checkpoint":  # the second checkpoint half written: its weights and optimizer, no trainer state
        from transformers import Trainer

        rng, calls = Trainer._save_rng_state, []

        def rng_then_die(self, *args, **kwargs):
            rng(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                die()

        Trainer._save_rng_state = rng_then_die
    elif when == "checkpoint":
        from transformers import Trainer

        save = Trainer._save_checkpoint

        def save_then_die(self, *args, **kwargs):
            save(self, *args, **kwargs)
            die()

        Trainer._save_checkpoint = save_then_die
    else:
        from forgetting.store import Store

        build, made = Store.build, []

        def build_then_die(self, name, spec, make):
            def make_then_die(tmp):
                make(tmp)
                made.append(name)
                if made.count(stage) == int(when or 1):
                    die()

            return build(self, name, spec, make_then_die if name == stage else make)

        Store.build = build_then_die
    sys.argv = [str(LAUNCH), *sys.argv[1:]]
    runpy.run_path(str(LAUNCH), run_name="__main__")


if __name__ == "__main__":
    main()
