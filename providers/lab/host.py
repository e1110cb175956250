"""A lab shared by several front ends (the Graph emulator, the WinRM endpoint).

Every access goes through :meth:`LabHost.session`, which holds one lock, so the
two endpoints see one consistent world; when the host has a path, a session that
changed something is saved (appended to the lab file's change log) before it
releases the lock, and :meth:`LabHost.close` folds the log into the lab file.

A session that changed nothing is not saved: the lab file is not touched. A session whose
body raised is saved all the same when it changed something. Lab time
that passed meanwhile (``speed``) is saved with the next change, or at :meth:`close`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from providers.lab import store


class LabHost:
    """``speed`` (lab minutes per real second) lets lab time pass while served, so a
    sync cycle started over WinRM finishes and a mailbox provisions while a client
    polls; ``None`` keeps the clock still except where a caller advances it."""

    def __init__(self, lab, path=None, speed=None, monotonic=time.monotonic):
        self.lab = lab
        self.path = Path(path) if path else None
        self.speed = speed
        self._monotonic = monotonic
        self._last = monotonic()
        self._carry = 0.0
        self._lock = threading.RLock()
        self._time_unsaved = False  # lab time passed in a session that was not saved

    @classmethod
    def open(cls, path, speed=None):
        lab, _created = store.load_or_create(path)
        return cls(lab, path, speed)

    def _catch_up(self):
        now = self._monotonic()
        elapsed, self._last = now - self._last, now
        if self.speed:
            self._carry += elapsed * self.speed
            whole = int(self._carry)
            if whole:
                self._carry -= whole
                self.lab.advance(whole)
                self._time_unsaved = True

    def close(self):
        """Saves the lab time not saved yet, then folds the change log the sessions' saves
        appended into the lab file (store.compact)."""
        if self.path is not None:
            with self._lock:
                if self._time_unsaved:
                    self._save()
                store.compact(self.path)

    def _save(self):
        store.save(self.lab, self.path)
        self._time_unsaved = False

    @contextlib.contextmanager
    def session(self, writes=True):
        """``with host.session() as lab:`` — exclusive access; saved afterwards if ``writes``:
        True, False, or a callable asked when the body is done (a script that changed
        nothing is not saved).

        The body is done however it ends: a script that changed the lab and then failed
        (every lab cmdlet's error ends the script), an interrupt, a closed generator — its
        change was served to the clients, so it is saved before the lock is released, and
        the exception goes on."""
        with self._lock:
            self._catch_up()
            try:
                yield self.lab
            finally:
                if self.path is not None and (writes() if callable(writes) else writes):
                    self._save()
