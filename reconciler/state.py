"""Where a target's lock and journal live: the state backend.

Every apply on a target shares one lock (exclusive) and one journal (append-only,
durable before the apply goes on), wherever it runs. A backend keeps both:

* ``local`` (:class:`reconciler.journal.LocalState`): files in a folder of this machine (next to the lab
  file, or ``.syncprep/``); the lab's default;
* ``server``: files in a folder of the Entra Connect server, through the provider's
  own PowerShell session (``providers.entraconnect.statefiles``); a real target's default;
* ``azureblob``: an append blob in Azure Blob Storage, leased while the apply runs
  (``providers.azureblob``).

What an *abandoned* lock is depends on what the backend can prove:

* ``local`` and ``server``: the lock names its holder's host and process; on that same
  host, a process that no longer exists is provably gone. Such a lock is reported as
  abandoned; ``apply --resume`` takes it over (atomically, and says so), anything else
  needs ``force-unlock``. From another host nothing is provable: the lock is held.
* ``azureblob``: the holder renews a lease while it runs; a lease that expired while the
  blob still names a holder is abandoned, and only ``force-unlock`` clears it.

The core knows backends only through this interface; it never imports a transport.
"""

from __future__ import annotations

import abc
import json

from reconciler.errors import ReconcilerError

BACKENDS = ("local", "server", "azureblob")


class LockedError(ReconcilerError):
    """The target's lock is held (or abandoned): one line naming the holder."""


def utc_now():
    """The time now, as the lock and the journal record it (``2026-12-04T23:00:00Z``)."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def holder_record(command):
    """The record a new lock holder writes, in every backend: a new lock id, who holds it
    (user, host, pid), since when, and ``command``; the backend adds ``plan`` once it is known."""
    import getpass
    import os
    import socket  # only a lock needs it (plan reads the journal): issue 19
    import uuid

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"id": uuid.uuid4().hex[:8], "pid": os.getpid(), "host": socket.gethostname(), "user": user, "since": utc_now(), "command": command}


def holder_text(held):
    """``id …, user@host pid N, since T`` (and the plan's hash when the holder recorded one)."""
    plan = f", plan {held.get('plan')}" if held.get("plan") else ""
    return f"id {held.get('id')}, {held.get('user')}@{held.get('host')} pid {held.get('pid')}, since {held.get('since')}{plan}"


def is_sync_command(command):
    """Whether a lock's or a journal run's ``command`` is a sync on demand's (``sync Initial``)."""
    return str(command or "").startswith("sync ")


def lock_verb(held):
    """``sync`` if the lock ``held`` is a sync's, else ``apply``."""
    return "sync" if is_sync_command(held.get("command")) else "apply"


def may_take_over(take_over_dead, held):
    """Whether a lock taken with ``take_over_dead`` may take over the dead holder ``held``:
    ``True`` any (``apply --resume``), a verb only that verb's lock (``"sync"``: ``sync --resume``
    finishes an interrupted sync, never an apply killed before its journal knew of it)."""
    return take_over_dead is True or (bool(take_over_dead) and lock_verb(held) == take_over_dead)


def held_error(held, where, abandoned=None):
    """The refusal for a lock ``held`` in ``where``; ``abandoned`` says why it is (or None)."""
    unlock = f"'syncprep force-unlock {held.get('id')}'"
    if abandoned:
        # A sync's lock is taken over by 'sync --resume', which finishes that sync, not an apply.
        verb = lock_verb(held)
        return LockedError(
            f"the lock is abandoned ({abandoned}): {holder_text(held)} (the lock is in {where}); it is never taken silently: "
            f"'syncprep {verb} --resume' takes over a lock whose process is provably gone, or release it with {unlock}"
        )
    return LockedError(f"another apply holds the lock: {holder_text(held)} (the lock is in {where}); if it is no longer running, release it with {unlock}")


def parse_records(text):
    """The journal's records, in order (a line torn by a crash, or not one of ours, is skipped)."""
    for line in (text or "").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


class StateBackend(abc.ABC):
    """A target's lock and journal.

    .. important::

       Implementations **must**:

       * make :meth:`lock` exclusive across machines that share the backend, and record
         the holder (:func:`holder_record`; the plan's hash once known);
       * never take a lock that is held or abandoned, except as :meth:`lock` documents
         for ``take_over_dead``;
       * make :meth:`append` durable (fsync, or the backend's own guarantee) before it
         returns, and never rewrite what was appended.
    """

    #: "local", "server" or "azureblob"
    name = ""

    @abc.abstractmethod
    def where(self):
        """One line naming where the lock and journal live (no secrets)."""

    @abc.abstractmethod
    def lock(self, command, take_over_dead=False):
        """A context manager holding the lock; ``LockedError`` when it is held or abandoned.

        The object it gives has ``id``, ``taken_over`` (the dead holder's record, or None)
        and ``record_plan(hash)``. ``take_over_dead`` (``apply --resume``: True; ``sync --resume``:
        ``"sync"``) takes over a lock whose holder is provably gone, where the backend can prove
        that, and only one :func:`may_take_over` allows (else the usual "abandoned" refusal)."""

    @abc.abstractmethod
    def read_lock(self):
        """The holder's record, or None when the target is not locked."""

    @abc.abstractmethod
    def force_unlock(self, lock_id):
        """Release the lock if its id is ``lock_id``; return the record released."""

    @abc.abstractmethod
    def append(self, record):
        """Append one journal record; durable when this returns."""

    @abc.abstractmethod
    def read_journal(self):
        """The journal's text ('' when there is none)."""

    def close(self):
        """Release what the backend holds open (a lease renewer, a client)."""
