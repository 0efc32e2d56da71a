"""Resources shared by every phase: the typed config and the table IO manager."""

import dagster as dg

from distill_assets.config import ConfigError, DistillConfig, load_config
from distill_assets.defs.io import PolarsIOManager


# Steps that call teachers or run sandboxes fail for passing reasons (a server restarting, a rate limit past
# the client's own retries, a container that did not start): retried with backoff. A user mistake or a
# permanent teacher error raises dg.Failure(allow_retries=False) and is not retried.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class DistillConfigResource(dg.ConfigurableResource):
    """distill.yaml, validated. ``config_path`` empty: $DISTILL_CONFIG or data/distill.yaml."""

    config_path: str | None = None

    def load(self) -> DistillConfig:
        try:
            return load_config(self.config_path)
        except ConfigError as exc:  # a user mistake: one clear message, no retry, no traceback hunt
            raise dg.Failure(description=str(exc), allow_retries=False) from None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"distill": DistillConfigResource(), "io_manager": PolarsIOManager()})
