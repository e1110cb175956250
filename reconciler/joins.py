"""Which AD connectors' objects are joined into each synced user's metaverse object.

With several AD forests, Entra Connect joins objects of different forests into one
metaverse person: in an account/resource topology a user's account lives in one forest
and its (linked) mailbox object in another, and msExchMailboxGuid reaches the person
through the mailbox object's connector's rules. Whether the GUID still reaches the cloud
after a plan therefore depends on every connector joined to the person, not only on the
user's own forest's.

The joins are read from the connector space: each object's ``ConnectedMVObjectId``
(Get-ADSyncCSObject, build 2.2.8.0's ``CsObject``) names its metaverse object; objects
of different connectors with the same id are joined.
"""

from __future__ import annotations

from attrs import frozen

from reconciler import dn
from reconciler.model import count_objects


def dn_key(distinguished_name):
    """A DN as a key: the connector space's and the cloud's onPremisesDistinguishedName both
    come from AD's distinguishedName; only case and outer spaces are let differ (a DN written
    otherwise is not found, which makes the joins of that user unknown: the cautious answer)."""
    return (distinguished_name or "").strip().casefold()


#: The connector-space object types whose joins are kept (lower case).
PERSONS = frozenset({"user", "inetorgperson"})


@frozen
class Joins:
    """The joins observed in the AD connectors' connector spaces."""

    #: DN key of each joined object -> its metaverse object's id.
    metaverse: dict
    #: Metaverse object id -> ((connector identifier, object type, DN), ...) of every object joined to it.
    members: dict
    #: DN keys of persons listed as connectors but without a metaverse id (unknown joins).
    unjoined: frozenset = frozenset()
    #: ``(connector identifier, object type)`` of those persons: each may be joined into any
    #: person that has no object of that connector yet (its partner is unknown).
    loose: frozenset = frozenset()

    def unjoined_object(self, distinguished_name):
        """Whether ``distinguished_name`` is a connector whose metaverse id was not given."""
        return dn_key(distinguished_name) in self.unjoined

    def of(self, distinguished_name):
        """``((connector identifier, object type), ...)`` joined to the metaverse object of the
        AD object ``distinguished_name``; None when that object was not found (unknown)."""
        found = self.joined(distinguished_name)
        return None if found is None else tuple((connector, object_type) for connector, object_type, _dn in found)

    def joined(self, distinguished_name):
        """``((connector identifier, object type, DN), ...)`` joined to the metaverse object of
        the AD object ``distinguished_name``; None when that object was not found (unknown)."""
        mv = self.metaverse.get(dn_key(distinguished_name))
        return None if mv is None else self.members[mv]

    def across_forests(self):
        """How many metaverse objects have objects of more than one AD connector joined (the
        plan's metaverse-joins notice says it)."""
        return sum(1 for members in self.members.values() if len({c.lower() for c, _t, _d in members}) > 1)


def _in(member, scopes):
    scope = scopes.get(member[0].lower())
    return scope is not None and dn.in_scope(member[2], *scope)


def staying(joins, now, wanted, anchors=frozenset()):
    """``((object, joined object), ...)``, each a ``(connector identifier, object type, DN)``:
    the objects a scope change from ``now`` to ``wanted`` (each ``{connector id: (included,
    excluded)}``) takes out of sync whose metaverse person stays, joined with an object of
    another connector that stays in scope (a linked mailbox of a resource forest and its
    account). The export deletes no cloud object for them: the person loses what they brought.
    ``anchors``: DN keys (:func:`dn_key`) of the objects synced cloud users come from (their
    onPremisesDistinguishedName: the account that brings sourceAnchor and UPN; a linked
    mailbox brings neither): such an object leaving deletes its cloud user, whatever stays
    joined. Empty when the joins are unknown (``joins`` None)."""
    if joins is None:
        return ()
    now = {k.lower(): v for k, v in now.items()}
    wanted = {k.lower(): v for k, v in wanted.items()}
    found = []
    for members in joins.members.values():
        if len({c.lower() for c, _t, _d in members}) < 2:
            continue
        for member in members:
            if _in(member, now) and not _in(member, wanted) and dn_key(member[2]) not in anchors:
                other = next((m for m in members if m[0].lower() != member[0].lower() and _in(m, wanted)), None)
                if other is not None:
                    found.append((member, other))
    return tuple(sorted(found, key=lambda pair: dn_key(pair[0][2])))


def together(joins, now, wanted, kept=()):
    """``((object, object, ...), ...)``, each a person's objects (``(connector identifier,
    object type, DN)``) that a scope change from ``now`` to ``wanted`` takes out of sync
    together: a linked mailbox of a resource forest and its account leaving at once. Their
    person has one cloud user: the export deletes it once, not once per object. ``kept``: the
    objects :func:`staying` found (their person stays; not deleted). Only joins seen are
    merged: an object listed without a metaverse id is not here (its partner is unknown, so
    it counts as a deletion of its own, the cautious answer). Empty when ``joins`` is None."""
    if joins is None:
        return ()
    now = {k.lower(): v for k, v in now.items()}
    wanted = {k.lower(): v for k, v in wanted.items()}
    gone = {dn_key(member[2]) for member, _other in kept}
    found = []
    for members in joins.members.values():
        if len({c.lower() for c, _t, _d in members}) < 2:
            continue
        leaving = [m for m in members if _in(m, now) and not _in(m, wanted) and dn_key(m[2]) not in gone]
        if len(leaving) > 1:
            found.append(tuple(sorted(leaving, key=lambda m: dn_key(m[2]))))
    return tuple(sorted(found, key=lambda group: dn_key(group[0][2])))


def unjoined_leaving(joins, now, wanted):
    """The DN keys of persons listed without a metaverse id (:attr:`Joins.unjoined`) that a
    scope change from ``now`` to ``wanted`` takes out of sync (in some connector's scope now,
    in none after): whether each is joined with another object leaving too is unknown."""
    if joins is None:
        return ()
    return tuple(sorted(d for d in joins.unjoined if any(dn.in_scope(d, *s) for s in now.values()) and not any(dn.in_scope(d, *s) for s in wanted.values())))


def survey(entries, counts=True, joins=False):
    """``(object counts, joins)`` from one pass over a connector space: ``entries`` yields
    ``(connector identifier, DN, object type, is a connector, metaverse id)`` (None: the
    connector space could not be read; both are then None). Only connectors (objects joined
    to a metaverse object) are counted and joined, and only persons (user and inetOrgPerson
    objects: the only ones whose GUID is asked for) are kept in the joins; each part is None
    unless asked for."""
    if entries is None:
        return None, None
    metaverse, members, unjoined, loose = {}, {}, set(), set()

    def joined():
        for connector, name, object_type, is_connector, mv in entries:
            if not is_connector:
                continue
            if joins and object_type.lower() in PERSONS:
                if mv:
                    metaverse[dn_key(name)] = mv
                    members.setdefault(mv, []).append((connector, object_type, name))
                else:
                    unjoined.add(dn_key(name))
                    loose.add((connector, object_type))
            yield connector, name, object_type

    if counts:
        found = count_objects(joined())
    else:
        found = None
        for _ in joined():
            pass
    return found, (Joins(metaverse, {mv: tuple(m) for mv, m in members.items()}, frozenset(unjoined), frozenset(loose)) if joins else None)
