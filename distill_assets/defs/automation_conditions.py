"""When assets update on their own (declarative automation; the sensors in defs/automation run them).

* Data preparation (sources, teachers, scoring, feedback): as soon as their inputs change (new commits
  mined, new tasks) and every night at ``automation.nightly_cron``. Teacher answers and sandbox runs are
  cached, so a refresh pays only for new tasks.
* Training, export and evaluation: once per night, after everything upstream has been refreshed since
  the tick, in dependency order; training runs in pool ``gpu`` (one at a time).
* Report and promotion: right after new evaluations, and nightly.
"""

import dagster as dg

from distill_assets.defs.settings import definitions_config

CRON, TIMEZONE = definitions_config().automation.nightly_cron, definitions_config().automation.timezone
NIGHTLY = dg.AutomationCondition.on_cron(CRON, TIMEZONE).with_label(f"nightly ({CRON} {TIMEZONE})")
REFRESH = (dg.AutomationCondition.eager() | NIGHTLY).with_label(f"on upstream change, and nightly ({CRON})")
