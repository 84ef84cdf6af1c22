"""`python -m fer_sweep.wandb_sweeps SPEC --name=value ...`: the command W&B agents run, kept at this name
because exported W&B sweep configs that users already have call it (the code is fer_sweep.sweep.wandb_backend.agent)."""

import sys

from fer_sweep.sweep.wandb_backend.agent import trial_main

if __name__ == "__main__":
    sys.exit(trial_main())
