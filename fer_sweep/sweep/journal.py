"""The study journal (Optuna's JSON-lines journal file) made safe against torn writes and damaged records.

Optuna's `JournalFileBackend` appends a batch of records with one write, under a lock file (a symlink beside the
journal), and its reader skips a cut *last* line. Two faults still cost the whole study:
- a crash or a full disk mid-append leaves a cut last record; the next append does not check that the file ends
  with a newline, so its first record is glued onto the cut one;
- from then on that line never parses, and Optuna's reader raises on every later read: every command fails.

`HealingJournal` closes both. Before it appends (under the same lock Optuna's writers take, so a live writer's
append is never mistaken for a cut one), a cut last record is moved aside into `<journal>.torn` (a JSON line with
its byte offset and text) and the journal truncated to its last complete line. Its reader skips records that do
not parse, recovering any whole record glued behind a cut one, and reports what it skipped; `rewrite_clean`
(`fer-sweep repair`) writes the journal again without them, keeping a backup. Record numbers count only the
records read, the same in every process, so readers in different processes agree on the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Iterator, Optional

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from fer_sweep.config import Notice
from fer_sweep.files import atomic_path, naming
from fer_sweep.sweep.signals import uninterrupted

RECORD_START = b'{"op_code":'  # every record Optuna writes starts so (json.dumps with compact separators)
TORN_SUFFIX = ".torn"
# A writer holds the journal's lock for one write + fsync (milliseconds); a lock left by a killed writer is broken
# after this long without change (Optuna's default is 30 s).
LOCK_GRACE_S = 10
# Test hook, set by the fault tests (tests/support/): seconds to pause in the middle of every append, so a kill can
# land inside one and leave half a batch, as a crash mid-append does. 0 in use.
write_delay_s = 0.0
_TRIAL_ID = re.compile(rb'"trial_id":\s*(\d+)')


@contextlib.contextmanager
def _locked(lock) -> Iterator[None]:
    """Hold the journal's lock (Optuna's own lock file, what every writer of the journal takes); a Ctrl-C or SIGTERM
    meanwhile is raised once it is released (signals.uninterrupted), so it never leaves the lock behind."""
    with uninterrupted():
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


@dataclass
class Damage:
    """What a read skipped: damaged lines, their byte offsets, the trial ids they named, the records recovered."""

    lines: int = 0
    offsets: list[int] = field(default_factory=list)
    trial_ids: set[int] = field(default_factory=set)
    recovered: int = 0


def _parse_line(line: bytes) -> tuple[list[dict], bool]:
    """The records of one complete line and whether it was damaged: a whole record parses as itself; a damaged
    line yields the whole records glued behind its cut prefix (an append onto a torn tail), if any."""
    try:
        return [json.loads(line)], False
    except ValueError:
        pass
    recovered, start = [], line.find(RECORD_START, 1)
    while start != -1:
        try:
            recovered.append(json.loads(line[start:]))
            break
        except ValueError:
            start = line.find(RECORD_START, start + 1)
    return recovered, True


class HealingJournal(JournalFileBackend):
    """Optuna's journal file backend with a torn tail healed before every append and damaged records skipped. It
    keeps its own path and lock (`path`, `lock`: the lock it hands to Optuna's backend) rather than reading the
    backend's private attributes."""

    def __init__(self, file_path: str):
        self.path, self.lock = file_path, JournalFileSymlinkLock(file_path, grace_period=LOCK_GRACE_S)
        super().__init__(file_path, self.lock)
        self._starts = {0: 0}  # record number -> byte offset of the line it starts (resume points for reads)
        self._damaged: dict[int, tuple[set[int], int]] = {}  # byte offset -> (trial ids named, records recovered)
        self._warned = 0
        self.healed = heal_tail(Path(file_path), self.lock)

    @property
    def damage(self) -> Damage:
        d = Damage(lines=len(self._damaged), offsets=sorted(self._damaged))
        for ids, recovered in self._damaged.values():
            d.trial_ids |= ids
            d.recovered += recovered
        return d

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        """Records from number `log_number_from` on; records are numbered as read (damaged lines skipped, recovered
        records counted), the same in every process."""
        number = log_number_from if log_number_from in self._starts else 0
        with open(self.path, "rb") as f:
            offset = self._starts[number]
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            for line in f:
                if offset + len(line) > size or not line.endswith(b"\n"):
                    break  # written after we looked, or a cut last line a writer is finishing: read next time
                records, damaged = _parse_line(line)
                if damaged and offset not in self._damaged:
                    cut = line.find(RECORD_START, 1) if records else -1  # the damaged part: before a recovered record
                    named = {int(m) for m in _TRIAL_ID.findall(line[:cut] if cut != -1 else line)}
                    self._damaged[offset] = (named, len(records))
                offset += len(line)
                for record in records:
                    if number >= log_number_from:
                        yield record
                    number += 1
                self._starts[number] = offset
        if len(self._damaged) > self._warned:
            self._warned = len(self._damaged)
            warnings.warn(Notice(damage_line(self.path, self.damage)), stacklevel=2)

    def all_records(self) -> list[dict[str, Any]]:
        return list(self.read_logs(0))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        with _locked(self.lock):
            torn = _heal_locked(Path(self.path))
            if torn is not None:
                warnings.warn(Notice(torn_line(self.path, torn)), stacklevel=2)
            with naming(Path(self.path)), open(self.path, "ab") as f:
                if write_delay_s:  # test hook: a kill in here leaves half a batch, as a crash mid-append does
                    f.write(text[:len(text) // 2])
                    f.flush()
                    time.sleep(write_delay_s)
                    text = text[len(text) // 2:]
                f.write(text)
                f.flush()
                os.fsync(f.fileno())


def heal_tail(path: Path, lock) -> Optional[int]:
    """Under the journal's lock: move a cut last record aside; returns its byte offset, or None if the file is whole."""
    if not path.is_file() or path.stat().st_size == 0 or _ends_with_newline(path):
        return None  # the usual case, seen without the lock; a cut tail is checked again under it
    try:
        with _locked(lock):
            offset = _heal_locked(path)
    except OSError:  # e.g. the disk is still full: reading needs no healing (a cut last line is never read), and
        return None  # the next append heals it under the lock, or fails with the full disk's own message
    if offset is not None:
        warnings.warn(Notice(torn_line(str(path), offset)), stacklevel=2)
    return offset


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _heal_locked(path: Path) -> Optional[int]:
    """(The lock is held.) If the file does not end with a newline, append its last partial line to <path>.torn as
    {"offset", "text"} and truncate the journal to its last complete line; returns that offset."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        start = max(0, size - (1 << 16))
        while True:  # find the last newline, reading backwards in 64 KiB steps
            f.seek(start)
            chunk = f.read(size - start)
            cut = chunk.rfind(b"\n")
            if cut != -1 or start == 0:
                break
            start = max(0, start - (1 << 16))
        offset = start + cut + 1 if cut != -1 else 0
        f.seek(offset)
        tail = f.read()
        with open(f"{path}{TORN_SUFFIX}", "a") as torn:
            torn.write(json.dumps({"offset": offset, "bytes": len(tail), "moved_at": time.time(),
                                   "text": tail.decode("utf-8", "replace")}) + "\n")
            torn.flush()
            os.fsync(torn.fileno())
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())
    return offset


def torn_line(path: str, offset: int) -> str:
    return (f"{path}: its last record was cut at byte {offset} (a crash or a full disk mid-write): moved aside to "
            f"{Path(path).name}{TORN_SUFFIX}; the study goes on from the records before it")


def damage_line(path: str, damage: Damage) -> str:
    ids = ", ".join(map(str, sorted(damage.trial_ids))) or "none named"
    recovered = f", {damage.recovered} whole record(s) recovered from them" if damage.recovered else ""
    return (f"{path}: skipped {damage.lines} damaged record(s) at byte(s) {', '.join(map(str, damage.offsets[:5]))}"
            f"{'...' if len(damage.offsets) > 5 else ''} (trial ids {ids}{recovered}); "
            "`fer-sweep repair` rewrites it clean")


def rewrite_clean(path: Path) -> dict[str, Any]:
    """Rewrite the journal with only the records that read (damaged lines dropped, glued records kept), under its
    lock, after copying it to <path>.bak-<time>; returns what it did. The study must not be running."""
    backend = HealingJournal(str(path))
    with _locked(backend.lock):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Notice)  # what it skips is this function's answer
            records = backend.all_records()
        damage = backend.damage
        if not damage.lines:
            return {"path": str(path), "records": len(records), "damaged": 0, "backup": None}
        backup = path.with_name(f"{path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        with atomic_path(backup) as tmp:
            tmp.write_bytes(path.read_bytes())
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records))
                f.flush()
                os.fsync(f.fileno())
    return {"path": str(path), "records": len(records), "damaged": damage.lines, "recovered": damage.recovered,
            "trial_ids": sorted(damage.trial_ids), "backup": str(backup)}
