"""Solution 2's planning: the OU scope, the export filter, and the purge with its rails.

The purge is the only irreversible thing syncprep does, so this is where the
safety rails live: only synced users, only those the desired state names, never
more than its maximum or a default ceiling, a share-of-deletes check that needs
``--force``, the export deletion threshold raised only with approval and then
restored, and an unreadable recycle bin blocking everything destructive.
"""

from __future__ import annotations

from typing import Optional

from attrs import frozen

from reconciler import dn
from reconciler.errors import PlanError
from reconciler.model import GUID_ATTRIBUTE, MailboxState, SyncPolicy, UserRef
from reconciler.operations import AssignLicense, PurgeDeletedUsers, SetContainerScope, SetDeletionThreshold, SetExcludedAttributes, VerifyMailboxes
from reconciler.provider import UserSelection
from reconciler.rules import guid_report
from reconciler.steps import Action, Impact, Level, Notice, Step, server_step


#: Entra Connect's export deletion threshold out of the box (domain-facts A10).
DEFAULT_DELETION_THRESHOLD = 500

#: Without [purge] max_count, a plan never purges more users than this.
DEFAULT_PURGE_CEILING = 50


#: A scope change that soft-deletes more than this share of the synced users needs --force.
SCOPE_MAX_PERCENT = 30.0
#: The share-of-deletes check applies from this many synced users on (octoDNS: 10 records).
MIN_SYNCED_FOR_PERCENT = 10


@frozen
class _Rebuild:
    config_ids: tuple[str, ...]
    purge_id: str
    refs: tuple
    scope_out: Optional[tuple] = None  # (included, excluded) while the users are out
    threshold_restore: Optional[Step] = None
    #: (upn, why) of the users the [purge] selection names but the plan leaves alone.
    kept: tuple = ()
    #: (upn, what is lost) of the acknowledged users whose purge destroys something.
    losses: tuple = ()
    #: The recycle bin is unknown: no step of Solution 2 may be planned.
    blocked: bool = False
    #: Active users go to the recycle bin by a sync before the purge.
    cycles: bool = False
    #: (upn, licences held before the purge) of every user purged: restored after re-creation.
    licences_before: tuple = ()


def _norm(dns):
    """Containers once each (by RFC 4514 equality), in a stable order."""
    kept = []
    for name in sorted((d.strip() for d in dns), key=str.lower):
        if not any(dn.same(name, k) for k in kept):
            kept.append(name)
    return tuple(kept)


def named_for_purge(deleted_user, purge):
    """Whether a user in the recycle bin is one the ``[purge]`` section names (by UPN or OU)."""
    on_prem = deleted_user.on_prem_dn or ""
    return deleted_user.upn.lower() in {u.lower() for u in purge.users} or any(on_prem and dn.below(on_prem, ou) for ou in purge.ous)


def same_names(a, b):
    return {x.lower() for x in a} == {x.lower() for x in b}


_in_scope = dn.in_scope


def purge_selection(purge):
    return UserSelection(frozenset(u.lower() for u in purge.users), tuple(purge.ous))


def plan_purge(desired, observed, builder, notices, unsafe):
    """Solution 2's destructive half: which users to hard-delete, and how they get to the recycle bin."""
    purge = desired.purge
    if purge is None:
        return None
    tenant, server = observed.tenant, observed.server
    if tenant.deleted_users is None:
        # Unknown, never empty: nothing that decides what is in the recycle bin or takes
        # from it is planned (the purge, the OU's scope, the export filter that goes with
        # them); the rest of the plan (rules, licences) is planned as usual.
        notices.append(
            Notice(
                Level.WARNING,
                "recycle-bin-unknown",
                "the recycle bin could not be read (unknown, not empty): no purge, scope or export-filter step is planned; plan again when it can be read",
            )
        )
        return _Rebuild((), None, (), blocked=True)
    selection = purge_selection(purge)
    excluding_now = bool(desired.export) and bool(
        {a.lower() for a in desired.export.excluded_attributes} - {a.lower() for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes}
    )
    ad = _single_ad_connector(server)
    active = []
    for user in tenant.users:
        if not selection.matches(user):
            continue
        if user.synced is None:
            notices.append(Notice(Level.WARNING, "purge-cloud-only", f"{user.upn} is cloud-only: never purged"))
            continue
        if not any(user.in_ou(ou) for ou in purge.ous):
            if excluding_now:
                notices.append(Notice(Level.WARNING, "purge-active-by-upn", f"{user.upn} is active and not under a [purge] OU: it cannot be taken out of sync alone; name its OU"))
            continue
        active.append(user)
    deleted = []
    for user in tenant.deleted_users:
        if not named_for_purge(user, purge):
            continue
        if user.synced is None:
            notices.append(Notice(Level.WARNING, "purge-cloud-only", f"{user.upn} (in the recycle bin) is cloud-only: never purged"))
            continue
        deleted.append(user)
    if active and not excluding_now:
        notices.append(
            Notice(
                Level.INFO,
                "purge-active-kept",
                f"{len(active)} user(s) of the [purge] selection are active: they are taken out and purged only in the plan that starts excluding an attribute from export",
            )
        )
        active = []
    active, deleted, kept, losses = _hold_out(active, deleted, purge, tenant, server, notices)
    cycled = sorted(active, key=lambda u: u.upn.lower()) if excluding_now else []
    refs = tuple(sorted([u.ref for u in cycled] + [UserRef(u.id, u.upn) for u in deleted], key=lambda r: (r.upn.lower(), r.id)))
    if not refs:
        return _Rebuild((), None, (), kept=kept) if kept else None

    limit = purge.max_count if purge.max_count is not None else DEFAULT_PURGE_CEILING
    if len(refs) > limit:
        which = "max_count" if purge.max_count is not None else f"the default ceiling ({DEFAULT_PURGE_CEILING}; set [purge] max_count)"
        raise PlanError(f"purge: {len(refs)} users would be purged, more than {which} allows ({limit}); nothing is planned")
    synced_total = sum(1 for u in tenant.users if u.synced) + len(deleted)
    if synced_total >= MIN_SYNCED_FOR_PERCENT:
        share = 100.0 * len(refs) / synced_total
        if share > purge.max_percent:
            unsafe.append(f"Too many deletes: {share:.2f}% is over {purge.max_percent:.2f}% ({len(refs)}/{synced_total} synced users); force required")

    config_ids = []
    scope_out = None
    threshold_restore = None
    if cycled:
        included, excluded = ad.included_containers, ad.excluded_containers
        new_excluded = _norm((*excluded, *purge.ous))
        scope_out = (tuple(included), new_excluded)
        # Every synced user still in the cloud but outside the scope the sync will run with
        # is deleted by it: also those whose OU was taken out by hand while the export
        # stopped (at the deletion threshold, say), whose deletions are still pending.
        leaving = [u for u in tenant.users if u.synced and u.on_prem_dn and not _in_scope(u.on_prem_dn, included, new_excluded)]
        pending = [u for u in leaving if not _in_scope(u.on_prem_dn, included, excluded)]
        if pending:
            notices.append(_pending_notice(pending, server))
        if not dn.same_set(excluded, new_excluded):
            config_ids.append(
                builder.add(
                    server_step(
                        id="rebuild.scope.exclude",
                        resource=f"connector/{ad.name}/scope",
                        action=Action.UPDATE,
                        summary=f"Take {', '.join(purge.ous)} out of the sync scope: {len(leaving)} user(s) will be soft-deleted in the cloud (known after sync)",
                        operation=SetContainerScope(tuple(included), new_excluded),
                        before={"included": list(included), "excluded": list(excluded)},
                        after={"included": list(included), "excluded": list(new_excluded)},
                    )
                )
            )
        threshold = server.deletion_threshold
        if threshold is None:
            notices.append(Notice(Level.WARNING, "threshold-unknown", "the export deletion threshold is off or could not be read"))
        elif len(leaving) > threshold:
            # Export counts every deleted object, not only users (groups and contacts in the
            # OU too): leave a margin so one more deletion does not stop the whole export.
            raised = len(leaving) + max(10, len(leaving) // 10)
            config_ids.append(
                builder.add(
                    server_step(
                        id="rebuild.threshold.raise",
                        resource="export deletion threshold",
                        action=Action.UPDATE,
                        summary=f"Raise the export deletion threshold from {threshold} to {raised} for this sync ({len(leaving)} users and a margin for other objects; restored afterwards): otherwise the export stops and deletes nothing",
                        operation=SetDeletionThreshold(raised),
                        before={"threshold": threshold},
                        after={"threshold": raised},
                        approval="threshold-raise",
                    )
                )
            )
            back = desired.export.deletion_threshold if desired.export is not None and desired.export.deletion_threshold is not None else threshold
            threshold_restore = server_step(
                id="threshold.restore",
                resource="export deletion threshold",
                action=Action.UPDATE,
                summary=f"Restore the export deletion threshold to {back}",
                operation=SetDeletionThreshold(back),
                before={"threshold": raised},
                after={"threshold": back},
                approval="threshold-raise",
            )
        else:
            notices.append(Notice(Level.INFO, "threshold-ok", f"{len(leaving)} soft-deletion(s) stay under the export deletion threshold of {threshold}"))
        extra = sorted({u.upn for u in leaving} - {r.upn for r in refs})
        if extra:
            notices.append(
                Notice(Level.WARNING, "scope-extra", f"{len(extra)} user(s) not purged leave the scope too; they come back from the recycle bin as they were: {', '.join(extra)}", tuple(extra))
            )
    purge_id = builder.add(
        Step(
            id="purge",
            provider="tenant",
            resource="recycle bin",
            action=Action.DELETE,
            summary=f"Hard-delete {len(refs)} synced user(s) from the recycle bin: cannot be undone"
            + (" (checked against what the sync actually deleted first)" if cycled else ""),
            operation=PurgeDeletedUsers(refs),
            impact=Impact.IRREVERSIBLE,
            decided_after_sync=bool(cycled),
            approval="irreversible",
        )
    )
    before = tuple((u.upn, u.licenses) for u in sorted((*cycled, *deleted), key=lambda u: (u.upn.lower(), u.id)) if u.licenses)
    return _Rebuild(tuple(config_ids), purge_id, refs, scope_out, threshold_restore, kept, losses, cycles=bool(cycled), licences_before=before)


def _pending_notice(pending, server):
    """Users already out of scope (by hand) but still in the cloud: their deletion is pending."""
    exports = sorted((r for r in server.run_history if r.profile == "Export"), key=lambda r: r.started)
    stopped = exports[-1] if exports and not exports[-1].ok else None
    why = f"; the last export ended '{stopped.result}'" + (f" ({stopped.detail})" if stopped.detail else "") if stopped else ""
    return Notice(
        Level.WARNING,
        "scope-pending-deletes",
        f"{len(pending)} synced user(s) are already out of the sync scope but still in the cloud: their deletion is pending{why}; "
        f"the next sync deletes them: {', '.join(u.upn for u in pending)}",
        tuple(u.upn for u in pending),
    )


def _hold_out(active, deleted, purge, tenant, server, notices):
    """Leave out of the purge whoever would lose a mailbox by it, or needs no rebuild.

    A user whose Exchange Online mailbox exists (or may exist: unread, with a licence
    that includes Exchange) loses it with the purge; a user whose cloud GUID is already
    clear gains nothing from being re-created. Both stay out unless the desired state
    names them in ``acknowledge_loss``; then the plan says what is lost.
    """
    acknowledged = {u.lower() for u in purge.acknowledge_loss}
    clear = guid_already_clear(server)
    kept, losses, keep_ids = [], [], set()
    for user in (*active, *deleted):
        risk = _risk(user, tenant, clear)
        if risk is None:
            continue
        if user.upn.lower() in acknowledged:
            losses.append((user.upn, risk))
        else:
            kept.append((user.upn, risk))
            keep_ids.add(user.id)
    by_reason = {}
    for upn, why in sorted(kept, key=lambda k: k[0].lower()):
        by_reason.setdefault(why, []).append(upn)
    for why, upns in by_reason.items():
        notices.append(
            Notice(
                Level.WARNING,
                "purge-kept",
                f"{len(upns)} user(s) kept out of the purge: {why}; name them in [purge] acknowledge_loss to purge them anyway: {', '.join(upns)}",
            )
        )
    for upn, why in sorted(losses, key=lambda k: k[0].lower()):
        notices.append(Notice(Level.WARNING, "purge-loss", f"{upn} is purged although {why} (named in [purge] acknowledge_loss)"))
    return (
        [u for u in active if u.id not in keep_ids],
        [u for u in deleted if u.id not in keep_ids],
        tuple(sorted(kept, key=lambda k: k[0].lower())),
        tuple(sorted(losses, key=lambda k: k[0].lower())),
    )


def _risk(user, tenant, guid_clear):
    """What purging ``user`` loses or why it is for nothing; None when neither."""
    if user.mailbox in (MailboxState.PRESENT, MailboxState.PENDING):
        return "the purge destroys their Exchange Online mailbox"
    if user.mailbox is MailboxState.UNKNOWN and _licensed_for_exchange(user, tenant):
        return "their mailbox could not be read and they hold a licence with Exchange Online: the purge may destroy a mailbox"
    if user.mailbox is MailboxState.UNKNOWN and getattr(user, "had_exchange_plan", False):
        # Through Graph a deleted user's mailbox is never readable, and a mailbox outlives
        # its licence by 30 days: an Exchange plan once assigned is reason enough.
        return (
            "their mailbox could not be read and an Exchange Online plan was assigned to them (a mailbox outlives its licence by 30 days): "
            "the purge may destroy a mailbox"
        )
    if guid_clear:
        return "their msExchMailboxGuid is already clear in the cloud (no rule flows it and a full sync has exported since): a rebuild gains nothing"
    return None


def _licensed_for_exchange(user, tenant):
    skus = {s.sku_id: s for s in tenant.skus}
    for assignment in user.licenses:
        sku = skus.get(assignment.sku_id)
        if sku is None or (sku.includes_exchange and not set(sku.exchange_plan_ids) <= set(assignment.disabled_plans)):
            return True  # an unknown SKU may include Exchange
    return False


def guid_already_clear(server):
    """Whether msExchMailboxGuid is clear in the cloud for every synced object.

    So when no rule flows it to existing objects, the export does not leave it out
    (then the cloud keeps what it has), no full sync is owed, and the last full
    synchronization was followed by an export that succeeded.
    """
    if GUID_ATTRIBUTE.lower() in {a.lower() for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes}:
        return False
    if any(g.flows_now for g in guid_report(server.rules, server.rules)):
        return False
    if server.scheduler.next_policy is SyncPolicy.INITIAL:
        return False
    full = [r.started for r in server.run_history if r.ok and r.profile == "Full Synchronization"]
    if not full:
        return False
    return any(r.ok and r.profile == "Export" and r.started >= max(full) for r in server.run_history)


def _single_ad_connector(server):
    candidates = server.connectors_of_kind("AD")
    if len(candidates) != 1:
        raise PlanError(f"{len(candidates)} AD connectors on the server; syncprep manages the scope of exactly one")
    return candidates[0]


def plan_export(desired, server, builder, notices):
    if desired.export is None:
        return []
    (aad,) = server.connectors_of_kind("AAD") or (None,)
    if aad is None:
        raise PlanError("export: no Entra ID (AAD) connector on the server")
    current = _norm(aad.excluded_attributes)
    wanted = _norm(desired.export.excluded_attributes)
    if same_names(current, wanted):
        return []
    added = {a.lower() for a in wanted} - {a.lower() for a in current}
    if added and desired.purge is None:
        notices.append(
            Notice(
                Level.WARNING,
                "exclusion-keeps-values",
                f"excluding {', '.join(sorted(a for a in wanted if a.lower() in added))} only stops the export: the values already in Entra ID stay "
                "(the sync engine stops managing them); Solution 2 purges and re-creates the users with [purge]",
            )
        )
    return [
        builder.add(
            server_step(
                id="export.attributes",
                resource=f"connector/{aad.name}/attributes",
                action=Action.UPDATE,
                summary="Change the attributes excluded from export to Entra ID",
                operation=SetExcludedAttributes(wanted),
                before={"excluded_attributes": list(current)},
                after={"excluded_attributes": list(wanted)},
            )
        )
    ]


def plan_scope(desired, observed, builder, notices, rebuild, unsafe):
    server, tenant = observed.server, observed.tenant
    if desired.scope is None and (rebuild is None or rebuild.scope_out is None):
        return []
    ad = _single_ad_connector(server)
    current = (ad.included_containers, ad.excluded_containers)
    if rebuild is not None and rebuild.scope_out is not None:
        current = rebuild.scope_out
    wanted = (
        (_norm(desired.scope.included), _norm(desired.scope.excluded)) if desired.scope is not None else (ad.included_containers, ad.excluded_containers)
    )
    if dn.same_set(current[0], wanted[0]) and dn.same_set(current[1], wanted[1]):
        return []
    leaving = [u.upn for u in tenant.users if u.synced and u.on_prem_dn and _in_scope(u.on_prem_dn, *current) and not _in_scope(u.on_prem_dn, *wanted)]
    if leaving:
        notices.append(Notice(Level.WARNING, "scope-deletes", f"the new scope soft-deletes {len(leaving)} synced user(s) in the cloud: {', '.join(leaving)}", tuple(leaving)))
        synced = sum(1 for u in tenant.users if u.synced)
        share = 100.0 * len(leaving) / max(synced, 1)
        if synced >= MIN_SYNCED_FOR_PERCENT and share > SCOPE_MAX_PERCENT:
            unsafe.append(f"Too many deletes: {share:.2f}% is over {SCOPE_MAX_PERCENT:.2f}% ({len(leaving)}/{synced} synced users leave the scope); force required")
        threshold = server.deletion_threshold
        if threshold is not None and len(leaving) > threshold:
            raise PlanError(
                f"scope: {len(leaving)} soft-deletions exceed the export deletion threshold of {threshold}: the export would stop and delete nothing"
            )
    back = rebuild is not None and rebuild.scope_out is not None
    return [
        builder.add(
            server_step(
                id="scope.containers",
                resource=f"connector/{ad.name}/scope",
                action=Action.UPDATE,
                summary="Bring the OU back into the sync scope, after the purge: the users are re-created as new objects"
                if back
                else "Change the AD connector's OU scope",
                operation=SetContainerScope(*wanted),
                before={"included": list(current[0]), "excluded": list(current[1])},
                after={"included": list(wanted[0]), "excluded": list(wanted[1])},
            )
        )
    ]


def plan_threshold(desired, server, builder, notices, rebuild):
    """The export deletion threshold as the desired state (or the server's default) wants it.

    ``[export] deletion_threshold`` set: a step puts it there. Unset: a threshold other
    than the default 500 is reported (a raise left behind by an apply that was cut
    short looks like this), never changed. A raise planned for a purge is restored to
    the wanted value.
    """
    observed = server.deletion_threshold
    managed = desired.export.deletion_threshold if desired.export is not None else None
    wanted = managed if managed is not None else DEFAULT_DELETION_THRESHOLD
    if observed is None or (rebuild is not None and rebuild.threshold_restore is not None):
        return []
    if observed == wanted:
        return []
    if managed is None:
        notices.append(
            Notice(
                Level.WARNING,
                "threshold-differs",
                f"the export deletion threshold is {observed}, not the default {DEFAULT_DELETION_THRESHOLD}: left raised by an apply that was cut short? "
                "Set [export] deletion_threshold to keep it, or 'apply --resume' puts back what an interrupted apply raised",
            )
        )
        return []
    return [
        builder.add(
            server_step(
                id="threshold.set",
                resource="export deletion threshold",
                action=Action.UPDATE,
                summary=f"Set the export deletion threshold to {wanted}, as the desired state says",
                operation=SetDeletionThreshold(wanted),
                before={"threshold": observed},
                after={"threshold": wanted},
                approval="threshold-raise" if wanted > observed else None,
            )
        )
    ]


def restore_steps(licences_before, tenant, depends_on, earlier=False):
    """After the re-creation: each purged user's direct licences assigned again exactly as
    they were (every SKU, the service plans an admin had switched off), and their mailboxes
    waited for. A licence that came from a group is not assigned directly (the plan says why).

    The users are named by UPN: the re-created objects get new ids, which apply looks up
    after the sync. ``earlier``: users an earlier apply purged (the journal's record).
    """
    skus = {s.sku_id: s for s in tenant.skus}
    licence_id, verify_id = ("licences.restore-owed", "mailboxes.restored-owed.verify") if earlier else ("licences.restore", "mailboxes.restored.verify")
    per_sku, mailboxes = {}, []
    for upn, licences in licences_before:
        for assignment in licences:
            sku = skus.get(assignment.sku_id)
            if assignment.by_group or sku is None:
                continue
            per_sku.setdefault(sku.sku_id, []).append((upn, assignment.disabled_plans))
            if sku.includes_exchange and not set(sku.exchange_plan_ids) <= set(assignment.disabled_plans) and upn not in mailboxes:
                mailboxes.append(upn)
    steps = []
    for sku_id, users in per_sku.items():
        sku = skus[sku_id]
        refs = tuple(UserRef("", upn) for upn, _ in users)
        disabled = tuple((upn.lower(), plans) for upn, plans in users if plans)
        steps.append(
            Step(
                id=f"{licence_id}[{sku.part_number}]",
                provider="tenant",
                resource=f"licenses/{sku.part_number}",
                action=Action.UPDATE,
                summary=f"Assign {sku.part_number} again to {len(refs)} re-created user(s), as before the purge"
                + (f" ({len(disabled)} with service plans switched off)" if disabled else ""),
                operation=AssignLicense(sku.sku_id, sku.part_number, refs, disabled),
                after={"licences": {upn: list(plans) or "all plans" for upn, plans in users}},
                depends_on=tuple(depends_on),
            )
        )
    if mailboxes:
        steps.append(
            Step(
                id=verify_id,
                provider="tenant",
                resource="mailboxes",
                action=Action.CHECK,
                summary=f"Wait for the {len(mailboxes)} re-created user(s)' Exchange Online mailbox(es) and verify them",
                operation=VerifyMailboxes(tuple(UserRef("", upn) for upn in mailboxes)),
                depends_on=tuple(s.id for s in steps),
            )
        )
    return steps


def licence_record_notices(licences_before, tenant, earlier=False):
    """What each purged user held, as the plan records it (restored after the re-creation)."""
    names = {s.sku_id: s.part_number for s in tenant.skus}
    held = []
    for upn, licences in licences_before:
        parts = []
        for a in licences:
            how = "by group" if a.by_group else "direct"
            off = f", {len(a.disabled_plans)} plan(s) off" if a.disabled_plans else ""
            parts.append(f"{names.get(a.sku_id, a.sku_id)} ({how}{off})")
        held.append(f"{upn}: {', '.join(parts)}")
    if not held:
        return []
    if earlier:
        return [
            Notice(
                Level.WARNING,
                "purge-licences-owed",
                f"{len(held)} user(s) purged by an earlier apply (the journal's record) are not licensed again yet; their licences are restored "
                f"as they were (group licences come back through their group): {'; '.join(held)}",
            )
        ]
    return [Notice(Level.INFO, "purge-licences", f"licences of the purged users, restored after the re-creation (group licences come back through their group): {'; '.join(held)}")]
