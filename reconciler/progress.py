"""Progress on long waits: a full sync (hours), mailbox provisioning (up to an hour), a
licence batch (minutes under Graph's write limit).

A provider reports a wait as :class:`Progress` values through its ``on_progress``
callback, which the apply engine relays to its ``on_event`` as ``Event("progress", step,
result=progress)``. Nothing here prints: the CLI renders them (``reconciler.render``).
A callback may be called from a provider's worker thread (Graph runs its own loop).
"""

from __future__ import annotations

from attrs import evolve

from reconciler.classes import frozen


@frozen
class Progress:
    """One look at a wait: what is waited for, for how long, counts, and time left if known."""

    #: What is waited for: "Initial sync cycle", "mailboxes to appear", "licences assigned".
    what: str
    #: Seconds since the wait began.
    elapsed: float
    done: int | None = None
    total: int | None = None
    #: What ``done`` and ``total`` count: "connectors", "mailboxes", "licences".
    unit: str = ""
    #: Estimated seconds left; None where it cannot be estimated.
    remaining: float | None = None
    #: Still waiting for what, in a few words ("ADConnector (Full Synchronization)").
    waiting_for: str = ""

    def estimated(self, expected=None):
        """With ``remaining`` filled in from ``expected`` seconds (a full sync is expected to take
        as long as the last one), where the provider had no estimate of its own."""
        if self.remaining is not None:
            return self
        if expected is not None and expected > self.elapsed:
            return evolve(self, remaining=expected - self.elapsed)
        return self

    def line(self):
        """Plain text: "Initial sync cycle: 1 of 2 connectors, 12 min elapsed, about 8 min left (waiting for: ...)"."""
        counts = []
        if self.done is not None:
            counts.append(f"{self.done:,} of {self.total:,} {self.unit}" if self.total is not None else f"{self.done:,} {self.unit}")
        counts.append(f"{duration(self.elapsed)} elapsed")
        if self.remaining is not None:
            counts.append(f"about {duration(self.remaining)} left")
        text = f"{self.what}: {', '.join(counts)}"
        if self.waiting_for:
            text += f" (waiting for {self.waiting_for})"
        return text


def rate_estimate(elapsed, done, total):
    """Seconds left at the rate so far, or None before anything is done."""
    if not done or total is None:
        return None
    return max(elapsed / done * (total - done), 0.0)


def duration(seconds):
    """"45 s", "12 min", "2 h 05 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def nothing(_progress):
    """The default ``on_progress``: nobody is listening."""
