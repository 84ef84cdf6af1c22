"""W&B Sweeps as a backend: a spec in W&B's syntax and back (mapping), the one trial its agent runs (agent),
`run --backend wandb` (launch) and `sync` (sync), one job per module as Optuna keeps one backend per file."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "ENTRY_MODULE": "mapping", "METRIC": "mapping",
    "sweep_config": "mapping", "wandb_param": "mapping", "dump_config": "mapping",
    "params_from_args": "mapping", "parse_value": "mapping",
    "run_one_trial": "agent", "trial_main": "agent",
    "LOGIN_HINT": "launch", "require_online": "launch", "run_wandb_sweep": "launch",
    "offline_runs": "sync", "sync_runs": "sync",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
