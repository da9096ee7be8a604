"""Where the configs are, and a config option's own content found the way Hydra finds ``group=name``.

    python -c "from forgetting.presets import option; print(option('version', 'v2'))"
    pytest tests/test_presets.py tests/test_wheel.py

The repository's top-level ``conf/`` ships inside the package as ``forgetting.conf`` (pyproject.toml maps the
package to that directory; nothing is moved), so Hydra reads it as ``pkg://forgetting.conf`` from a wheel, from an
editable install and from any working directory. Knobs that name an option of a config group rather than select it
(``eval.generative_from``, ``method.recycle_from``, ``method.recycle_method``, the plan's ``deepspeed=zero3``) read
that option here, on the search path of the config being run — ``hydra.searchpath`` included — so an option added
there serves them exactly as it serves ``method=``.
"""
from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any, Iterator, Optional

CONFIG_MODULE = "forgetting.conf"
CONFIG_NAME = "config"
_sources: Optional[tuple[str, ...]] = None  # set by ``searching``: the search path of a config composed in-process


def config_path() -> str:
    """Hydra's primary config source: ``pkg://forgetting.conf``; or a source checkout's own ``conf/`` by path when
    the package is imported from a checkout whose ``forgetting.conf`` is not that directory (not installed, or another
    checkout is the one installed in editable mode), so a checkout always runs with its own configs."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "conf"
    if (package.parent / "pyproject.toml").is_file() and (checkout / f"{CONFIG_NAME}.yaml").is_file():
        spec = importlib.util.find_spec(CONFIG_MODULE)
        found = list(spec.submodule_search_locations or []) if spec else []
        if not found or Path(found[0]).resolve() != checkout.resolve():
            return str(checkout)
    return f"pkg://{CONFIG_MODULE}"


def initialize():
    """Hydra's compose API on the package's configs: ``with initialize(): cfg = hydra.compose("config", [...])``."""
    from hydra import initialize_config_dir, initialize_config_module

    path = config_path()
    if path.startswith("pkg://"):
        return initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3")
    return initialize_config_dir(config_dir=path, version_base="1.3")


@contextlib.contextmanager
def searching(sources) -> Iterator[None]:
    """Read options on ``sources`` (a composed config's ``hydra.runtime.config_sources``) inside the block: for a
    config composed in-process with the compose API, whose search path no running Hydra app knows."""
    global _sources
    before, _sources = _sources, tuple(_url(s) for s in sources)
    try:
        yield
    finally:
        _sources = before


def option(group: str, name: str) -> Optional[dict[str, Any]]:
    """The content of the option ``group=name`` as written (its ``defaults`` list and ``@package`` header left out),
    from the first source on the search path that has it, as Hydra picks it; None if no source has it."""
    result = _repository(_search_path()).load_config(f"{group}/{name}")
    if result is None:
        return None
    from omegaconf import OmegaConf

    return OmegaConf.to_container(result.config) or {}


def _url(source) -> str:
    if isinstance(source, str):
        return source
    get = source.get if isinstance(source, dict) else lambda key: getattr(source, key)
    return f"{get('schema')}://{get('path')}"


def _search_path() -> tuple[str, ...]:
    """The search path to read options on: ``searching``'s; else the running Hydra app's (its ``hydra.searchpath``
    included); else the package's own configs."""
    if _sources is not None:
        return _sources
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return tuple(_url(s) for s in HydraConfig.get().runtime.config_sources)
    path = config_path()
    return (path if path.startswith("pkg://") else f"file://{path}",)


_repositories: dict[tuple[str, ...], Any] = {}


def _repository(urls: tuple[str, ...]):
    if urls not in _repositories:
        from hydra._internal.config_repository import ConfigRepository
        from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
        from hydra.core.plugins import Plugins

        Plugins.instance()  # registers the config source types (file://, pkg://, structured://)
        search_path = ConfigSearchPathImpl()
        for url in urls:
            search_path.append(provider="forgetting", path=url)
        _repositories[urls] = ConfigRepository(config_search_path=search_path)
    return _repositories[urls]
