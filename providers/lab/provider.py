"""The core's provider interfaces in front of a :class:`~providers.lab.world.Lab`.

Waiting is lab time: a sync cycle or a mailbox that is still provisioning makes
the clock advance, exactly as far as the real wait would have lasted.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from reconciler.errors import ProviderError, RefusedError
from reconciler.model import (
    CloudUser,
    DeletedUser,
    LicenseAssignment,
    LicensingGroup,
    MailboxState,
    SchedulerState,
    ServerState,
    Sku,
    TenantState,
)
from reconciler.operations import (
    SERVER_OPERATIONS,
    TENANT_OPERATIONS,
    AddGroupMembers,
    AssignLicense,
    CreateRule,
    Outcome,
    PurgeDeletedUsers,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    RemoveLicense,
    RemoveRule,
    ReprocessLicences,
    RunSyncCycle,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
    VerifyMailboxes,
)
from reconciler.progress import Progress
from reconciler.provider import ServerProvider, Target, TenantProvider
from providers.lab import store
from providers.lab.store_decode import settle
from providers.lab.world import iso_to_minute, minute_to_iso

MAILBOX_WAIT_MINUTES = 60
#: A licence batch reports its progress every so many users.
PROGRESS_EVERY = 1000


class LabServer(ServerProvider):
    SUPPORTS = SERVER_OPERATIONS

    def __init__(self, lab, allow_staging=False):
        self.lab = lab
        #: Like the real target (``allow_staging`` in [target.entra_connect]): a server in
        #: staging mode is refused every change unless the desired state allows it.
        self.allow_staging = allow_staging

    def describe(self):
        return f"lab Entra Connect server (build {self.lab.server.build})"

    def observe(self):
        server = self.lab.server
        return ServerState(
            scheduler=SchedulerState(
                sync_cycle_enabled=server.sync_cycle_enabled,
                staging_mode=server.staging_mode,
                cycle_in_progress=server.cycle is not None,
                next_policy=server.next_policy,
            ),
            rules=tuple(server.rules),
            connectors=tuple(server.connectors),
            deletion_threshold=server.deletion_threshold,
            run_history=tuple(server.run_history[-20:]),
        )

    def connector_space(self, joins=False):
        lab = self.lab
        anchors = lab.metaverse_anchors()  # only the resource-forest mailboxes: a small dict
        return (
            (c.identifier, dn, kind, bool(anchor), anchor if joins else "")
            for c in lab.ad_connectors()
            for guid, dn, kind in lab.connector_space(c.identifier)
            for anchor in (anchors.get(guid, guid),)
        )

    def apply(self, operation):
        lab = self.lab
        if lab.server.staging_mode and not self.allow_staging:
            raise RefusedError(
                self.name,
                type(operation).__name__,
                "the server is in staging mode; refusing to change it (set allow_staging = true in [target] to allow it; nothing was changed)",
            )
        match operation:
            case SetScheduler(enabled):
                lab.set_scheduler(enabled)
                return Outcome(f"SyncCycleEnabled = {enabled}")
            case SetRuleDisabled(identifier, _name, disabled):
                lab.set_rule_disabled(identifier, disabled)
                return Outcome()
            case CreateRule(rule):
                if lab.server.rules and any(r.identifier == rule.identifier for r in lab.server.rules):
                    raise ProviderError(self.name, f"rule {rule.name!r}", "a rule with this identifier exists already")
                lab.put_rule(rule)
                return Outcome()
            case UpdateRule(rule):
                if not any(r.identifier == rule.identifier for r in lab.server.rules):
                    raise ProviderError(self.name, f"rule {rule.name!r}", "no rule with this identifier to update")
                lab.put_rule(rule)
                return Outcome()
            case RemoveRule(identifier, _name):
                lab.remove_rule(identifier)
                return Outcome()
            case RunSyncCycle(policy):
                return self._run_cycle(policy)
            case SetContainerScope(included, excluded, connector):
                lab.set_container_scope(included, excluded, connector=connector)
                return Outcome()
            case SetExcludedAttributes(attributes):
                lab.set_excluded_attributes(attributes)
                return Outcome()
            case SetDeletionThreshold(threshold):
                lab.set_deletion_threshold(threshold)
                return Outcome()
        raise TypeError(f"unsupported operation {operation!r}")

    def _run_cycle(self, policy):
        lab = self.lab
        if lab.server.cycle is not None:
            # A scheduled cycle is running: wait for it, then start ours.
            lab.advance_to(lab.server.cycle.ends_at)
        cycle = lab.start_cycle(policy)
        connectors = len(lab.server.connectors)
        self.on_progress(Progress(f"{policy.value} sync cycle", 0.0, 0, connectors, "connectors", remaining=(cycle.ends_at - cycle.started_at) * 60.0))
        lab.advance_to(cycle.ends_at)
        results = [r for r in lab.server.run_history if iso_to_minute(r.started) == cycle.started_at]
        failed = [r for r in results if not r.ok]
        if failed:
            first = failed[0]
            raise ProviderError(
                self.name,
                "sync cycle",
                f"{first.connector} {first.profile} ended '{first.result}'" + (f": {first.detail}" if first.detail else ""),
            )
        return Outcome(f"{policy.value} cycle {minute_to_iso(cycle.started_at)} to {minute_to_iso(cycle.ends_at)}: all runs succeeded")


def _licences(user, seen=None):
    """The user's licences as the tenant reports them. ``seen``: a dict in which equal ones are
    made once and shared (100,000 users licensed in the same minute hold equal assignments)."""
    if seen is None:
        seen = {}
    return tuple(_assignment(lic, seen) for lic in user.licenses)


def _assignment(lic, seen):
    key = (lic.sku_id, lic.by_group, lic.assigned_at, lic.disabled_plans)
    found = seen.get(key)
    if found is None:
        seen[key] = found = LicenseAssignment(lic.sku_id, lic.by_group, minute_to_iso(lic.assigned_at), tuple(lic.disabled_plans))
    return found


_MAILBOX_STATES = {state.value: state for state in MailboxState}


def _group(group):
    return LicensingGroup(
        group.id, group.display_name, tuple((g.sku_id, tuple(g.disabled_plans)) for g in group.licenses), frozenset(group.members)
    )


class LabTenant(TenantProvider):
    SUPPORTS = TENANT_OPERATIONS

    def __init__(self, lab):
        self.lab = lab

    def describe(self):
        return "lab tenant contoso.onmicrosoft.com"

    def observe(self, selection):
        lab = self.lab
        consumed = lab.consumed_units()
        skus = tuple(Sku(s.sku_id, s.part_number, s.prepaid, consumed.get(s.sku_id, 0), s.includes_exchange, s.exchange_plan_ids) for s in lab.skus)
        # The lab knows each synced user's AD object; Graph does not (its provider leaves it None).
        classes = store.ad_object_classes(lab)
        seen, states, mailbox_state = {}, _MAILBOX_STATES, lab.mailbox_state
        # 100,000 users: one comprehension, CloudUser's fields positional, in their order (keywords
        # cost a fifth of the observation; tests/test_lab_observe.py checks the order).
        users = [
            CloudUser(
                user.id,
                user.upn,
                user.synced,
                user.on_prem_dn,
                user.usage_location,
                _licences(user, seen) if user.licenses else (),
                states[mailbox_state(user)],
                classes.get(user.immutable_id) if user.synced else None,
            )
            for user in lab.cloud_users
            if user.deleted_at is None
        ]
        deleted = tuple(
            DeletedUser(
                u.id,
                u.upn,
                minute_to_iso(u.deleted_at),
                u.synced,
                u.on_prem_dn,
                u.usage_location,
                licenses=_licences(u),
                # The mailbox is soft-deleted with its user: the lab knows whether there is one.
                mailbox=MailboxState(lab.mailbox_state(u)),
                had_exchange_plan=u.exchange_plan_since is not None or any(lic.assigned_at is not None for lic in u.licenses if _exchange_on(lab, lic)),
            )
            for u in lab.cloud_users
            if u.deleted_at is not None
        )
        groups = tuple(_group(g) for key in selection.groups if (g := lab.group(key)) is not None)
        settle(len(users))  # the observation lives as long as the plan made from it
        return TenantState(users=tuple(users), skus=skus, deleted_users=deleted, groups=groups)

    def apply(self, operation):
        lab = self.lab
        match operation:
            case AssignLicense(sku_id, part, users, disabled):
                keep = dict(disabled)
                return self._each(users, lambda ref: lab.assign_license(ref.id, sku_id, keep.get(ref.upn.lower(), ())), f"{part} licences assigned")
            case RemoveLicense(sku_id, part, users):
                return self._each(users, lambda ref: lab.remove_license(ref.id, sku_id), f"{part} licences removed")
            case AddGroupMembers(group_id, _name, users):
                return self._each(users, lambda ref: lab.add_group_member(group_id, ref.id))
            case ReprocessLicences(users):
                return self._each(users, lambda ref: lab.reprocess_license_assignment(ref.id))
            case PurgeDeletedUsers(users):
                return self._each(users, lambda ref: lab.purge_deleted_user(ref.id))
            case VerifyMailboxes(users):
                return self._verify(users)
        raise TypeError(f"unsupported operation {operation!r}")

    def _each(self, users, action, what=None):
        failures = []
        for count, ref in enumerate(users, 1):
            try:
                action(ref)
            except ProviderError as exc:
                failures.append((ref.upn, exc.message))
            if what and count % PROGRESS_EVERY == 0:
                self.on_progress(Progress(what, 0.0, count, len(users), "licences"))
        return Outcome(f"{len(users) - len(failures)} of {len(users)} done", tuple(failures))

    def _verify(self, users):
        lab = self.lab
        began = lab.clock
        deadline = lab.clock + MAILBOX_WAIT_MINUTES
        states = {ref.upn: self._mailbox(ref) for ref in users}
        waiting = [ref for ref in users if states[ref.upn] == "pending"]
        while waiting and lab.clock < deadline:
            present = sum(1 for s in states.values() if s == "present")
            self.on_progress(Progress("mailboxes to appear", (lab.clock - began) * 60.0, present, len(users), "mailboxes", waiting_for=f"{len(waiting)} provisioning"))
            lab.advance(min(5, deadline - lab.clock))
            # While waiting, only the pending ones are asked again; the answer is read once
            # more for everyone at the end (a sync meanwhile may have deleted a user).
            states.update((ref.upn, self._mailbox(ref)) for ref in waiting)
            waiting = [ref for ref in waiting if states[ref.upn] == "pending"]
        if lab.clock != began:
            states = {ref.upn: self._mailbox(ref) for ref in users}
        failures = tuple((upn, f"no Exchange Online mailbox ({state})") for upn, state in states.items() if state != "present")
        return Outcome(f"{len(users) - len(failures)} of {len(users)} mailboxes present", failures)

    def _mailbox(self, ref):
        user = self.lab.cloud_user(ref.id)
        return "missing user" if user is None else self.lab.mailbox_state(user)


class LabTarget(Target):
    """The lab as a target; persists the lab at every checkpoint (after each apply
    step), appending what changed to the file's change log. Closing folds that log
    into the lab file; it writes nothing if no checkpoint did: reading the lab never
    rewrites its file."""

    def __init__(self, lab, path=None, allow_staging=False, loaded_from=None):
        self.lab = lab
        self.path = Path(path) if path else None
        # The identity of the file version the lab was read from (store.identity), if known.
        self._loaded_from = loaded_from
        self._checkpointed = False
        super().__init__(LabServer(lab, allow_staging), LabTenant(lab), description=f"lab ({self.path})" if self.path else "lab (in memory)")

    @property
    def key(self):
        return f"lab:{self.path.resolve() if self.path else id(self.lab)}"

    def state_dir(self):
        return self.path.parent if self.path else super().state_dir()

    def now(self):
        from providers.lab.world import EPOCH

        return EPOCH + dt.timedelta(minutes=self.lab.clock)

    def sleep(self, seconds):
        # Waiting in the lab is lab time passing, at least a minute of it.
        self.lab.advance(max(1, round(seconds / 60)))

    def checkpoint(self):
        if self.path is not None:
            self._loaded_from = store.save(self.lab, self.path)
            self._checkpointed = True

    def close(self):
        """Folds the change log this target's checkpoints wrote into the lab file (see
        store.save); a target that wrote nothing writes nothing."""
        super().close()
        if self._checkpointed:
            store.compact(self.path)

    def refresh(self):
        """Read the lab file again: what was loaded before the lock was taken may be stale.

        Unless it is the very file version the lab came from or was last saved to
        (a 100,000-user lab takes a second to read)."""
        if self.path is not None and self.path.exists():
            if self._loaded_from is not None and store.identity(self.path) == self._loaded_from:
                return
            lab, self._loaded_from = store.load_with_identity(self.path)
            self.lab = self.server.lab = self.tenant.lab = lab

def open_lab_target(path=None, create=True, allow_staging=False):
    """The lab at ``path`` (default ``.syncprep/lab.json``), created on first use."""
    path = Path(path) if path else store.DEFAULT_PATH
    if create and not path.exists():
        lab, _created = store.load_or_create(path)
        return LabTarget(lab, path, allow_staging)
    lab, loaded_from = store.load_with_identity(path)
    return LabTarget(lab, path, allow_staging, loaded_from)


__all__ = ["LabServer", "LabTenant", "LabTarget", "open_lab_target"]


def _exchange_on(lab, lic):
    sku = lab.sku(lic.sku_id)
    return sku is None or bool(set(sku.exchange_plan_ids) - set(lic.disabled_plans))
