"""The apply journal and the target lock: what makes an apply resumable and exclusive.

Journal: one JSON line per event (run start, step start, step end, run end),
each written durably through the target's state backend (:mod:`reconciler.state`;
here the local one, :class:`LocalState`: fsynced) before the apply goes on, so after any crash the file
says which run was cut short, in which step, and whether it had paused the
scheduler.

Lock: one apply per target at a time. The lock file is created exclusively and
holds who took it (lock id, process, host, user, since, command); a second apply
is refused with that, and ``syncprep force-unlock ID`` releases a lock whose
holder is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from reconciler.classes import frozen
from reconciler.errors import ReconcilerError
from reconciler.files import PRIVATE, make_private_dir, open_append_private, write_private
from reconciler.processes import exclusive, pid_alive
from reconciler.state import LockedError, StateBackend, held_error, holder_record, may_take_over, parse_records
from reconciler.state import utc_now as _now

__all__ = ["LocalState", "JournalFile", "Journal", "TargetLock", "LockedError", "last_interrupted", "purge_owed", "read_lock", "force_unlock", "target_slug"]


def target_slug(key):
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def fsync_append(path, record):
    # 0600 (it names the steps' users), and never through a symlink.
    with open_append_private(path) as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@frozen
class Interrupted:
    """A run the journal shows unfinished: cut short (``killed``), or stopped by a
    failure or the window's end."""

    run: str
    started: str
    step: str | None
    scheduler_paused: bool
    command: str
    killed: bool = True
    #: The export deletion threshold the run raised and still owes back (None: nothing owed).
    threshold_owed: int | None = None


_UNCHANGED = object()


def _store(source):
    """A journal source: a state backend, or the path of a local journal file (:class:`JournalFile`)."""
    return JournalFile(source) if isinstance(source, (str, os.PathLike)) else source


class Journal:
    """``source``: the target's state backend (:mod:`reconciler.state`), or a journal file's path."""

    def __init__(self, source):
        self.store = _store(source)
        #: The journal file, for the local backend (None elsewhere).
        self.path = self.store.journal_path if isinstance(self.store, JournalFile) else None
        self.run = None
        self._paused = False
        self._threshold_owed = None

    def start(self, plan_checksum, command, steps, threshold_owed=None):
        """``threshold_owed``: a threshold an interrupted run raised and this one now owes back."""
        self.run = uuid.uuid4().hex[:12]
        self._threshold_owed = threshold_owed
        self._write({"event": "run-start", "checksum": plan_checksum, "command": command, "steps": steps})

    def step_started(self, step_id):
        self._write({"event": "step-start", "step": step_id})

    def step_ended(self, step_id, status, detail="", scheduler_paused=None, threshold_owed=_UNCHANGED):
        if scheduler_paused is not None:
            self._paused = scheduler_paused
        if threshold_owed is not _UNCHANGED:
            self._threshold_owed = threshold_owed
        self._write({"event": "step-end", "step": step_id, "status": status, "detail": detail[:500]})

    def end(self, outcome):
        self._write({"event": "run-end", "outcome": outcome})

    def record_purge(self, users):
        """Before the purge runs: who is purged (object id, UPN) and how each was licensed,
        owed a restore until :meth:`settle_purge` names them (see reconciler.recreated)."""
        self._write({"event": "purge-record", "users": users})

    def settle_purge(self, upns):
        """These purged users are licensed again as before: nothing is owed to them any more."""
        self._write({"event": "purge-settled", "upns": sorted(upns)})

    def purge_owed(self):
        return purge_owed(self.store)

    def _write(self, record):
        self.store.append({**record, "run": self.run, "time": _now(), "scheduler_paused": self._paused, "threshold_owed": self._threshold_owed})

    def last_interrupted(self):
        """The last run if it did not finish, else None (a torn last line is ignored)."""
        return last_interrupted(self.store)


def last_interrupted(source):
    """The last run of the journal (a backend, or a file's path) if it did not finish its plan, else None."""
    runs = {}
    order = []
    for record in parse_records(_store(source).read_journal()):
        run = record.get("run")
        if run not in runs:
            runs[run] = {"started": record.get("time"), "step": None, "paused": False, "ended": False, "command": record.get("command", "")}
            order.append(run)
        state = runs[run]
        state["paused"] = bool(record.get("scheduler_paused"))
        owed = record.get("threshold_owed")
        state["threshold_owed"] = owed if isinstance(owed, int) and not isinstance(owed, bool) else None
        if record.get("event") == "step-start":
            state["step"] = record.get("step")
        elif record.get("event") == "run-end":
            state["ended"] = True
            state["outcome"] = record.get("outcome")
    if not order:
        return None
    state = runs[order[-1]]
    if state["ended"] and state.get("outcome") == "done":
        return None
    return Interrupted(
        order[-1], state["started"], state["step"], state["paused"], state["command"], killed=not state["ended"], threshold_owed=state.get("threshold_owed")
    )


def purge_owed(source):
    """The journal's purge records not settled yet, one entry per UPN (the latest), across runs."""
    owed = {}
    for record in parse_records(_store(source).read_journal()):
        if record.get("event") == "purge-record" and isinstance(record.get("users"), list):
            for user in record["users"]:
                if isinstance(user, dict) and isinstance(user.get("upn"), str):
                    owed[user["upn"].lower()] = user
        elif record.get("event") == "purge-settled" and isinstance(record.get("upns"), list):
            for upn in record["upns"]:
                if isinstance(upn, str):
                    owed.pop(upn.lower(), None)
    return tuple(owed.values())


class TargetLock:
    """``with TargetLock(path, command):`` — exclusive, or :class:`LockedError` in one line."""

    def __init__(self, path, command, take_over_dead=False):
        self.path = Path(path)
        self.info = holder_record(command)
        self.id = self.info["id"]
        #: ``apply --resume`` takes over a lock whose process is provably gone (same host, no such
        #: pid), ``sync --resume`` only a sync's: see :func:`reconciler.state.may_take_over`.
        self.take_over_dead = take_over_dead
        self.taken_over = None

    def __enter__(self):
        make_private_dir(self.path.parent)
        staged = self._stage(self.info)
        try:
            try:
                # The lock appears whole or not at all: a reader never sees it half-written.
                os.link(staged, self.path)
                return self
            except FileExistsError:
                pass
            held = read_lock(self.path)
            if held is None:
                raise LockedError(f"the target is locked ({self.path} exists but cannot be read); remove it if no apply runs")
            if not _alive(held) and may_take_over(self.take_over_dead, held):
                self.taken_over = self._take_over(held, staged)
                return self
            gone = None if _alive(held) else f"pid {held.get('pid')} on {held.get('host')}, this host: that process is gone"
            raise held_error(held, self.path.parent, gone)
        finally:
            staged.unlink(missing_ok=True)

    def record_plan(self, plan_hash):
        """Name the plan this apply carries out in its lock (written whole, as the lock was)."""
        held = read_lock(self.path)
        if held and held.get("id") == self.id:
            write_private(self.path, json.dumps({**held, "plan": plan_hash}))

    def _stage(self, info):
        """The lock's content, written and fsynced to a private file next to it."""
        staged = self.path.with_name(f".{self.path.name}.{self.id}.new")
        fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), PRIVATE)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return staged

    def _take_over(self, dead, staged):
        """Replace the lock of a dead holder by ours: one taker at a time, each checking
        under the guard that the lock is still that dead holder's, so of several
        ``--resume`` runs started together exactly one holds the lock."""
        guard_path = self.path.with_name(self.path.name + ".takeover")
        fd = os.open(guard_path, os.O_CREAT | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), PRIVATE)
        try:
            with exclusive(fd):
                now = read_lock(self.path)
                if now is None or now.get("id") != dead.get("id") or _alive(now):
                    raise LockedError("another apply took over the same stale lock first; nothing was changed")
                keep = self.path.with_name(f"{self.path.name}.dead-{dead.get('id')}")
                write_private(keep, json.dumps(dead))
                os.replace(staged, self.path)
                return dead
        finally:
            os.close(fd)  # releases the guard

    def __exit__(self, *exc):
        held = read_lock(self.path)
        if held and held.get("id") == self.id:
            self.path.unlink(missing_ok=True)
        return False


def read_lock(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def force_unlock(path, lock_id):
    held = read_lock(path)
    if held is None:
        raise ReconcilerError("no lock is held on this target")
    if held.get("id") != lock_id:
        raise ReconcilerError(f"the lock's id is {held.get('id')}, not {lock_id}: nothing released")
    Path(path).unlink(missing_ok=True)
    return held


def _alive(held, platform=None):
    import socket

    if held.get("host") != socket.gethostname():
        return True  # cannot tell from here
    return pid_alive(held.get("pid"), platform=platform)


class JournalFile:
    """A journal file of this machine, by its path: appended durably (fsynced, 0600, never
    through a symlink). The journal half of :class:`LocalState`, and what a :class:`Journal`
    given a path reads and writes."""

    name = "local"

    def __init__(self, path):
        self.journal_path = Path(path)

    def append(self, record):
        fsync_append(self.journal_path, record)

    def read_journal(self):
        try:
            return self.journal_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class LocalState(JournalFile, StateBackend):
    """Files ``<slug>.lock`` and ``<slug>.journal`` in ``folder`` ."""

    def __init__(self, folder, slug):
        self.folder = Path(folder)
        self.lock_path = self.folder / f"{slug}.lock"
        super().__init__(self.folder / f"{slug}.journal")

    def where(self):
        return f"{self.folder} (local)"

    def lock(self, command, take_over_dead=False):
        return TargetLock(self.lock_path, command, take_over_dead=take_over_dead)

    def read_lock(self):
        return read_lock(self.lock_path)

    def force_unlock(self, lock_id):
        return force_unlock(self.lock_path, lock_id)
