"""The fault matrix: every fault of tests/sweep/test_faults.py injected (kill -9 of `run` at 20 random moments,
kill -9 of `run` 20 times half-way through writing an epoch checkpoint, a full disk at several points, a cut journal
tail, a damaged middle record, PostgreSQL stopped for 15 s), then what each study ended with: studies lost, trials
lost or run twice to completion, and the epochs trained twice (`epochs_redone`, as `status --json` counts it: at
most one per kill, the epoch a kill cut short being resumed from the last checkpoint). Writes RESULTS.md's section.

    python benchmarks/bench_faults.py [--kills 20]

Needs root for the tmpfs (the full-disk rows are skipped otherwise) and PostgreSQL (tests/pg.py) for its row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Fault matrix (crash safety)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 moments in the kill row")
    args = parser.parse_args()
    report = Path(tempfile.mkdtemp(prefix="fer-faults-")) / "faults.jsonl"
    env = {**os.environ, "FER_SWEEP_FAULT_KILLS": str(args.kills), "FER_SWEEP_FAULT_REPORT": str(report),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/sweep/test_faults.py",
                           "-k", "not wandb_mode"], cwd=ROOT, env=env, capture_output=True, text=True)
    minutes = (time.perf_counter() - t0) / 60
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.is_file() else []
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    lines = [f"Machine: {machine()}. Run: `python benchmarks/bench_faults.py --kills {args.kills}` "
             f"({minutes:.1f} min; pytest: {summary}).", "",
             "| fault | injected | studies lost | finished / target | trials run twice | completed values lost | "
             "kills | epochs redone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lost = int(r["finished"] != r["target"])
        kills = "-" if r.get("kills") is None else r["kills"]  # epochs redone <= kills: a kill costs an epoch at most
        lines.append(f"| {r['kind']} | {r['injected']} | {lost} | {r['finished']} / {r['target']} | "
                     f"{r['duplicates']} | {r['lost_values']} | {kills} | {r.get('epochs_redone', '?')} |")
    print("\n".join(lines))
    write_section(SECTION, "\n".join(lines))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
