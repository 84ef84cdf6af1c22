"""One wandb run per trial (and one for the final retrain): init, log per epoch, finish with a state tag."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Mapping

from fer_sweep.config import UserError, first_line


def logged_in() -> bool:
    """An API key in WANDB_API_KEY or a `wandb login` entry in ~/.netrc (read locally: no network)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc")).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


ENV_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # what wandb accepts in WANDB_MODE


def resolve_mode(mode: str) -> str:
    """`auto` is online when an API key or a `wandb login` is present, else offline (sync later). A WANDB_MODE in
    the environment overrides any mode inside wandb, so one that wandb refuses is named here, before any work."""
    env = os.environ.get("WANDB_MODE")
    if mode != "disabled" and env is not None and env not in ENV_MODES:
        raise UserError(f"WANDB_MODE={env!r} in the environment: wandb accepts {', '.join(ENV_MODES[:3])} there "
                        "(it overrides --wandb and the spec's wandb.mode): set one of those, or unset WANDB_MODE")
    if mode != "auto":
        return mode
    return "online" if env == "online" or logged_in() else "offline"


class TrialRun:
    """A wandb run for one trial; every method is a no-op when mode is `disabled`."""

    def __init__(self, *, mode: str, project: str, entity: str | None, group: str, name: str | None,
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
                                  config=dict(config), dir=str(run_dir), reinit="create_new", settings=settings,
                                  mode=mode)  # type: ignore[arg-type]  # one of wandb's modes (resolve_mode)
        except Exception as e:  # noqa: BLE001 - a dead network or a bad key must not lose the trial
            override = (f"WANDB_MODE={os.environ['WANDB_MODE']!r} in the environment overrides --wandb: unset it, or "
                        if "WANDB_MODE" in os.environ else "")
            raise UserError(f"wandb: could not start run {name} in {mode} mode "
                            f"({type(e).__name__}: {first_line(e, 200)}); "
                            f"{override}use --wandb offline or disabled") from None
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
