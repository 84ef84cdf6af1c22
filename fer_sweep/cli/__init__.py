"""The `fer-sweep` command line: `app`, with the sweep commands and the results commands registered on it."""

from fer_sweep.cli import results_cmds, sweep_cmds  # noqa: F401 - each registers its commands on `app`
from fer_sweep.cli.common import app

__all__ = ["app"]
