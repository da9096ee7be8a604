"""Training in N processes — DeepSpeed ZeRO-3, or plain data parallel: ``train()`` starts them with torchrun.

    python launch.py trainer=deepspeed_zero3 trainer.num_processes=8 trainer.grad_accum=4 device=cuda
    pytest tests/train/test_zero3.py

Only training fans out; the pipeline stays one process, so generation, evaluation and every artifact of the store
are made once, by one writer. The parent pickles the job (a function that creates the model, the encoded rows, the
settings) into the training's work dir and runs
``torchrun --standalone --nproc_per_node N -m forgetting.train.distributed JOB`` (a free local port, one node).
Each worker creates the model itself — under ZeRO-3 after the DeepSpeed config is live, so that from_pretrained
loads every weight straight into its partitions — and runs :func:`forgetting.train.fit.fit`; rank 0 writes the
model and the logs into the artifact's temp dir. :func:`consolidate` then makes a plain safetensors checkpoint
of it in the parent: from the ZeRO shards when the 16-bit gather at save is off, and with a LoRA adapter merged
into the base weights. A fresh process also keeps DeepSpeed's global state (the live config that makes
from_pretrained partition) out of the pipeline's later stages. On CPU the workers use gloo and
``DS_ACCELERATOR=cpu``.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def launch(model_fn, rows: list[dict], pad_token_id: int, out_dir: Path, work_dir: Path, t, settings: dict) -> None:
    """Run :func:`forgetting.train.fit.fit` in ``t.num_processes`` local processes (``t``: the trainer config,
    ``settings``: fit's other keyword arguments); raise if any fails."""
    import torch

    if isinstance(model_fn, torch.nn.Module) or not callable(model_fn):
        raise TypeError(f"model={type(model_fn).__name__} is invalid: expected a picklable function that creates "
                        "the model (each training process creates its own; under ZeRO-3, partitioned)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("launch.py runs as one process and starts the training processes itself: run it without "
                           "torchrun / deepspeed / accelerate launch, with trainer.num_processes=N")
    work_dir.mkdir(parents=True, exist_ok=True)
    job = work_dir / "job.pkl"
    with open(job, "wb") as f:
        pickle.dump({"model": model_fn, "rows": rows, "pad_token_id": pad_token_id, "out_dir": str(out_dir),
                     "work_dir": str(work_dir), "trainer": t, "settings": settings}, f)
    env = dict(os.environ)
    if settings["use_cpu"]:
        env["DS_ACCELERATOR"] = "cpu"
    # DeepSpeed compiles its C++ ops (only if the config asks for them) here rather than in ~/.cache
    env.setdefault("TORCH_EXTENSIONS_DIR", str(work_dir / "torch_extensions"))
    num_processes = t.num_processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
           "-m", __name__, str(job)]
    code = subprocess.run(cmd, env=env).returncode
    if code != 0:
        raise RuntimeError(f"training in {num_processes} processes failed (exit code {code}): see the workers' "
                           f"output above; command: {' '.join(cmd)}")


def consolidate(model_fn, out_dir: Path) -> None:
    """Turn what rank 0 saved into a plain safetensors checkpoint that ``from_pretrained`` loads."""
    out_dir = Path(out_dir)
    if not any((out_dir / name).exists() for name in SAFE_WEIGHTS) and (out_dir / "latest").exists():
        # stage3_gather_16bit_weights_on_model_save was off: rank 0 saved the ZeRO checkpoint (and the model's
        # config); gather the fp32 weights from its shards on CPU, and save them with save_pretrained, which knows
        # the model's tied weights (a model on the meta device: no second copy of the weights)
        import torch
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        from transformers import AutoConfig, AutoModelForCausalLM

        state = get_fp32_state_dict_from_zero_checkpoint(str(out_dir))
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(out_dir)))
        shell.save_pretrained(str(out_dir), state_dict=state)
        for path in [*out_dir.glob("global_step*"), out_dir / "latest", out_dir / "zero_to_fp32.py"]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    adapter = out_dir / "adapter_model.safetensors"
    if adapter.exists():
        # LoRA: rank 0 saved the adapter alone; merge it into the base weights here, one process, no ZeRO
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        model = model_fn()
        set_peft_model_state_dict(model, load_file(str(adapter)))
        model.merge_and_unload().save_pretrained(str(out_dir))
        for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):  # README: peft's model card
            (out_dir / name).unlink(missing_ok=True)


def main(job_path: str) -> None:
    with open(job_path, "rb") as f:
        job = pickle.load(f)
    settings = job["settings"]
    if settings["use_cpu"]:
        # gloo, set up before TrainingArguments, which then uses it (use_configured_state): left to themselves,
        # accelerate and DeepSpeed pick a CPU backend (ccl) that is not installed
        from accelerate import PartialState

        zero = bool(job["trainer"].deepspeed)
        if zero:
            import deepspeed.ops

            os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
            # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (measured here: 4-5 min) that only
            # its tensor-parallel inference uses; training's collectives go through gloo. DeepSpeed keeps this
            # dict of compatible ops in its module so that edits persist.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        PartialState(cpu=not zero, backend="gloo")  # DeepSpeed runs on its CPU accelerator, not accelerate's

    from forgetting.train.fit import fit  # transformers' Trainer: after the process group is set up

    fit(job["model"], job["rows"], job["pad_token_id"], Path(job["out_dir"]), Path(job["work_dir"]), job["trainer"],
        **settings, configured_state=settings["use_cpu"])


if __name__ == "__main__":
    main(sys.argv[1])
