"""Solution 2's planning: the OU scope, the export filter, and the purge with its rails.

The purge is the only irreversible thing syncprep does, so this is where the
safety rails live: only synced users, only those the desired state names, never
more than its maximum or a default ceiling, a share-of-deletes check that needs
``--force``, the export deletion threshold raised only with approval and then
restored, and an unreadable recycle bin blocking everything destructive.
"""

from __future__ import annotations

from typing import Optional

from attrs import evolve, frozen

from reconciler import dn
from reconciler.errors import PlanError
from reconciler.forests import Forests
from reconciler.joins import dn_key, staying, together, unjoined_leaving
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


def plan_purge(desired, observed, builder, notices, unsafe, cond=None):
    """Solution 2's destructive half: which users to hard-delete, and how they get to the recycle bin.

    ``cond``: the :class:`reconciler.outcome.Conditions` the plan's rules and export leave
    (whether msExchMailboxGuid comes back to a re-created person, through its own forest's
    rules or a joined object of another forest, which makes its purge gain nothing)."""
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
    excluding_now = bool(desired.export) and bool(
        {a.lower() for a in desired.export.excluded_attributes} - {a.lower() for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes}
    )
    selection = purge_selection(purge)
    active = [u for u in tenant.users if selection.matches(u) and _synced(u, "", notices) and _under_purge_ou(u, purge, excluding_now, notices)]
    deleted = [u for u in tenant.deleted_users if named_for_purge(u, purge) and _synced(u, " (in the recycle bin)", notices)]
    if active and not excluding_now:
        notices.append(
            Notice(
                Level.INFO,
                "purge-active-kept",
                f"{len(active)} user(s) of the [purge] selection are active: they are taken out and purged only in the plan that starts excluding an attribute from export",
            )
        )
        active = []
    active, deleted, kept, losses = _hold_out(active, deleted, purge, tenant, server, notices, cond)
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

    config_ids, scope_out, threshold_restore = [], None, None
    if cycled:
        config_ids, scope_out, threshold_restore = _take_out(desired, server, tenant, refs, builder, notices)
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


def _synced(user, where, notices):
    """Whether ``user`` was synced (a cloud-only user is never purged: the notice says so)."""
    if user.synced is None:
        notices.append(Notice(Level.WARNING, "purge-cloud-only", f"{user.upn}{where} is cloud-only: never purged"))
        return False
    return True


def _under_purge_ou(user, purge, excluding_now, notices):
    """Whether an active ``user`` is under a [purge] OU: only an OU can be taken out of sync."""
    if any(user.in_ou(ou) for ou in purge.ous):
        return True
    if excluding_now:
        notices.append(Notice(Level.WARNING, "purge-active-by-upn", f"{user.upn} is active and not under a [purge] OU: it cannot be taken out of sync alone; name its OU"))
    return False


def _take_out(desired, server, tenant, refs, builder, notices):
    """The scope steps that take the [purge] OUs out of their connectors' scopes (the sync then
    soft-deletes their users), and the threshold raised for them: ``(step ids, the scope while
    they are out, the restore of the threshold or None)``."""
    connectors = server.connectors_of_kind("AD")
    forests = Forests(connectors)
    now = scopes_of(connectors)
    scope_out, by_connector = dict(now), {}
    for ou in desired.purge.ous:
        by_connector.setdefault(forests.owner(ou).identifier, []).append(ou)
    for identifier, ous in by_connector.items():
        included, excluded = now[identifier]
        scope_out[identifier] = (included, _norm((*excluded, *ous)))
    # Every synced user still in the cloud but outside the scope the sync will run with
    # is deleted by it: also those whose OU was taken out by hand while the export
    # stopped (at the deletion threshold, say), whose deletions are still pending.
    leaving = [u for u in tenant.users if u.synced and u.on_prem_dn and not in_some_scope(u.on_prem_dn, scope_out)]
    pending = [u for u in leaving if not in_some_scope(u.on_prem_dn, now)]
    if pending:
        notices.append(_pending_notice(pending, server))
    config_ids = [builder.add(step) for step in _exclude_steps(connectors, forests, now, scope_out, by_connector, leaving)]
    found = deletions(server, now, scope_out, leaving, frozenset(dn_key(u.on_prem_dn) for u in leaving))
    notices += objects_leaving_notices(found, leaving, {c.identifier.lower(): c.name for c in connectors}, server.connector_space_error)
    raised, threshold_restore = _raise_threshold(desired, server, found.count, len(leaving), notices)
    if raised is not None:
        config_ids.append(builder.add(raised))
    extra = sorted({u.upn for u in leaving} - {r.upn for r in refs})
    if extra:
        notices.append(
            Notice(Level.WARNING, "scope-extra", f"{len(extra)} user(s) not purged leave the scope too; they come back from the recycle bin as they were: {', '.join(extra)}", tuple(extra))
        )
    return config_ids, scope_out, threshold_restore


def _exclude_steps(connectors, forests, now, scope_out, by_connector, leaving):
    """One step per AD connector whose exclusions change, counting the users it soft-deletes."""
    several = len(connectors) > 1
    for ad in connectors:
        (included, excluded), (_, new_excluded) = now[ad.identifier], scope_out[ad.identifier]
        if dn.same_set(excluded, new_excluded):
            continue
        mine = [u for u in leaving if not several or forests.owner(u.on_prem_dn, strict=False) is ad]
        yield server_step(
            id="rebuild.scope.exclude" + (f"[{ad.name}]" if several else ""),
            resource=f"connector/{ad.name}/scope",
            action=Action.UPDATE,
            summary=f"Take {', '.join(by_connector[ad.identifier])} out of the sync scope: {len(mine)} user(s) will be soft-deleted in the cloud (known after sync)",
            operation=SetContainerScope(tuple(included), new_excluded, ad.identifier if several else None),
            before={"included": list(included), "excluded": list(excluded)},
            after={"included": list(included), "excluded": list(new_excluded)},
        )


def _raise_threshold(desired, server, deleting, users, notices):
    """``(the step raising the export deletion threshold, its restore)`` when ``deleting``
    deletions (``users`` of them users) exceed it, else ``(None, None)`` and a notice."""
    threshold = server.deletion_threshold
    if threshold is None:
        notices.append(Notice(Level.WARNING, "threshold-unknown", "the export deletion threshold is off or could not be read"))
        return None, None
    if deleting <= threshold:
        notices.append(Notice(Level.INFO, "threshold-ok", f"{deleting} deletion(s) stay under the export deletion threshold of {threshold}"))
        return None, None
    # Export counts every deleted object, not only users (groups and contacts in the
    # OU too): leave a margin so one more deletion does not stop the whole export.
    raised = deleting + max(10, deleting // 10)
    objects = f", {deleting} objects in all" if deleting > users else ""
    back = desired.export.deletion_threshold if desired.export is not None and desired.export.deletion_threshold is not None else threshold
    return (
        _threshold_step(
            "rebuild.threshold.raise",
            f"Raise the export deletion threshold from {threshold} to {raised} for this sync ({users} users{objects} and a margin; restored afterwards): otherwise the export stops and deletes nothing",
            threshold,
            raised,
        ),
        _threshold_step("threshold.restore", f"Restore the export deletion threshold to {back}", raised, back),
    )


def _threshold_step(id, summary, before, after, approval="threshold-raise"):
    """A step that sets the export deletion threshold from ``before`` to ``after``."""
    return server_step(
        id=id,
        resource="export deletion threshold",
        action=Action.UPDATE,
        summary=summary,
        operation=SetDeletionThreshold(after),
        before={"threshold": before},
        after={"threshold": after},
        approval=approval,
    )


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


def _hold_out(active, deleted, purge, tenant, server, notices, cond=None):
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
        risk = _risk(user, tenant, clear) or _comes_back(user, cond)
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


def _comes_back(user, cond):
    """Why purging ``user`` gains nothing because msExchMailboxGuid comes back to the
    re-created user: its own forest's rules still flow it into the new object, or another
    forest's joined object brings it (None: it does not)."""
    back = cond.guid_returns(getattr(user, "object_type", None), user.on_prem_dn) if cond is not None else None
    if back is None:
        return None
    code, why = back
    certainty = "may come back" if code == "guid-may-stay" else "comes back"
    where = "from its own forest" if code == "guid-stays" else "from another forest"
    return (
        f"msExchMailboxGuid {certainty} to the re-created person {where} ({why.removeprefix('re-created, but ')}): "
        "a rebuild gains nothing, and no licence is spent on them; stop the flow first: replace the rule on every connector that brings it "
        '(connector = "all-ad" with several forests), or exclude msExchMailboxGuid from export ([export])'
    )


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
    if any(g.flows_now for g in guid_report(server.rules, server.rules, ad_connectors=server.connectors_of_kind("AD"))):
        return False
    if server.scheduler.next_policy is SyncPolicy.INITIAL:
        return False
    full = [r.started for r in server.run_history if r.ok and r.profile == "Full Synchronization"]
    if not full:
        return False
    return any(r.ok and r.profile == "Export" and r.started >= max(full) for r in server.run_history)


def scopes_of(connectors):
    """``{connector id: (included, excluded)}``: each AD connector's scope as it is now."""
    return {c.identifier: (tuple(c.included_containers), tuple(c.excluded_containers)) for c in connectors}


@frozen
class Deletions:
    """What a scope change deletes in the cloud (:func:`deletions`)."""

    #: ``{kind: count}`` of the objects leaving the sync scope, but those whose person stays
    #: (None: the connector space could not be counted).
    kinds: Optional[dict]
    #: The cloud deletions the export counts against its deletion threshold.
    count: int
    #: ``((object, joined object), ...)``: objects leaving whose person stays (:func:`reconciler.joins.staying`).
    kept: tuple = ()
    #: Each person whose objects of several forests leave together: one cloud deletion (:func:`reconciler.joins.together`).
    merged: tuple = ()
    #: DN keys of persons leaving without a metaverse id: each counted as a deletion of its own.
    unknown: tuple = ()


def deletions(server, before, after, leaving, anchors=frozenset()):
    """The :class:`Deletions` of a scope change from ``before`` to ``after``: the export
    counts every deletion, not only users' (groups, contacts, devices too), and at least the
    synced users ``leaving``; an object joined with another forest's object that stays in
    scope deletes nothing in the cloud (:func:`reconciler.joins.staying`, with several AD
    forests) and is not counted, unless it is in ``anchors``, the DN keys of the objects the
    leaving users come from (their accounts: the cloud user is deleted). Objects of one person
    leaving together (a linked mailbox and its account) are one cloud user, counted once; only
    where the join was seen: an object without a metaverse id counts on its own (cautious)."""
    kinds = objects_leaving(server, before, after)
    kept = staying(server.joins, before, after, anchors)
    if kinds is None:
        return Deletions(None, len(leaving), kept)
    for (_connector, object_type, _dn), _other in kept:
        kind = dict(OBJECT_KINDS).get(object_type, "other object(s)")
        kinds[kind] = kinds.get(kind, 0) - 1
    kinds = {k: n for k, n in kinds.items() if n > 0}
    merged = together(server.joins, before, after, kept)
    count = sum(kinds.values()) - sum(len(person) - 1 for person in merged)
    return Deletions(kinds, max(len(leaving), count), kept, merged, unjoined_leaving(server.joins, before, after))


def in_some_scope(distinguished_name, scopes):
    """Whether some AD connector's scope (``{connector id: (included, excluded)}``) holds the object."""
    return any(dn.in_scope(distinguished_name, included, excluded) for included, excluded in scopes.values())


#: How the scope notice names each kind of AD object (the connector space's object types).
OBJECT_KINDS = (("user", "user(s)"), ("inetOrgPerson", "user(s)"), ("group", "group(s)"), ("contact", "contact(s)"), ("computer", "device(s)"))


def objects_leaving(server, now, wanted):
    """``{kind: count}`` of the objects a scope change from ``now`` to ``wanted`` (each
    ``{connector id: (included, excluded)}``) takes out of sync, by the connector space's
    counts per container (``server.object_counts``); None when they could not be read."""
    counts = server.object_counts
    if counts is None:
        return None
    per_kind = {}
    for count in counts:
        scope_now = now.get(count.connector)
        scope_after = wanted.get(count.connector)
        if scope_now is None or scope_after is None:
            continue
        if dn.in_scope(count.container, *scope_now) and not dn.in_scope(count.container, *scope_after):
            kind = dict(OBJECT_KINDS).get(count.object_type, "other object(s)")
            per_kind[kind] = per_kind.get(kind, 0) + count.count
    return per_kind


def objects_leaving_notices(found, leaving_users, names=None, error=None):
    """A notice counting every kind of object a scope change takes out of sync (``found``, the
    :class:`Deletions`; its kinds None: unknown, said so with ``error``, why the connector
    space could not be read). The export deletes each of them in the cloud, groups, contacts
    and devices as well as users, a person's objects once. The objects whose person stays
    through a joined object of another forest (:func:`reconciler.joins.staying`) are named
    with what they lose (``names``: connector identifier -> name)."""
    return _staying_notices(found.kept, names or {}) + _leaving_notices(found, leaving_users, error, names or {})


def _staying_notices(kept, names):
    if not kept:
        return []
    name = lambda connector: names.get(connector.lower(), connector)  # noqa: E731
    each = "; ".join(f"{d} ({name(c)}), joined with {od} ({name(oc)})" for (c, _t, d), (oc, _ot, od) in kept)
    return [
        Notice(
            Level.WARNING,
            "scope-joined-leave",
            f"{len(kept)} object(s) leave the sync scope but delete nothing in the cloud: each is joined into a person with an object of another forest "
            "that stays in scope, so the cloud user stays and loses every attribute the object leaving brought (msExchMailboxGuid, proxyAddresses, "
            f"mailNickname, usageLocation and the rest its forest's rules flow): {each}",
        )
    ]


def _leaving_notices(found, leaving_users, error, names):
    per_kind = found.kinds
    if per_kind is None:
        return [
            Notice(
                Level.WARNING,
                "scope-objects-unknown",
                f"{len(leaving_users)} synced user(s) leave the sync scope; groups, contacts and devices in the same containers leave it too, "
                f"but the server's connector space could not be counted: {error or 'no reason given'}. Check them before applying: the export "
                f"deletion threshold is compared with the {len(leaving_users)} user(s) alone, a lower bound. Lab assumption: "
                "Get-ADSyncConnectorStatistics' TotalConnectors counts the objects the paged Get-ADSyncCSObject listing shows with IsConnector; "
                "a read holding another number is taken as incomplete (the counts are then unknown)",
            )
        ]
    if not per_kind:
        return []
    order = ["user(s)", "group(s)", "contact(s)", "device(s)", "other object(s)"]
    parts = [f"{per_kind[k]} {k}" for k in order if per_kind.get(k)]
    return [
        Notice(
            Level.WARNING,
            "scope-objects",
            f"the scope change takes {sum(per_kind.values())} object(s) out of sync ({', '.join(parts)}): the sync deletes each of them in the cloud "
            "(groups, contacts and devices too, not only users), and each counts against the export deletion threshold"
            + _merged_text(found, names)
            + _unknown_joins_text(found),
        )
    ]


def _merged_text(found, names):
    if not found.merged:
        return ""
    name = lambda connector: names.get(connector.lower(), connector)  # noqa: E731
    each = "; ".join(" with ".join(f"{d} ({name(c)})" for c, _t, d in person) for person in found.merged)
    return (
        f", a person once: {len(found.merged)} person(s) leave with objects of several forests at once (joined in the connector space: a linked "
        f"mailbox and its account), one cloud user each, so {found.count} deletion(s) count: {each}"
    )


def _unknown_joins_text(found):
    if not found.unknown:
        return ""
    return (
        f"; {len(found.unknown)} person object(s) leaving are listed in the connector space without a metaverse id (ConnectedMVObjectId): whether "
        "each is joined with another object leaving too is unknown, so each counts as a cloud deletion of its own (the cautious, higher number)"
    )


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
    """Each AD connector's OU filtering as the desired state (and a purge's bracket) wants it.

    ``[scope]`` names containers of any forest: each goes to the AD connector whose forest
    holds it (:class:`~reconciler.forests.Forests`); a connector it does not name keeps (or gets back) what it
    has now."""
    server, tenant = observed.server, observed.tenant
    out = rebuild.scope_out if rebuild is not None else None
    if desired.scope is None and out is None:
        return []
    connectors = server.connectors_of_kind("AD")
    if not connectors:
        raise PlanError("scope: no AD connector on the server")
    several = len(connectors) > 1
    now = scopes_of(connectors)
    current = dict(out) if out is not None else dict(now)
    wanted = dict(now)
    if desired.scope is not None:
        named, forests = {}, Forests(connectors)
        for kind, containers in ((0, desired.scope.included), (1, desired.scope.excluded)):
            for container in containers:
                named.setdefault(forests.owner(container).identifier, ([], []))[kind].append(container)
        for identifier, (included, excluded) in named.items():
            wanted[identifier] = (_norm(included), _norm(excluded))
    changed = [c for c in connectors if not (dn.same_set(current[c.identifier][0], wanted[c.identifier][0]) and dn.same_set(current[c.identifier][1], wanted[c.identifier][1]))]
    if not changed:
        return []
    gone = [u for u in tenant.users if u.synced and u.on_prem_dn and in_some_scope(u.on_prem_dn, current) and not in_some_scope(u.on_prem_dn, wanted)]
    leaving = [u.upn for u in gone]
    found = deletions(server, current, wanted, leaving, frozenset(dn_key(u.on_prem_dn) for u in gone))
    deleting = found.count
    if leaving:
        notices.append(Notice(Level.WARNING, "scope-deletes", f"the new scope soft-deletes {len(leaving)} synced user(s) in the cloud: {', '.join(leaving)}", tuple(leaving)))
        synced = sum(1 for u in tenant.users if u.synced)
        share = 100.0 * len(leaving) / max(synced, 1)
        if synced >= MIN_SYNCED_FOR_PERCENT and share > SCOPE_MAX_PERCENT:
            unsafe.append(f"Too many deletes: {share:.2f}% is over {SCOPE_MAX_PERCENT:.2f}% ({len(leaving)}/{synced} synced users leave the scope); force required")
    if leaving or found.kinds or found.kept:
        notices += objects_leaving_notices(found, leaving, {c.identifier.lower(): c.name for c in connectors}, server.connector_space_error)
    threshold = server.deletion_threshold
    if threshold is not None and deleting > threshold:
        raise PlanError(
            f"scope: {deleting} deletions ({len(leaving)} of them synced users) exceed the export deletion threshold of {threshold}: the export would stop and delete nothing"
        )
    back = out is not None
    steps = []
    for ad in changed:
        (current_in, current_out), (wanted_in, wanted_out) = current[ad.identifier], wanted[ad.identifier]
        steps.append(
            builder.add(
                server_step(
                    id="scope.containers" + (f"[{ad.name}]" if several else ""),
                    resource=f"connector/{ad.name}/scope",
                    action=Action.UPDATE,
                    summary="Bring the OU back into the sync scope, after the purge: the users are re-created as new objects"
                    if back and out[ad.identifier] != now[ad.identifier]
                    else "Change the AD connector's OU scope",
                    operation=SetContainerScope(wanted_in, wanted_out, ad.identifier if several else None),
                    before={"included": list(current_in), "excluded": list(current_out)},
                    after={"included": list(wanted_in), "excluded": list(wanted_out)},
                )
            )
        )
    return steps


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
    summary = f"Set the export deletion threshold to {wanted}, as the desired state says"
    return [builder.add(_threshold_step("threshold.set", summary, observed, wanted, approval="threshold-raise" if wanted > observed else None))]


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


def entering(cond, server, builder, notices):
    """``cond`` with the AD connectors whose scope this plan widens (their objects enter the
    sync): with several forests, a person object entering may join an existing person and
    bring msExchMailboxGuid from its forest (a linked mailbox coming back), which today's joins
    cannot show; users whose person has no object of that connector yet get the cautious answer."""
    if cond.joins is None:
        return cond
    now = scopes_of(server.connectors_of_kind("AD"))
    names = {c.identifier: c.name for c in server.connectors_of_kind("AD")}
    wider = {}
    for step in builder.steps.values():
        op = step.operation
        if not isinstance(op, SetContainerScope) or op.connector not in now or step.id.startswith("rebuild."):
            continue
        included, excluded = now[op.connector]
        new = [c for c in op.included if not _in_scope(c, included, excluded)] + [c for c in excluded if _in_scope(c, op.included, op.excluded)]
        if new:
            wider[op.connector] = new
    if not wider:
        return cond
    for identifier, containers in sorted(wider.items()):
        notices.append(
            Notice(
                Level.WARNING,
                "scope-enters",
                f"the scope change brings {', '.join(containers)} of {names[identifier]} into the sync: a person object there may join an existing "
                f"person (a linked mailbox) and bring msExchMailboxGuid back through {names[identifier]}'s rules; users whose person has no "
                f"{names[identifier]} object yet are not licensed while those rules bring it (plan again after the sync)",
            )
        )
    return evolve(cond, entering=frozenset(wider))
