"""Which AD connector's forest holds a DN, with several AD forests (one AD connector each).

A plan asks for every synced user (the per-user prediction, the users a scope change takes
out): each connector's domains are worked out once, not once per user.
"""

from __future__ import annotations

from reconciler import dn
from reconciler.errors import PlanError


def _key(text):
    """A DN compared as :func:`reconciler.dn.same` compares it."""
    try:
        return dn.parse(text)
    except dn.DnError:
        return (("", (text or "").strip().casefold()),)


def _under(inner, outer):
    return len(inner) >= len(outer) and inner[len(inner) - len(outer) :] == outer


class Forests:
    """The AD connectors, each with the domains that tell its forest.

    Known by the domains of the connector's containers, else by its name (an AD connector
    is named after its forest: ``contoso.com`` holds ``DC=contoso,DC=com`` and its child
    domains)."""

    def __init__(self, connectors):
        self.connectors = tuple(connectors)
        self._by_containers = tuple(
            (c, frozenset(_key(d) for k in (*c.included_containers, *c.excluded_containers) if (d := dn.domain_of(k)))) for c in self.connectors
        )
        self._by_name = tuple((c, _key(d)) for c in self.connectors if (d := dn.domain_dn(c.name)))

    def owner(self, container, strict=True):
        """The AD connector whose forest holds ``container`` (a DN); with one AD connector,
        that one. ``strict``: PlanError when no connector or several hold it; else None."""
        if len(self.connectors) == 1:
            return self.connectors[0]
        domain = dn.domain_of(container)
        key = _key(domain) if domain else None
        found = [c for c, domains in self._by_containers if key is not None and key in domains]
        if not found and key is not None:
            found = [c for c, name in self._by_name if _under(key, name)]
        if len(found) == 1:
            return found[0]
        if not strict:
            return None
        if not self.connectors:
            raise PlanError(f"scope: no AD connector on the server for {container}")
        which = "no AD connector" if not found else f"{len(found)} AD connectors ({', '.join(c.name for c in found)})"
        raise PlanError(f"scope: {which} of the server's {len(self.connectors)} hold the domain of {container}; each container belongs to one forest's connector")
