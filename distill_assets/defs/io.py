"""A small UPathIOManager for polars tables (dagster-polars is broken with polars 2).

Tables are Parquet files under ``<base_dir>/<asset key>[/<partition>].parquet``,
written to a temporary name and renamed, so a crashed run never leaves a
half-written table behind.
"""

import os
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
from upath import UPath


class PolarsParquetIO(dg.UPathIOManager):
    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj).__name__}"
            )
        local = Path(str(path))
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
        obj.write_parquet(tmp)
        os.replace(tmp, local)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame:
        if not Path(str(path)).exists() and (context.definition_metadata or {}).get("optional_table"):
            return pl.DataFrame()  # an optional input never materialized: no rows (and no columns)
        return pl.read_parquet(str(path))


class PolarsIOManager(dg.ConfigurableIOManagerFactory):
    """Polars tables as Parquet; default folder $DAGSTER_HOME/storage/tables."""

    base_dir: str | None = None

    def create_io_manager(self, context) -> PolarsParquetIO:
        base = self.base_dir or str(Path(os.environ.get("DAGSTER_HOME") or ".dagster_home") / "storage" / "tables")
        return PolarsParquetIO(base_path=UPath(base))
