"""A lab shared by several front ends (the Graph emulator, the WinRM endpoint).

Every access goes through :meth:`LabHost.session`, which holds one lock, so the
two endpoints see one consistent world; when the host has a path, a session that
changed something writes the lab file back before it releases the lock.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from providers.lab import store


class LabHost:
    def __init__(self, lab, path=None):
        self.lab = lab
        self.path = Path(path) if path else None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path):
        lab, _created = store.load_or_create(path)
        return cls(lab, path)

    @contextlib.contextmanager
    def session(self, writes=True):
        """``with host.session() as lab:`` — exclusive access; saved afterwards if ``writes``."""
        with self._lock:
            yield self.lab
            if writes and self.path is not None:
                store.save(self.lab, self.path)
