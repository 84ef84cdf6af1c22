"""A real single-node Slurm cluster on loopback for the scheduler tests (Debian's `slurm-wlm` and `munge`).

`munged` with a fresh key, `slurmctld` and `slurmd` on free ports, their state, spool, logs and sockets under
one temporary folder: nothing of the machine's own Slurm or munge is used or touched. Commands reach this
cluster through SLURM_CONF (in `Cluster.env`, which jobs inherit through sbatch). The node declares more CPUs
than the machine has (with `config_overrides`), so three array tasks and a resubmitted array all run at once,
and four fake GPUs (/dev/null and the like as their device files), so a script that asks for `--gres=gpu:1`
runs unchanged.

`.ci/run` installs the packages and sets FER_SWEEP_REQUIRE_SLURM=1, so CI fails rather than skips when the
cluster cannot start; elsewhere the tests skip with the reason (not root, packages missing, a daemon that died).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port, skip_or_fail

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo")
NODE = "fernode"
KILL_WAIT_S = 10  # SIGTERM to SIGKILL when a job is cancelled or runs past its limit (Slurm's default is 30)


def _skip_or_fail(reason: str):
    skip_or_fail("FER_SWEEP_REQUIRE_SLURM", "a single-node Slurm cluster", reason,
                 "apt-get install slurm-wlm munge, as root")


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)),
                                      None)


@dataclass
class Cluster:
    root: Path
    env: dict = field(default_factory=dict)  # os.environ + SLURM_CONF: what Slurm commands and jobs run with
    pids: list = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        done = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, script: Path, *options: str, env: dict | None = None, cwd: Path | None = None) -> str:
        """Submit `script` with `options` (they override its #SBATCH lines); returns the job id."""
        done = subprocess.run(["sbatch", "--parsable", *options, str(script)], env={**self.env, **(env or {})},
                              cwd=cwd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def jobs(self, job: str) -> list[dict]:
        """Every job of `job` (an array's tasks too) as scontrol shows it: JobId, ArrayTaskId, JobState, Restarts..."""
        out = self.run("scontrol", "-o", "show", "job", job, check=False)
        found = []
        for line in out.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if fields.get("JobId"):
                found.append(fields)
        return found

    def wait(self, job: str, timeout: float,
             states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                     "DEADLINE", "PREEMPTED")) -> list[dict]:
        """Wait until every job of `job` has ended (an array's pending remainder included); returns them."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            jobs = self.jobs(job)
            if (jobs and all(j["JobState"] in states for j in jobs)
                    and not any("[" in j.get("ArrayTaskId", "") for j in jobs)):
                return jobs
            time.sleep(0.5)
        raise AssertionError(f"job {job} still not done after {timeout:.0f} s: "
                             f"{[(j['JobId'], j['JobState'], j.get('Reason')) for j in self.jobs(job)]}\n{self.logs()}")

    def logs(self) -> str:
        tails = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                tails.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(tails)

    def stop(self) -> None:
        self.run("scancel", "--partition=debug", check=False)  # jobs first, or their slurmstepd outlive slurmd
        until = time.monotonic() + KILL_WAIT_S + 10
        while self.run("squeue", "-h", "-t", "RUNNING,COMPLETING", check=False).strip() and time.monotonic() < until:
            time.sleep(0.3)
        self.run("scontrol", "shutdown", check=False, timeout=30)
        for pid in reversed(self.pids):  # the daemons this fixture started, by their own pid files
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        time.sleep(0.5)
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _pid(path: Path, timeout: float = 15) -> int:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"{path.name} never appeared")


def start_slurm() -> Cluster:
    """Start munged, slurmctld and slurmd on this machine; returns the Cluster (call .stop() when done)."""
    missing = [n for n in (*DAEMONS, *COMMANDS) if not _which(n)]
    if missing:
        _skip_or_fail(f"{', '.join(missing)} not installed")
    if os.geteuid() != 0:
        _skip_or_fail("not root (the test cluster runs slurmd and its jobs as root)")
    root = Path(tempfile.mkdtemp(prefix="fer-slurm-"))
    root.chmod(0o755)  # munged wants every folder above its socket searchable by all
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=fertest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.sock,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig=/dev/null
ReturnToService=2
MinJobAge=600
KillWait={KILL_WAIT_S}
GresTypes=gpu
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=16 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text("".join(f"NodeName={NODE} Name=gpu File={dev}\n"  # any device file will do
                                            for dev in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")))
    cluster = Cluster(root, env={**os.environ, "SLURM_CONF": str(conf)})
    try:
        cluster.run(_which("munged"), f"--key-file={key}", f"--socket={root}/munge.sock",
                    f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed")
        cluster.pids.append(_pid(root / "munged.pid"))
        cluster.run(_which("slurmctld"), "-i")
        cluster.pids.append(_pid(root / "slurmctld.pid"))
        cluster.run(_which("slurmd"), "-N", NODE)
        cluster.pids.append(_pid(root / "slurmd.pid"))
        until = time.monotonic() + 30
        while "idle" not in cluster.run("sinfo", "-h", "-o", "%T", check=False):
            if time.monotonic() > until:
                raise RuntimeError(f"node {NODE} never became idle: {cluster.run('sinfo', '-h', check=False)}")
            time.sleep(0.3)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
        logs = cluster.logs()
        cluster.stop()
        _skip_or_fail(f"the cluster did not start: {e}\n{logs}"[:1500])
    return cluster
