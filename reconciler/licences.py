"""Planning licences: assign, and remove-then-assign where a licence made no mailbox."""

from __future__ import annotations

from reconciler.errors import PlanError
from reconciler.model import CloudUser, MailboxState
from reconciler.operations import AssignLicense, RemoveLicense, VerifyMailboxes
from reconciler.provider import UserSelection
from reconciler.steps import Action, Level, Notice, Step, name_list


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


def license_steps(
    desired, tenant, guid_flows_after=(), sync_planned=False, depends_on=(), cleared_since=None, recreated=frozenset(), coming_back=()
):
    """The licence steps and notices for the tenant as observed.

    A licence that produced no mailbox is removed and assigned again only when
    that can help: when the GUID stops flowing by the time it is assigned again
    (``sync_planned``, or the licence predates ``cleared_since``, the end of the
    last full sync with the current rules). Otherwise it is reported instead, so
    the plan converges rather than relicensing forever.
    """
    steps, notices = [], []
    guid_blocked_somewhere = any(g.flows_after for g in guid_flows_after)
    for spec in desired.licenses:
        sku = tenant.sku_by_part_number(spec.sku)
        if sku is None:
            known = ", ".join(s.part_number for s in tenant.skus) or "none"
            raise PlanError(f"licenses: SKU {spec.sku!r} is not subscribed in the tenant (subscribed: {known})")
        selection = UserSelection(frozenset(u.lower() for u in spec.users), tuple(spec.ous))
        targeted = sorted((u for u in (*tenant.users, *coming_back) if selection.matches(u)), key=lambda u: u.upn.lower())
        found = {u.upn.lower() for u in targeted}
        for upn in spec.users:
            if upn.lower() not in found:
                notices.append(Notice(Level.WARNING, "user-not-found", f"{upn}: no such user in the tenant; not licensed"))
        if not targeted:
            notices.append(Notice(Level.WARNING, "no-users", f"{spec.sku}: the selection matches no user in the tenant"))
        to_assign, to_relicense, pending, unknown = [], [], [], []
        freed = 0
        for user in targeted:
            assignment = user.license(sku.sku_id)
            if user.upn.lower() in recreated:
                # Purged and re-created: a new object, with no licence yet.
                freed += assignment is not None
                assignment = None
            if assignment is None:
                if not user.usage_location:
                    notices.append(Notice(Level.WARNING, "no-usage-location", f"{user.upn} cannot be licensed: no usage location (msExchUsageLocation is empty on-premises)"))
                else:
                    to_assign.append(user)
                continue
            if not sku.includes_exchange or user.mailbox is MailboxState.PRESENT:
                continue
            if set(assignment.disabled_plans) & set(sku.exchange_plan_ids):
                # Exchange is switched off in this user's licence: no mailbox is owed, GUID or not.
                notices.append(
                    Notice(Level.WARNING, "exchange-disabled", f"{user.upn}: Exchange Online is disabled in the {spec.sku} licence, so no mailbox will come; nothing is relicensed")
                )
                continue
            if user.mailbox is MailboxState.PENDING:
                pending.append(user.upn)
            elif user.mailbox is MailboxState.UNKNOWN:
                unknown.append(user.upn)
            elif not spec.relicense_without_mailbox:
                notices.append(Notice(Level.WARNING, "no-mailbox", f"{user.upn} is licensed but has no mailbox; relicense_without_mailbox is off"))
            elif assignment.by_group:
                notices.append(Notice(Level.WARNING, "group-license", f"{user.upn}: the {spec.sku} licence comes from a group and cannot be removed for one user; remove it from the group and add it back"))
            elif sync_planned or (cleared_since is not None and (assignment.assigned_at or "") < cleared_since):
                to_relicense.append(user)
            elif cleared_since is None:
                # The last full sync has left the run history: relicensing could repeat forever.
                notices.append(
                    Notice(
                        Level.WARNING,
                        "no-mailbox-unknown-clear",
                        f"{user.upn} is licensed without a mailbox, and the run history no longer shows when msExchMailboxGuid was cleared: "
                        "run a full (Initial) sync and plan again to have it relicensed",
                    )
                )
            else:
                notices.append(
                    Notice(
                        Level.WARNING,
                        "no-mailbox-after-clear",
                        f"{user.upn} was licensed after msExchMailboxGuid stopped flowing and still has no mailbox: check that no rule flows the GUID for its object type",
                    )
                )
        if pending:
            notices.append(Notice(Level.INFO, "mailbox-pending", f"{len(pending)} mailbox(es) still provisioning: {name_list(pending)}"))
        if unknown:
            notices.append(Notice(Level.WARNING, "mailbox-unknown", f"mailbox state unknown (the read failed) for {name_list(unknown)}; nothing is decided for them"))
        available = sku.available + freed
        if len(to_assign) > available:
            left_out = to_assign[available:]
            to_assign = to_assign[:available]
            notices.append(
                Notice(
                    Level.WARNING,
                    "license-shortage",
                    f"{spec.sku}: {len(to_assign) + len(left_out)} licence(s) needed, {available} available; not licensed: {name_list([u.upn for u in left_out])}",
                )
            )
        elif to_assign and available - len(to_assign) < max(1, sku.prepaid // 20):
            notices.append(Notice(Level.INFO, "license-low", f"{spec.sku}: {available - len(to_assign)} unit(s) left after this plan"))
        if guid_blocked_somewhere and (to_assign or to_relicense):
            notices.append(
                Notice(Level.INFO, "guid-still-flows-licences", "users of an object type that still gets msExchMailboxGuid will get no mailbox from their licence")
            )

        remove_id = None
        sku_label = spec.sku
        if to_relicense:
            refs = tuple(u.ref for u in to_relicense)
            remove_id = f"license[{sku_label}].remove"
            steps.append(
                Step(
                    id=remove_id,
                    provider="tenant",
                    resource=f"licenses/{sku_label}",
                    action=Action.UPDATE,
                    summary=f"Remove {sku_label} from {len(refs)} user(s) whose licence made no mailbox (assigned again next)",
                    operation=RemoveLicense(sku.sku_id, sku.part_number, refs),
                    depends_on=tuple(d for d in depends_on if d),
                    decided_after_sync=sync_planned,
                )
            )
        assign_refs = tuple(u.ref for u in sorted(to_assign + to_relicense, key=lambda u: u.upn.lower()))
        # Assigning again keeps the service plans an admin had switched off for the user.
        keep_disabled = tuple(
            (u.upn.lower(), u.license(sku.sku_id).disabled_plans)
            for u in sorted(to_relicense, key=lambda u: u.upn.lower())
            if u.license(sku.sku_id).disabled_plans
        )
        if assign_refs:
            assign_id = f"license[{sku_label}].assign"
            steps.append(
                Step(
                    id=assign_id,
                    provider="tenant",
                    resource=f"licenses/{sku_label}",
                    action=Action.UPDATE,
                    summary=f"Assign {sku_label} to {len(assign_refs)} user(s)"
                    + (f" ({len(to_relicense)} of them again)" if to_relicense else ""),
                    operation=AssignLicense(sku.sku_id, sku.part_number, assign_refs, keep_disabled),
                    depends_on=tuple(d for d in (*depends_on, remove_id) if d),
                    decided_after_sync=sync_planned,
                )
            )
            if sku.includes_exchange:
                steps.append(
                    Step(
                        id=f"mailboxes[{sku_label}].verify",
                        provider="tenant",
                        resource=f"mailboxes/{sku_label}",
                        action=Action.CHECK,
                        summary=f"Wait for the {len(assign_refs)} Exchange Online mailbox(es) and verify them",
                        operation=VerifyMailboxes(assign_refs),
                        depends_on=(assign_id,),
                        decided_after_sync=sync_planned,
                    )
                )
    return steps, notices
