"""Compose one of our Hydra configs without importing verl, so the preflight can refuse in ~1-2 s.

Our primary configs extend verl's (``hydra.searchpath: [pkg://verl.trainer.config]``); Hydra resolves a
``pkg://`` path by importing that package, and ``import verl`` costs 4-12 s (torch, tensordict, peft). The
same YAML files are found by ``importlib.util.find_spec`` without importing anything, so the search path
is handed to Hydra as a ``file://`` path instead; the composed config is the same.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

VERL_CONFIG_PKG = "pkg://verl.trainer.config"


def verl_config_dir() -> Path:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("verl is not installed: pip install -e . (it pins verl==0.9.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"


def searchpath(config_dir: str, config_name: str) -> list[str]:
    """The primary config's ``hydra.searchpath`` with verl's package path as a file path."""
    primary = yaml.safe_load(Path(config_dir, f"{config_name}.yaml").read_text()) or {}
    paths = (primary.get("hydra") or {}).get("searchpath") or []
    return [f"file://{verl_config_dir()}" if p == VERL_CONFIG_PKG else p for p in paths]


def compose_plain(config_dir: str, config_name: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The composed, resolved config as plain containers (``hydra.*`` overrides are not applied)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    mine = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    paths = ",".join(searchpath(config_dir, config_name))
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name, overrides=[f"hydra.searchpath=[{paths}]", *mine])
    return OmegaConf.to_container(cfg, resolve=True)
