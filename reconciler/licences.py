"""Licence steps from per-user outcomes: assign, and remove-then-assign where a licence made no mailbox.

Who gets what is decided in :mod:`reconciler.outcome`; this module only turns the
users whose outcome spends or moves a licence into steps.
"""

from __future__ import annotations

from reconciler.model import CloudUser
from reconciler.operations import AssignLicense, RemoveLicense, VerifyMailboxes
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
    """Per licence set: a removal for the users relicensed, one assignment (relicensed users
    first, so the units they free go back to them), and a wait for the mailboxes expected."""
    steps = []
    depends_on = tuple(d for d in depends_on if d)
    for spec in desired.licenses:
        sku = tenant.sku_by_part_number(spec.sku)
        mine = [o for o in outcomes if o.sku == spec.sku]
        relicense = [o for o in mine if o.verdict is Verdict.RELICENSE]
        assign = [o for o in mine if o.verdict is Verdict.ASSIGN]
        label = spec.sku
        remove_id = None
        if relicense:
            remove_id = f"license[{label}].remove"
            steps.append(
                Step(
                    id=remove_id,
                    provider="tenant",
                    resource=f"licenses/{label}",
                    action=Action.UPDATE,
                    summary=f"Remove {label} from {len(relicense)} user(s) whose licence made no mailbox (assigned again next)",
                    operation=RemoveLicense(sku.sku_id, sku.part_number, tuple(o.ref for o in relicense)),
                    depends_on=depends_on,
                    decided_after_sync=sync_planned,
                )
            )
        if not (relicense or assign):
            continue
        refs = tuple(o.ref for o in relicense + assign)
        # Assigning again keeps the service plans an admin had switched off for the user.
        keep_disabled = tuple((o.upn.lower(), o.disabled_plans) for o in relicense if o.disabled_plans)
        assign_id = f"license[{label}].assign"
        steps.append(
            Step(
                id=assign_id,
                provider="tenant",
                resource=f"licenses/{label}",
                action=Action.UPDATE,
                summary=f"Assign {label} to {len(refs)} user(s)" + (f" ({len(relicense)} of them again)" if relicense else ""),
                operation=AssignLicense(sku.sku_id, sku.part_number, refs, keep_disabled),
                depends_on=tuple(d for d in (*depends_on, remove_id) if d),
                decided_after_sync=sync_planned,
            )
        )
        expected = tuple(o.ref for o in relicense + assign if o.mailbox_after == "expected")
        if sku.includes_exchange and expected:
            steps.append(
                Step(
                    id=f"mailboxes[{label}].verify",
                    provider="tenant",
                    resource=f"mailboxes/{label}",
                    action=Action.CHECK,
                    summary=f"Wait for the {len(expected)} Exchange Online mailbox(es) and verify them",
                    operation=VerifyMailboxes(expected),
                    depends_on=(assign_id,),
                    decided_after_sync=sync_planned,
                )
            )
    return steps
