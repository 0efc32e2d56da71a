"""The distill.yaml the definitions are built from, loaded once: partitions (the teachers) and the nightly
schedule are fixed when the code location loads; every run reads the file again through the
``DistillConfigResource`` (so a changed budget or key applies without a reload)."""

import os
from functools import cache

from distill_assets.config import DEFAULT_CONFIG_PATH, DistillConfig, load_config


@cache
def _load(path: str) -> DistillConfig:
    return load_config(path)


def definitions_config() -> DistillConfig:
    """``$DISTILL_CONFIG`` (or the shipped default), loaded on first use; raises ConfigError when broken."""
    return _load(str(os.environ.get("DISTILL_CONFIG") or DEFAULT_CONFIG_PATH))
