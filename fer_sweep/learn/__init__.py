"""Learning layer: the model registry, device-resident training (`fit`), evaluation, precision and device policy,
and model folders. Imports torch and the records in `fer_sweep.config`; nothing of sweeps."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "MODELS": "models", "build_model": "models",
    "DeviceSplit": "device", "pick_device": "device", "to_device": "device", "is_oom": "device",
    "precision": "precision", "resolve_amp": "precision", "cpu_capability": "precision",
    "augment_batch": "augment", "normalize_batch": "augment",
    "fit": "train", "input_norm": "train", "evaluate_as_trained": "train", "train_throughput": "train",
    "evaluate": "evaluate", "predict_proba": "evaluate",
    "save_model": "checkpoint", "load_model": "checkpoint", "model_from": "checkpoint", "model_config": "checkpoint",
    "state_dict_cpu": "checkpoint", "folder_or_final": "checkpoint",
    "run_bench": "throughput", "BenchOptions": "throughput",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
