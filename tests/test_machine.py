"""What the settings ask of this machine's devices (forgetting/machine.py): GPUs that are not there, more training
processes or vLLM ranks than GPUs, bf16 on a GPU without it. The GPU counts are stand-ins, so that a CPU machine
checks the rules for a GPU one; tests/test_bad_input.py runs the CPU cases through launch.py.

    pytest tests/test_machine.py
"""
from __future__ import annotations

import pytest
from conftest import compose

from forgetting import machine
from forgetting.errors import ConfigError


@pytest.fixture
def gpus(monkeypatch):
    """Set the GPUs torch sees (and whether they have bf16) for check_machine."""
    def set_gpus(n: int, bf16: bool = True):
        monkeypatch.setattr(machine, "gpus", lambda: n)
        monkeypatch.setattr(machine, "bf16_gpu", lambda: bf16)
    return set_gpus


def refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        machine.check_machine(compose(*overrides))
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("overrides,needle", [
    (("device=cuda",), "device='cuda' is invalid: expected device=cpu: this machine has no GPU"),
    (("device=cuda:0", "method=l2"), "device='cuda:0'"),
    (("device=cuda", "deepspeed=zero3", "trainer.num_processes=2"), "device='cuda'"),
])
def test_cuda_without_a_gpu_is_refused(gpus, overrides, needle):
    gpus(0)
    assert needle in refused(*overrides)


@pytest.mark.parametrize("overrides,needle", [
    (("device=cuda:2",), "device='cuda:2' is invalid: expected one of the 2 GPUs"),
    (("device=cuda", "trainer.num_processes=4"), "trainer.num_processes=4 is invalid: expected at most the 2 GPUs"),
    (("device=cuda", "deepspeed=zero3", "trainer.num_processes=3"), "trainer.num_processes=3"),
    (("device=cuda", "model.midtrain.steps=2", "model.midtrain.num_processes=8"), "model.midtrain.num_processes=8"),
    (("device=cuda", "method=cfs", "generator=vllm", "generator.tensor_parallel_size=4"),
     "generator.tensor_parallel_size=4"),
    (("device=cuda", "method=cfs", "generator=vllm", "generator.data_parallel_size=3"),
     "data_parallel_size=3 × tensor_parallel_size needs 3"),
])
def test_sizes_beyond_the_gpus_are_refused(gpus, overrides, needle):
    gpus(2)
    assert needle in refused(*overrides)


@pytest.mark.parametrize("overrides,needle", [
    (("device=cuda", "trainer.bf16=true"), "trainer.bf16=True"),
    (("device=cuda", "model.dtype=bfloat16"), "model.dtype='bfloat16'"),
    (("device=cuda", "model.midtrain.steps=2", "model.midtrain.bf16=true"), "model.midtrain.bf16=True"),
    (("device=cuda", "method=cfs", "generator=vllm", "generator.dtype=bfloat16"), "generator.dtype='bfloat16'"),
])
def test_bf16_on_a_gpu_without_it_is_refused(gpus, overrides, needle):
    gpus(1, bf16=False)
    message = refused(*overrides)
    assert needle in message and "no bf16" in message


def test_what_the_devices_can_run_passes(gpus, monkeypatch):
    gpus(2)
    machine.check_machine(compose("device=cuda", "trainer.num_processes=2", "trainer.bf16=true", "method=cfs",
                                  "generator=vllm", "generator.tensor_parallel_size=2"))
    machine.check_machine(compose("device=cuda:1", "method=base", "trainer.num_processes=8"))  # trains nothing
    gpus(0)  # on CPU: DeepSpeed, several processes, bf16 and the CPU vLLM configuration
    machine.check_machine(compose("deepspeed=zero3", "trainer.num_processes=2", "trainer.bf16=true"))
    machine.check_machine(compose("method=cfs", "generator=vllm_cpu", "generator.data_parallel_size=2"))
    machine.check_machine(compose("method=ft", "generator=vllm"))  # samples nothing: vLLM is not started
    # generator=vllm's reservation is refused on CPU only when the host cannot give it
    monkeypatch.setattr(machine, "host_memory", lambda: (100, 95))
    machine.check_machine(compose("method=cfs", "generator=vllm"))
    monkeypatch.setattr(machine, "host_memory", lambda: (100, 80))
    assert "generator=vllm_cpu, the CPU configuration: this machine has no GPU" in refused("method=cfs",
                                                                                         "generator=vllm")
