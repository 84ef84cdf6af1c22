"""Parameter importances of a study (fANOVA over its complete trials) and what they rest on."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

IMPORTANCE_MIN_TRIALS = 4  # complete trials before fANOVA is run at all (fewer: its forest has nothing to split)


def importance_trials_needed(n_params: int) -> int:
    """Complete trials from which fANOVA importances are more than a hint: 20, or 2 per searched parameter.

    Why: simulated random searches of cnn.yaml's grid (6 parameters; lr, norm and dropout worth 1-4 accuracy
    points, the rest nothing; ±1 point of seed noise; 30 draws per size) had fANOVA rank the truly most
    important parameter first in 23-60% of draws with 4-15 complete trials, 73% with 20 and 80% with 30.
    With 16 searched parameters (vgg.yaml's size): 20% at 10, 63% at 20, 77% at 30, 93% at 50. Below this count,
    importances are shown but flagged unreliable. (One dominant parameter, such as an lr that fails to
    learn, is found sooner; the flag is for the usual case of effects of a few points.)
    """
    return max(20, 2 * n_params)


def importance_basis(study: optuna.Study) -> dict[str, Any]:
    """What the importances rest on: complete trials, how many they need to be reliable, and whether they are."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    needed = importance_trials_needed(len({k for t in complete for k in t.params}))
    return {"complete_trials": len(complete), "reliable_from": needed, "reliable": len(complete) >= needed}


def importance_warning(basis: dict[str, Any]) -> str:
    """The line that flags importances resting on too few complete trials (terminal and HTML report)."""
    return (f"unreliable: these importances rest on {basis['complete_trials']} complete trials and need "
            f"{basis['reliable_from']} here (20, or 2 per searched parameter) before their ranking means much; "
            "read them as hints")


def importances(study: optuna.Study, min_trials: int = IMPORTANCE_MIN_TRIALS) -> dict[str, float]:
    """fANOVA parameter importances over complete trials, once there are enough of them."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    varied = {k for t in complete for k in t.params if len({str(c.params.get(k)) for c in complete}) > 1}
    if len(complete) < min_trials or not varied:
        return {}
    try:
        result = optuna.importance.get_param_importances(study, params=sorted(varied))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: round(float(v), 4) for k, v in result.items()}
