"""The generation backends ``generator.backend`` picks, registered with what each needs: what it samples from, how
its sampler starts, what it must find installed, which generator settings its samples do not depend on, and the
memory it takes (for ``--plan``).

    pytest tests/generate/test_vllm.py tests/generate/test_sources.py

``hf`` samples the model loaded in this process (``HFBackend``); ``vllm`` starts engines that load the weights
themselves, in worker processes (``VLLMBackend``; vLLM itself is imported only inside those processes, never here).
Adding a backend: one class with the members below under ``@BACKENDS.register("name")``, and a sampler with
``HFBackend.sample``'s signature (and ``close()`` if it holds devices).
"""
from __future__ import annotations

from forgetting.estimate import hf_generate_memory, vllm_memory
from forgetting.generate import hf as hf_backend
from forgetting.generate import vllm as vllm_backend
from forgetting.registry import Registry

BACKENDS: Registry[type] = Registry("generator.backend")


@BACKENDS.register("hf")
class HF:
    """The model loaded in this process, sampled in batches of ``generator.batch_size``."""

    own_engine = False  # samples the model this process loaded (generative benchmarks: the evaluated model)
    not_in_key = ("dtype",)  # the model loads in model.dtype, which the base's key already holds

    @staticmethod
    def model(c, path, revision, load):
        """What the sampler samples from: the model ``load()`` loads here."""
        return load()

    @staticmethod
    def start(model, tokenizer, gen=None):
        return hf_backend.HFBackend(model, tokenizer)

    @staticmethod
    def require() -> None:
        """Nothing beyond the base install."""

    @staticmethod
    def dtype(gen, model_dtype: str) -> str:
        return model_dtype

    @staticmethod
    def memory(a, gen, dtype: str, device, length: int):
        """(estimate, whether a sequence of ``length`` tokens fits, devices) of sampling ``length``-token rows."""
        return hf_generate_memory(a, dtype, gen.batch_size, length, device.gpu), True, 1


@BACKENDS.register("vllm")
class VLLM:
    """vLLM engines in worker processes, which load the weights themselves (``generator.tensor_parallel_size``,
    ``data_parallel_size`` and the other resource knobs) and batch requests themselves."""

    own_engine = True  # its engines hold their own copy of the weights: the HF model is freed before they start
    not_in_key = ("batch_size",)  # vLLM schedules its own batches, with a seed per request

    @staticmethod
    def model(c, path, revision, load):
        """Where the weights are (a ``VLLMModel``): the engines load them, in ``generator.dtype``."""
        return vllm_backend.VLLMModel(path=str(path), revision=revision, trust_remote_code=c.model.trust_remote_code,
                                      dtype=VLLM.dtype(c.generator, c.model.dtype))

    @staticmethod
    def start(model, tokenizer, gen=None):
        vllm_backend.require_vllm()
        if not isinstance(model, vllm_backend.VLLMModel):
            raise TypeError(f"generator.backend='vllm' samples from a VLLMModel (where the weights are), got "
                            f"{type(model).__name__}: expected runtime.generation_model() to make it")
        knobs = {} if gen is None else dict(
            tensor_parallel_size=gen.tensor_parallel_size, data_parallel_size=gen.data_parallel_size,
            gpu_memory_utilization=gen.gpu_memory_utilization, max_model_len=gen.max_model_len,
            kv_cache_memory_bytes=gen.kv_cache_memory_bytes, enforce_eager=gen.enforce_eager, seed=gen.seed)
        return vllm_backend.VLLMBackend(model, tokenizer, **knobs)

    @staticmethod
    def require() -> None:
        """``VLLMUnavailable`` (one line naming the extra to install) when vLLM cannot be imported."""
        vllm_backend.require_vllm()

    @staticmethod
    def dtype(gen, model_dtype: str) -> str:
        return gen.dtype or model_dtype  # null: model.dtype

    @staticmethod
    def memory(a, gen, dtype: str, device, length: int):
        e, ok = vllm_memory(a, dtype, gen.tensor_parallel_size, device.memory, gen.gpu_memory_utilization,
                            gen.kv_cache_memory_bytes, gen.max_model_len or length)
        return e, ok, gen.tensor_parallel_size * gen.data_parallel_size
