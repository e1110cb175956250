"""One observation of both sides of a target, for what a desired state talks about.

Its own module so that ``plan`` reads the world without loading the apply engine."""

from __future__ import annotations

from attrs import evolve

from reconciler.model import Observed
from reconciler.plan import selection_for


def observe(target, desired, counts=True):
    """One observation of both sides, for what ``desired`` talks about. ``counts=False``: without
    the connector space's object counts, which only planning a scope change reads (apply's
    re-observations, of a step's effect or of the tenant, do not)."""
    server = target.server.observe()
    if counts and (desired.scope is not None or desired.purge is not None):
        # Only a scope change needs them (what leaves the scope besides users), and they cost a
        # pass over the connector space.
        server = evolve(server, object_counts=target.server.count_objects())
    return Observed(server=server, tenant=target.tenant.observe(selection_for(desired, server)))
