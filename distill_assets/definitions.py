"""The code location: everything under distill_assets/defs/, loaded by Dagster's defs-folder loader, from the
distill.yaml loaded once here (a broken file is one clear error in the UI and the CLI, not an import trace)."""

from pathlib import Path

import dagster as dg

from distill_assets.config import ConfigError
from distill_assets.defs.settings import definitions_config


@dg.definitions
def defs() -> dg.Definitions:
    try:
        definitions_config()
    except ConfigError as exc:
        raise ConfigError(f"distill_assets cannot load its definitions: {exc}") from None
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
