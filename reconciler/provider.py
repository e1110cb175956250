"""The contracts between the core and the systems it reconciles.

There are two sides, each behind a small interface:

* :class:`ServerProvider`, the Entra Connect server (rules, scheduler, connectors, cycles);
* :class:`TenantProvider`, the Microsoft 365 tenant (users, licences, mailboxes).

A :class:`Target` pairs one of each. The lab implements both over one simulated
world; the real providers implement them over PowerShell remoting and Graph.

.. important::

   Implementations **must**:

   * keep ``observe`` read-only;
   * report a value they could not read as unknown (``None`` or
     :attr:`~reconciler.model.MailboxState.UNKNOWN`), never as absent;
   * raise :class:`~reconciler.errors.ProviderError` (or a subclass) with one
     readable line for anything the user must act on;
   * never put secrets in an error, a log line or an :class:`Outcome`.

   Implementations **must not** print, or carry out an operation that is not in
   their ``SUPPORTS``.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Iterable

from reconciler.classes import frozen
from reconciler.operations import SERVER_OPERATIONS, TENANT_OPERATIONS
from reconciler.progress import nothing


class _Provider(abc.ABC):
    #: A short name shown in plans ("entra-connect", "tenant").
    name: ClassVar[str]
    #: The operation classes this provider can apply.
    SUPPORTS: ClassVar[frozenset[type]]
    #: Called with a :class:`~reconciler.progress.Progress` now and then during a long wait
    #: (a sync cycle, mailboxes, a licence batch); the apply engine sets it for each step.
    #: It may be called from a provider's worker thread.
    on_progress = staticmethod(nothing)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # ABCMeta computes __abstractmethods__ only after this hook, so look for them here.
        abstract = any(getattr(getattr(cls, attr, None), "__isabstractmethod__", False) for attr in dir(cls))
        if not abstract and not isinstance(getattr(cls, "SUPPORTS", None), frozenset):
            raise TypeError(f"{cls.__name__}: concrete provider without a SUPPORTS frozenset")

    @abc.abstractmethod
    def apply(self, operation):
        """Carry out one operation and return an :class:`~reconciler.operations.Outcome`.

        Raise :class:`~reconciler.errors.ProviderError` when it could not be done.
        A tenant operation over several users goes ahead for the others when one
        user fails, and lists that user in ``Outcome.failures``.
        """

    def describe(self):
        """One line naming where this provider points (no secrets)."""
        return self.name


class ServerProvider(_Provider):
    """The Entra Connect server."""

    name = "entra-connect"

    @abc.abstractmethod
    def observe(self):
        """Return the :class:`~reconciler.model.ServerState`."""

    def scripts_for(self, operation):
        """The exact text the provider will run for ``operation``, if it runs scripts."""
        return None

    def connector_space(self, joins=False):
        """Every object of the AD connectors' connector spaces, as ``(connector identifier, DN,
        object type, is a connector, metaverse id)``; the metaverse id (the object's
        ConnectedMVObjectId, "" when not joined) is needed only with ``joins``. None: unknown
        (the read failed, or this provider cannot read it)."""
        return None

    #: Why the last :meth:`connector_space` read failed (said in the plan, free of secrets), or None.
    connector_space_error = None

    def count_objects(self):
        """The AD connectors' objects per container and type (a tuple of
        :class:`~reconciler.model.ObjectCount`), read only for a plan that changes the
        scope: groups, contacts and devices leave it with the users. None: unknown."""
        from reconciler.joins import survey

        return survey(self.connector_space())[0]


class TenantProvider(_Provider):
    """The Microsoft 365 tenant."""

    name = "tenant"

    @abc.abstractmethod
    def observe(self, selection):
        """Return the :class:`~reconciler.model.TenantState` for a :class:`UserSelection`.

        Users outside the selection may be left out; SKUs are always complete.
        Mailbox state needs to be known only for licensed users in the selection.
        """


@frozen
class UserSelection:
    """The users a desired state talks about: by UPN and by OU distinguished name."""

    upns: frozenset[str] = frozenset()
    ous: tuple[str, ...] = ()
    #: Licensing groups (display name or object id) to read, with their licences and members.
    groups: tuple[str, ...] = ()

    def matches(self, user):
        return user.upn.lower() in self.upns or any(user.in_ou(ou) for ou in self.ous)

    @classmethod
    def union(cls, selections: Iterable["UserSelection"]):
        upns, ous, groups = set(), [], []
        for s in selections:
            upns |= s.upns
            ous.extend(ou for ou in s.ous if ou not in ous)
            groups.extend(g for g in s.groups if g not in groups)
        return cls(frozenset(upns), tuple(ous), tuple(groups))


class Target:
    """A server provider and a tenant provider that together make one environment.

    ``close()`` releases connections and, for the lab, writes its state back.
    """

    def __init__(self, server, tenant, description=""):
        for provider, allowed in ((server, SERVER_OPERATIONS), (tenant, TENANT_OPERATIONS)):
            unknown = provider.SUPPORTS - allowed
            if unknown:
                raise TypeError(f"{type(provider).__name__} claims unknown operations {sorted(t.__name__ for t in unknown)}")
        self.server = server
        self.tenant = tenant
        self.description = description or f"{server.describe()} + {tenant.describe()}"

    def provider_for(self, operation):
        for provider in (self.server, self.tenant):
            if type(operation) in provider.SUPPORTS:
                return provider
        raise TypeError(f"no provider of this target supports {type(operation).__name__}")

    @property
    def key(self):
        """Names this environment for its lock and journal."""
        return self.description

    def state_dir(self):
        """Where the lock and the journal of this target live."""
        from pathlib import Path

        return Path(".syncprep")

    def now(self):
        """The target's clock (an aware datetime): wall time, or the lab's time."""
        import datetime as dt

        return dt.datetime.now(dt.timezone.utc)

    def sleep(self, seconds):
        """Back off between retries."""
        import time

        time.sleep(seconds)

    def refresh(self):
        """Forget anything cached before the lock was taken (the lab rereads its file)."""

    def checkpoint(self):
        """Called by the apply engine after every step (the lab persists here)."""

    #: The lock and journal's backend (:mod:`reconciler.state`), set by whoever opens the target.
    state = None

    def close(self):
        """Release the providers' connections (a WinRM shell, an HTTP client) and the state backend."""
        state, self.state = self.state, None
        if state is not None:
            state.close()
        for provider in (self.server, self.tenant):
            close = getattr(provider, "close", None)
            if close is not None:
                close()
