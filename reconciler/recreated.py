"""Purged users the journal still owes a licence restore: who they were and how they were licensed.

Apply writes the record to the journal before the purge step runs (object ids, UPNs,
licences), so a kill between the purge and the licences, or a plan made later, still
knows that these users are re-created objects (their cloud msExchMailboxGuid is gone
with the purged object) and how to license them exactly as before. A user leaves the
record once apply has assigned back what they held.
"""

from __future__ import annotations

from reconciler.classes import frozen
from reconciler.model import CloudUser, LicenseAssignment
from reconciler.operations import AssignLicense, PurgeDeletedUsers

#: Restore steps' ids start with this (see rebuild.restore_steps).
RESTORE_PREFIX = "licences.restore["


@frozen
class Purged:
    """One purged user as the journal recorded it."""

    id: str
    upn: str
    licences: tuple[LicenseAssignment, ...] = ()
    #: As the recycle bin showed them just before the purge: what the licences need to know
    #: of a user the sync has not brought back yet.
    on_prem_dn: str | None = None
    usage_location: str | None = None


def record_for(plan, step, deleted_users=()):
    """The journal record of the purge ``step`` of ``plan``: each user's id and UPN (with its
    on-premises DN and usage location from ``deleted_users``, the recycle bin as seen), and
    the licences the plan restores (direct) or leaves to a group (by group), as JSON values."""
    seen = {u.id: u for u in deleted_users or ()}
    direct, group = {}, {}
    for s in plan.steps:
        if s.id.startswith(RESTORE_PREFIX) and isinstance(s.operation, AssignLicense):
            off = dict(s.operation.disabled_plans)
            for ref in s.operation.users:
                direct.setdefault(ref.upn.lower(), []).append({"sku_id": s.operation.sku_id, "disabled_plans": list(off.get(ref.upn.lower(), ())), "by_group": False})
    for o in plan.outcomes:
        if o.code == "group-licence-recreated":
            group.setdefault(o.upn.lower(), []).append({"sku": o.sku, "by_group": True})
    return [
        {
            "id": r.id,
            "upn": r.upn,
            "on_prem_dn": getattr(seen.get(r.id), "on_prem_dn", None),
            "usage_location": getattr(seen.get(r.id), "usage_location", None),
            "licences": direct.get(r.upn.lower(), []) + group.get(r.upn.lower(), []),
        }
        for r in step.operation.users
    ]


def from_record(entries, skus):
    """:class:`Purged` from the journal's entries; a group licence named by part number is
    looked up in ``skus`` (left out when the tenant no longer has the SKU)."""
    by_part = {s.part_number.lower(): s.sku_id for s in skus}
    users = []
    for entry in entries:
        licences = []
        for item in entry.get("licences") or ():
            sku_id = item.get("sku_id") or by_part.get(str(item.get("sku", "")).lower())
            if sku_id:
                licences.append(LicenseAssignment(sku_id, by_group=bool(item.get("by_group")), disabled_plans=tuple(item.get("disabled_plans") or ())))
        dn, where = entry.get("on_prem_dn"), entry.get("usage_location")
        users.append(
            Purged(str(entry.get("id", "")), str(entry.get("upn", "")), tuple(licences), dn if isinstance(dn, str) else None, where if isinstance(where, str) else None)
        )
    return tuple(users)


def recreated_since(owed, tenant):
    """The owed users whose purged object is gone (neither active nor in the recycle bin):
    re-created or about to be. A user whose object is still there was not purged yet."""
    if tenant.deleted_users is None:
        return ()
    present = {u.id for u in tenant.users} | {u.id for u in tenant.deleted_users}
    return tuple(p for p in owed if p.id and p.id not in present)


def coming_back(purged, tenant):
    """The re-created users the sync has not brought back yet, as they will look (unlicensed)."""
    now = {u.upn.lower() for u in tenant.users}
    return tuple(
        CloudUser(id="", upn=p.upn, synced=True, on_prem_dn=p.on_prem_dn, usage_location=p.usage_location) for p in purged if p.upn.lower() not in now and p.on_prem_dn
    )


def still_owed(purged, tenant):
    """(upn, licences) of the direct licences not held again yet, by the synced user with the UPN."""
    now = {u.upn.lower(): u for u in tenant.users if u.synced}
    owed = []
    for p in purged:
        user = now.get(p.upn.lower())
        missing = tuple(a for a in p.licences if user is None or user.license(a.sku_id) is None)
        if missing:
            owed.append((p.upn, missing))
    return tuple(owed)


def settled(record, results, steps):
    """UPNs of ``record`` that this apply licensed as before: every direct licence they
    held assigned back (a restore step done, the user not among its failures), or, for a
    user without one, any licence assigned."""
    done = {r.step_id: r for r in results if r.status.value == "done"}
    assigned = set()
    for step in steps:
        result = done.get(step.id)
        if result is None or not isinstance(step.operation, AssignLicense):
            continue
        failed = {upn.lower() for upn, _ in result.failures}
        assigned |= {(ref.upn.lower(), step.operation.sku_id) for ref in step.operation.users if ref.upn.lower() not in failed}
    out = set()
    for p in record:
        direct = [a.sku_id for a in p.licences if not a.by_group]
        upn = p.upn.lower()
        if (direct and all((upn, s) in assigned for s in direct)) or (not direct and any(u == upn for u, _ in assigned)):
            out.add(p.upn)
    return out


def purge_steps(steps):
    return [s for s in steps if isinstance(s.operation, PurgeDeletedUsers)]
