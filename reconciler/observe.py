"""One observation of both sides of a target, for what a desired state talks about.

Its own module so that ``plan`` reads the world without loading the apply engine."""

from __future__ import annotations

from attrs import evolve

from reconciler.joins import survey
from reconciler.model import Observed
from reconciler.redact import scrub
from reconciler.plan import selection_for


def observe(target, desired, counts=True):
    """One observation of both sides, for what ``desired`` talks about. ``counts=False``: without
    the connector space (its object counts, which only planning a scope change reads, and its
    joins, which only predicting licences or a scope change with several AD forests reads; apply's
    re-observations, of a step's effect or of the tenant, read neither)."""
    server = target.server.observe()
    # Only a scope change needs the counts (what leaves the scope besides users), and only
    # licences with several AD forests the joins (which forests bring each user's GUID); both
    # cost a pass over the connector space, made once for both.
    want_counts = desired.scope is not None or desired.purge is not None
    # A scope change with several forests asks the joins too: an object whose person stays
    # through another forest's object deletes nothing in the cloud.
    want_joins = len(server.connectors_of_kind("AD")) > 1 and (bool(desired.licenses) or want_counts)
    if counts and (want_counts or want_joins):
        entries = target.server.connector_space(joins=want_joins)
        found, joins = survey(entries, want_counts, want_joins)
        error = scrub(target.server.connector_space_error) if entries is None and target.server.connector_space_error else None
        server = evolve(server, object_counts=found, joins=joins, connector_space_error=error)
    return Observed(server=server, tenant=target.tenant.observe(selection_for(desired, server)))
