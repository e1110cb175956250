"""Licence steps from per-user outcomes: assign, and remove-then-assign where a licence made no mailbox.

Who gets what is decided in :mod:`reconciler.outcome`; this module only turns the
users whose outcome spends or moves a licence into steps.
"""

from __future__ import annotations

from reconciler.model import CloudUser
from reconciler.operations import AddGroupMembers, AssignLicense, RemoveLicense, ReprocessLicences, VerifyMailboxes
from reconciler.outcome import Verdict
from reconciler.steps import Action, Step


def coming_back(tenant, rebuild):
    """Purged users that the plan's last sync re-creates, as they will look (unlicensed)."""
    if rebuild is None or tenant.deleted_users is None:
        return ()
    purged = {r.id for r in rebuild.refs}
    return tuple(
        CloudUser(id=u.id, upn=u.upn, synced=True, on_prem_dn=u.on_prem_dn, usage_location=u.usage_location)
        for u in tenant.deleted_users
        if u.id in purged and u.synced
    )


def license_steps(desired, tenant, outcomes, sync_planned=False, depends_on=()):
    """Per licence entry: a removal for the users relicensed, one assignment (relicensed
    users first, so the units they free go back to them) or, for an entry that licenses
    through a group, the users added to the group and group licences reprocessed; then a
    wait for the mailboxes expected."""
    steps = []
    depends_on = tuple(d for d in depends_on if d)
    for spec in desired.licenses:
        sku = tenant.sku_by_part_number(spec.sku)
        mine = [o for o in outcomes if o.entry == spec.label]
        relicense = [o for o in mine if o.verdict is Verdict.RELICENSE]
        assign = [o for o in mine if o.verdict is Verdict.ASSIGN]
        reprocess = [o for o in mine if o.verdict is Verdict.REPROCESS]
        label = spec.label
        refs = {id(o): o.ref for o in relicense + assign + reprocess}  # each made once (100,000 users: twice as many before)
        ref = lambda o: refs[id(o)]  # noqa: E731

        def step(kind, summary, operation, after=depends_on, action=Action.UPDATE, resource=f"licenses/{label}"):
            steps.append(
                Step(
                    id=kind.replace("[]", f"[{label}]"),
                    provider="tenant",
                    resource=resource,
                    action=action,
                    summary=summary,
                    operation=operation,
                    depends_on=tuple(d for d in after if d),
                    decided_after_sync=sync_planned,
                )
            )
            return steps[-1].id

        done = []
        if relicense:
            remove_id = step("license[].remove", f"Remove {label} from {len(relicense)} user(s) whose licence made no mailbox (assigned again next)",
                             RemoveLicense(sku.sku_id, sku.part_number, tuple(map(ref, relicense))))
            direct = relicense + ([] if spec.group else assign)
            # Assigning again keeps the service plans an admin had switched off for the user.
            keep_disabled = tuple((o.upn.lower(), o.disabled_plans) for o in relicense if o.disabled_plans)
            again = f" ({len(relicense)} of them again)"
            done.append(step("license[].assign", f"Assign {label} to {len(direct)} user(s)" + again,
                             AssignLicense(sku.sku_id, sku.part_number, tuple(map(ref, direct)), keep_disabled), (*depends_on, remove_id)))
        elif assign and not spec.group:
            done.append(step("license[].assign", f"Assign {label} to {len(assign)} user(s)", AssignLicense(sku.sku_id, sku.part_number, tuple(map(ref, assign)))))
        if assign and spec.group:
            group = tenant.group(spec.group)
            done.append(step("group[].add", f"Add {len(assign)} user(s) to the licensing group {group.name!r} (it assigns {sku.part_number})",
                             AddGroupMembers(group.id, group.name, tuple(map(ref, assign))), resource=f"groups/{group.name}"))
        if reprocess:
            done.append(step("license[].reprocess", f"Reprocess the group licence of {len(reprocess)} user(s) whose {sku.part_number} from a group made no mailbox (Lab assumption: this provisions it)",
                             ReprocessLicences(tuple(map(ref, reprocess)))))
        expected = tuple(ref(o) for o in relicense + assign + reprocess if o.mailbox_after == "expected")
        if done and sku.includes_exchange and expected:
            step("mailboxes[].verify", f"Wait for the {len(expected)} Exchange Online mailbox(es) and verify them", VerifyMailboxes(expected),
                 tuple(done), Action.CHECK, f"mailboxes/{label}")
    return steps
