"""Ensembles, one job per module: members and their probabilities (members), scores of probabilities (scores),
greedy selection on validation (selection), the pool of candidates of one study or several (pool), building an
ensemble and its one test (build), ensemble folders (folders) and `best`'s ensemble of seeds (seeds)."""

from fer_sweep import lazy_exports

_EXPORTS = {
    "Member": "members", "member_proba": "members", "combine": "members", "ensemble_proba": "members",
    "np_scores": "scores", "proba_scores": "scores",
    "Selection": "selection", "greedy_select": "selection", "CRITERION": "selection",
    "Candidate": "pool", "same_data_key": "pool", "check_same_data": "pool", "gather": "pool",
    "build_ensemble": "build",
    "ENSEMBLE_JSON": "folders", "save_ensemble": "folders", "ensemble_folder": "folders", "read_ensemble": "folders",
    "seed_model": "seeds", "seeds_metrics": "seeds", "save_seeds": "seeds",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
