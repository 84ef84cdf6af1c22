"""One wandb run per trial (and one for the final retrain): init, log per epoch, finish with a state tag."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Mapping

from fer_sweep.config import UserError


def logged_in() -> bool:
    """An API key in WANDB_API_KEY or a `wandb login` entry in ~/.netrc (read locally: no network)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc")).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_mode(mode: str) -> str:
    """`auto` is online when an API key or a `wandb login` is present, else offline (sync later)."""
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_MODE") == "online" or logged_in() else "offline"


class TrialRun:
    """A wandb run for one trial; every method is a no-op when mode is `disabled`."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str,
                 config: Mapping[str, Any], run_dir: Path, job_type: str = "trial"):
        self.mode = mode
        self.run = None
        if mode == "disabled":
            return
        import wandb  # imported lazily: it costs ~1 s and the disabled path needs none of it

        run_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                  disable_code=True, x_disable_machine_info=True, init_timeout=120)
        try:
            self.run = wandb.init(project=project, entity=entity, group=group, name=name, job_type=job_type,
                                  config=dict(config), dir=str(run_dir), mode=mode, reinit="finish_previous",
                                  settings=settings)
        except Exception as e:  # a dead network or a bad key must not lose the trial
            raise UserError(f"wandb: could not start run {name} in {mode} mode ({type(e).__name__}: {e}); "
                            "use --wandb offline or disabled") from None
        for key in ("val/acc", "val/macro_f1"):
            self.run.define_metric(key, summary="max")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def finish(self, tags: list[str], summary: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        self.run.tags = tuple(self.run.tags or ()) + tuple(tags)
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.finish()
        self.run = None


def sync_hint(results_dir: Path) -> str:
    return f"wandb runs are offline: upload them with `wandb sync {results_dir}/wandb/offline-run-*`"
