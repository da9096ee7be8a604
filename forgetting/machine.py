"""What this machine has, against what the run asks of it: GPUs, their bf16, and the devices parallel settings name.

    python launch.py device=cuda                       # on a machine without a GPU: one line, before any stage
    python launch.py method=cfs generator=vllm         # on CPU: one line naming generator=vllm_cpu

``launch.py`` calls :func:`check_machine` after the config validates and before any stage; not part of
:func:`forgetting.config.validate`, so every config (GPU presets included) still composes on any machine, and
``--plan`` still plans for a GPU elsewhere. DeepSpeed and several training processes run on CPU too (gloo,
``DS_ACCELERATOR=cpu``: tests/train/test_zero3.py), so on a CPU machine only what needs a GPU is refused.
"""
from __future__ import annotations

import os
import re

from forgetting.compose import Config
from forgetting.errors import ConfigError
from forgetting.errors import check as _check


def gpus() -> int:
    """The CUDA devices torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def numa_nodes() -> int:
    """The host's memory nodes: vLLM's CPU engine binds each tensor-parallel rank's threads to one of them."""
    nodes = [n for n in os.listdir("/sys/devices/system/node") if re.fullmatch(r"node\d+", n)] \
        if os.path.isdir("/sys/devices/system/node") else []
    return max(1, len(nodes))


def host_memory() -> tuple[int, int]:
    """(total, available) bytes of host memory, as vLLM's CPU engine reads them."""
    import psutil

    vm = psutil.virtual_memory()
    return vm.total, vm.available


def check_machine(c: Config) -> None:
    """Refuse (ConfigError, one line) settings this machine's devices cannot run: ``device=cuda`` without a GPU,
    more training processes or vLLM ranks than GPUs, bf16 on a GPU without it, and generator=vllm's GPU resources
    (a reserved share of GPU memory) on a CPU machine."""
    n = gpus()
    m, t = c.model, c.trainer
    if c.device.startswith("cuda"):
        index = int(c.device.split(":")[1]) if ":" in c.device else 0
        _check(n > 0, "device", c.device, "device=cpu: this machine has no GPU (torch sees no CUDA device); "
               "DeepSpeed, several training processes and vLLM (generator=vllm_cpu) run on CPU too")
        _check(index < n, "device", c.device, f"one of the {n} GPUs torch sees (cuda:0 to cuda:{n - 1})")
        for key, processes, used in (("trainer.num_processes", t.num_processes, c.method.train),
                                     ("model.midtrain.num_processes", m.midtrain.num_processes, m.midtrain.steps > 0)):
            _check(not used or processes <= n, key, processes, f"at most the {n} GPUs torch sees (one per process)")
        if not bf16_gpu():
            for key, on in (("trainer.bf16", t.bf16 and c.method.train), ("model.dtype", m.dtype == "bfloat16"),
                            ("model.midtrain.bf16", m.midtrain.bf16 and m.midtrain.steps > 0)):
                _check(not on, key, True if key.endswith("bf16") else m.dtype,
                       "float32 or float16: this machine's GPU has no bf16 (torch.cuda.is_bf16_supported() is false)")
    if c.generator.backend == "vllm" and c.generates():
        _check_vllm(c, n)


def _check_vllm(c: Config, n: int) -> None:
    g = c.generator
    if n > 0:
        need = g.tensor_parallel_size * g.data_parallel_size
        _check(need <= n, "generator.tensor_parallel_size", g.tensor_parallel_size,
               f"a size whose engines fit the {n} GPUs torch sees (generator.data_parallel_size="
               f"{g.data_parallel_size} × tensor_parallel_size needs {need})")
        if g.dtype == "bfloat16" and not bf16_gpu():
            raise ConfigError("generator.dtype='bfloat16' is invalid: expected float32 or float16: this machine's "
                              "GPU has no bf16 (torch.cuda.is_bf16_supported() is false)")
        return
    if g.kv_cache_memory_bytes is None:
        total, available = host_memory()
        want = g.gpu_memory_utilization * total
        _check(want <= available, "generator.gpu_memory_utilization", g.gpu_memory_utilization,
               f"generator=vllm_cpu, the CPU configuration: this machine has no GPU, and vLLM's CPU engine would "
               f"reserve that share of host memory ({want / 2**30:.1f} GiB of {total / 2**30:.1f}; "
               f"{available / 2**30:.1f} GiB available); or set generator.kv_cache_memory_bytes")
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto") == "auto":
        nodes = numa_nodes()
        _check(g.tensor_parallel_size <= nodes, "generator.tensor_parallel_size", g.tensor_parallel_size,
               f"at most {nodes} on this machine: it has no GPU, and vLLM's CPU engine binds each tensor-parallel "
               f"rank to its own memory node (it has {nodes}); generator=vllm_cpu is the CPU configuration")
