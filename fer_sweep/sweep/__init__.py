"""Sweep layer: specs and the search space, the Optuna study and its ticket queue, workers and the one trial path,
kept trial models, W&B runs and W&B Sweeps interop."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "SweepSpec": "spec", "SpecError": "spec", "load_spec": "spec", "parse_spec": "spec",
    "sample_params": "space", "to_run_config": "space", "sample_configs": "space",
    "make_sampler": "policies", "make_pruner": "policies", "pruner_for": "policies",
    "open_study": "study", "prepare_study": "study", "open_existing": "study", "claim": "study", "reap": "study",
    "Training": "trial", "trial_config": "trial", "load_data": "trial",
    "Worker": "worker", "make_worker": "worker", "worker_loop": "worker", "run_trial": "worker",
    "run_sweep": "launch", "LaunchPlan": "launch", "worker_env": "launch",
    "open_storage": "store", "find_study": "store", "study_dir": "store",
    "snapshot": "summary", "status": "summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
