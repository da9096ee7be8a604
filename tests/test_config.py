"""Every yaml in conf/ composes and validates; bad values fail at composition with one clear line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import CONF, ROOT, compose
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from forgetting.errors import ConfigError

GROUP_OPTIONS = sorted(
    (group.name, path.stem)
    for group in CONF.iterdir() if group.is_dir() and group.name != "hydra"
    for path in group.glob("*.yaml")
)


# options with a mandatory value (``???``) get one here, as a user must give it on the command line
REQUIRED = {("dataset", "jsonl"): [f"dataset.path={ROOT / 'tests' / 'fixtures' / 'metamathqa.jsonl'}"],
            ("method", "recycle"): ["method.recycle_from=[{pretrain: {steps: 300}}]"]}


def _overrides(group: str, name: str) -> list[str]:
    option = f"+experiment={name}" if group == "experiment" else f"{group}={name}"
    return [option, *REQUIRED.get((group, name), [])]


def test_every_group_has_options():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert {"model", "method", "dataset", "eval", "generator", "trainer", "logger", "experiment"} <= groups


@pytest.mark.parametrize("group,name", GROUP_OPTIONS, ids=[f"{g}/{n}" for g, n in GROUP_OPTIONS])
def test_every_config_composes(group, name):
    """The composed config holds every value the option's own yaml sets (its defaults list may bring more)."""
    c = compose(*_overrides(group, name))
    if group not in SCHEMAS:  # experiment presets and debug overlays set keys of several groups
        return
    own = {k: v for k, v in _yaml(group, name).items() if k != "defaults" and not _interpolation(v) and v != "???"}
    composed = OmegaConf.to_container(OmegaConf.structured(getattr(c, group)))
    for key, value in own.items():
        if (group, key, value) == ("generator", "backend", "auto"):  # resolved to what this machine has
            assert composed[key] in ("hf", "vllm"), composed[key]
            continue
        assert _holds(composed[key], value), (key, composed[key], value)


def _holds(got, value) -> bool:
    """``got`` holds ``value``: dicts (and list entries typed by the schema) may carry more keys, the defaults'."""
    if isinstance(value, dict):
        return isinstance(got, dict) and all(k in got and _holds(got[k], v) for k, v in value.items())
    if isinstance(value, list):
        return isinstance(got, list) and len(got) == len(value) and all(map(_holds, got, value))
    return got == value


SCHEMAS = {"world": "WorldConfig", "model": "ModelConfig", "method": "MethodConfig", "dataset": "DatasetConfig",
           "eval": "EvalConfig", "generator": "GeneratorConfig", "trainer": "TrainerConfig", "logger": "LoggerConfig"}


def _yaml(group: str, name: str) -> dict:
    import yaml

    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}


def _interpolation(value) -> bool:
    return isinstance(value, str) and "${" in value


@pytest.mark.parametrize("group,name", [(g, n) for g, n in GROUP_OPTIONS if g in SCHEMAS],
                         ids=[f"{g}/{n}" for g, n in GROUP_OPTIONS if g in SCHEMAS])
def test_no_option_restates_a_default(group, name):
    """The dataclasses in forgetting/config.py (and the method schema of forgetting/compose.py) hold the defaults;
    an option states only what differs (its name and label are its identity; an interpolation is not a value)."""
    import forgetting.compose as compose
    import forgetting.config as schema

    cls = getattr(schema, SCHEMAS[group], None) or getattr(compose, SCHEMAS[group])
    defaults = OmegaConf.to_container(OmegaConf.structured(cls))

    def restated(own: dict, base: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in own.items():
            if key in ("defaults", "name", "label") or _interpolation(value) or key not in base:
                continue
            if isinstance(value, dict) and isinstance(base[key], dict) and key in ("arch", "pretrain"):
                out += restated(value, base[key], f"{prefix}{key}.")
            elif base[key] == value:
                out.append(prefix + key)
        return out

    assert restated(_yaml(group, name), defaults) == []


@pytest.mark.parametrize("override,needle", [
    ("method.ratio=-1", "method.ratio=-1"),
    ("method.weight=-0.5", "method.weight=-0.5"),
    ("generator.temperature=0", "generator.temperature=0"),
    ("generator.top_p=1.5", "generator.top_p=1.5"),
    ("trainer.lr=0", "trainer.lr=0"),
    ("method.alpha=2", "method.alpha=2"),
    ("method.augment=telepathy", "method.augment='telepathy' is invalid: expected one of"),  # parts by name
    ("method.lora_rank=0", "method.lora_rank=0"),
    ("eval.generative_limit=0", "eval.generative_limit=0"),
    ("eval.generative_max_new_tokens=-1", "eval.generative_max_new_tokens=-1"),
])
def test_invalid_values_fail_with_named_value(override, needle):
    with pytest.raises(ConfigError) as err:
        compose(override)
    message = str(err.value)
    assert needle in message.replace(".0", "") or needle in message
    assert "expected" in message and "\n" not in message


@pytest.mark.parametrize("override", ["method=nonexistent", "method.nonexistent_key=1"])
def test_unknown_names_and_keys_fail_at_compose_time(override):
    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose(override)


def test_launcher_reports_bad_value_in_one_line_and_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "method.ratio=-1", f"store_dir={tmp_path}",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: method.ratio=-1.0 is invalid: expected a number >= 0"]
    assert not any(tmp_path.iterdir()) or not (tmp_path / "world").exists()  # nothing was built


def test_help_and_cfg_job_work():
    for args in (["--help"], ["--cfg", "job"]):
        proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "augment: none" in proc.stdout and "temperature: 1.0" in proc.stdout


@pytest.mark.parametrize("overrides,key", [
    (["dataset=jsonl", "dataset.path=/nonexistent/data.jsonl"], "dataset.path"),
    (["model.source=hf", "model.path=/nonexistent/model"], "model.path"),
    (["method=replay", "replay.source=jsonl", "replay.path=./nonexistent/*.json.gz"], "replay.path"),
])
def test_missing_local_paths_fail_before_any_stage(overrides, key):
    with pytest.raises(ConfigError, match=f"{key}=.* expected an existing local path"):
        compose(*overrides)


BENCHMARKS = ROOT / "tests" / "fixtures" / "benchmarks"


def test_generative_caps_and_benchmark_dir_apply_to_every_benchmark():
    from forgetting.pipeline import evaluate_spec
    from forgetting.store import Artifact

    paper = compose("eval=r1_suite").eval.generative
    assert {b.max_new_tokens for b in paper} == {32768, 2048} and {b.limit for b in paper} == {None}
    dry = compose("eval=r1_suite", "debug=dry", f"eval.benchmark_dir={BENCHMARKS}").eval
    assert [b.name for b in dry.generative] == [b.name for b in paper]
    for b, p in zip(dry.generative, paper):
        assert (b.limit, b.max_new_tokens, b.n_samples) == (2, 16, p.n_samples)  # AIME24 keeps 4 samples
        assert b.path == str(BENCHMARKS / f"{b.name}.jsonl") and (b.kind, b.subset) == (p.kind, p.subset)
    # the knobs act through the entries, which the evaluation key holds
    model = Artifact("hub", "m", ROOT)
    spec = evaluate_spec(compose("eval=r1_suite", "debug=dry", f"eval.benchmark_dir={BENCHMARKS}"), model, None)
    assert [b["limit"] for b in spec["generative"]["benchmarks"]] == [2] * len(paper)
    assert spec["generative"] != evaluate_spec(compose("eval=r1_suite"), model, None)["generative"]


def test_benchmark_dir_without_a_benchmark_file_names_it(tmp_path):
    (tmp_path / "aime24.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"eval.benchmark_dir='.*' is invalid: expected a directory holding "
                                          r"math500.jsonl, math500.json or math500.parquet"):
        compose("eval=reasoning", f"eval.benchmark_dir={tmp_path}")


def test_r1_suite_is_the_reasoning_then_the_medical_suite_without_copies():
    r1, reasoning, medical = (compose(f"eval={n}").eval for n in ("r1_suite", "reasoning", "medical"))
    assert [b.name for b in r1.generative] == [b.name for b in reasoning.generative + medical.generative]
    assert r1.generative == reasoning.generative + medical.generative
    again = OmegaConf.to_object(OmegaConf.structured(compose("eval=r1_suite")))  # validated twice: no duplicates
    assert len(again.eval.generative) == len(r1.generative)
    assert "generative:" not in (CONF / "eval" / "r1_suite.yaml").read_text()


def test_generator_auto_is_vllm_where_installed_else_hf(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    for installed, want in ((True, "vllm"), (False, "hf")):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, _i=installed: (real("json") if _i else None) if name == "vllm"
                            else real(name, *a))
        assert compose("generator=auto").generator.backend == want


def test_a_deepspeed_config_can_be_given_on_the_command_line():
    """OmegaConf cannot merge a nested dict into a null node: trainer.deepspeed defaults to {} (no DeepSpeed), to
    which the command line adds keys with Hydra's +."""
    c = compose("+trainer.deepspeed={zero_optimization: {stage: 2}}",
                "+model.midtrain.deepspeed.zero_optimization.stage=3")
    assert c.trainer.deepspeed["zero_optimization"]["stage"] == 2
    assert c.model.midtrain.deepspeed["zero_optimization"]["stage"] == 3
    assert compose().trainer.deepspeed == {} == compose("trainer.deepspeed=null").trainer.deepspeed
