"""`python -m fer_sweep ...` runs the `fer-sweep` command line."""

from fer_sweep.cli import app

app(prog_name="fer-sweep")
