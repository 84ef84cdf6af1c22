"""A real PostgreSQL server on loopback for the distributed-sweep tests (Debian's `postgresql` package).

`.ci/run` installs the package and sets FER_SWEEP_REQUIRE_POSTGRES=1, so CI fails rather than skips
when the server cannot start; elsewhere the tests skip with the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port, skip_or_fail

PASSWORD = "s3cret-Pw-4729"  # tests check this string appears in no output or file


def _skip_or_fail(reason: str):
    skip_or_fail("FER_SWEEP_REQUIRE_POSTGRES", "a PostgreSQL server", reason, "apt-get install postgresql")


def start_postgres():
    """Start a throwaway server; yields (url, stop) — the URL has a password."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _skip_or_fail("no initdb under /usr/lib/postgresql")
    bindir = Path(bins[-1]).parent
    try:
        import psycopg  # noqa: F401 - SQLAlchemy 2.1 maps postgresql:// to psycopg 3
    except ImportError:
        _skip_or_fail("psycopg is not installed")
    root = Path(tempfile.mkdtemp(prefix="fer-pg-"))
    data, pwfile, port = root / "data", root / "pw", free_port()
    pwfile.write_text(PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _skip_or_fail("running as root and there is no 'postgres' user")
        for p in (root, pwfile):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*cmd):
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "fer", f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100", "start")
        run(str(bindir / "createdb"), "-h", str(root), "-p", str(port), "-U", "fer", "sweeps")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        _skip_or_fail(f"the server did not start: {e.stderr.strip()[:300]}")

    def stop():
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    def outage(seconds: float) -> None:
        """The server stopped (fast shutdown: every connection cut) for `seconds`, then started again."""
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop")
        time.sleep(seconds)
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100", "start")

    url = f"postgresql://fer:{PASSWORD}@127.0.0.1:{port}/sweeps"
    OUTAGES[url] = outage
    return url, stop


OUTAGES: dict = {}  # url -> outage(seconds) of each server started here
