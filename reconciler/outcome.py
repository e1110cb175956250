"""Per-user outcomes: what a plan leaves each licensed-for user with, and why.

One view that the planner, apply, drift and the report read. A licence is
assigned, or removed and assigned again, only where a user's outcome says a
mailbox will come of it; everyone else gets a reason, takes no unit, and is left
alone (the promise "no licence where no mailbox can come").

:func:`conditions` says what the server leaves behind after a plan (staging mode,
whether msExchMailboxGuid stays in the cloud per AD object type, which attributes
stop flowing); :func:`predict` turns it and the tenant into one
:class:`UserOutcome` per user and SKU.
"""

from __future__ import annotations

import enum
from typing import Optional

from attrs import Factory, field, frozen

from reconciler.errors import PlanError
from reconciler.forests import Forests
from reconciler.model import GUID_ATTRIBUTE, Direction, MailboxState, UserRef
from reconciler.provider import UserSelection
from reconciler.rules import guid_flow, joined_guid_flow, object_types
from reconciler.steps import Level, Notice

USAGE_LOCATION = "usageLocation"


class Verdict(enum.Enum):
    HAS_MAILBOX = "has mailbox"
    ASSIGN = "assign"
    RELICENSE = "remove and assign again"
    #: A group licence that made no mailbox: its assignment is processed again.
    REPROCESS = "reprocess group licence"
    PENDING = "mailbox provisioning"
    NOT_OWED = "no mailbox owed"
    BLOCKED = "not licensed"
    UNKNOWN = "unknown"


#: Verdicts that spend or move a licence.
ACTS = (Verdict.ASSIGN, Verdict.RELICENSE, Verdict.REPROCESS)

#: What the plan says about reprocessing, wherever it plans one.
REPROCESS_ASSUMPTION = (
    "Lab assumption: reprocessing a group licence (POST /users/{id}/reprocessLicenseAssignment) makes Exchange Online "
    "provision the mailbox once msExchMailboxGuid is gone, as removing and assigning a direct licence does; "
    "Microsoft documents reprocessing for licence errors only, so the mailbox is verified after it"
)


@frozen
class UserOutcome:
    """One user under one licence set: before, the verdict, and the reason."""

    upn: str
    sku: str
    verdict: Verdict
    #: A notice code for the reason (``no-usage-location``, ``guid-stays``, ...); "" when none.
    code: str = ""
    reason: str = ""
    user_id: str = field(default="", eq=False)
    object_type: Optional[str] = None
    #: "none", "direct" or "group".
    licence_before: str = "none"
    mailbox_before: str = MailboxState.UNKNOWN.value
    #: Service plans an admin switched off: kept when the licence is assigned again.
    disabled_plans: tuple[str, ...] = ()
    #: The licence entry (:attr:`LicenseSpec.label`) and wave the user is selected by.
    entry: str = ""
    wave: str = ""
    #: The licensing group the entry licenses through ("" for a direct licence).
    group: str = ""

    @property
    def ref(self):
        return UserRef(self.user_id, self.upn)

    @property
    def licence_after(self):
        if self.verdict is Verdict.RELICENSE:
            return "assigned again"
        if self.verdict is Verdict.REPROCESS:
            return "group, reprocessed"
        if self.verdict is Verdict.ASSIGN:
            return "group" if self.group else "assigned"
        return self.licence_before

    @property
    def mailbox_after(self):
        if self.verdict is Verdict.HAS_MAILBOX or (self.verdict in ACTS and self.mailbox_before == "present"):
            return "present"
        if self.verdict in ACTS:
            return "expected"
        if self.verdict is Verdict.PENDING:
            return "pending"
        if self.verdict is Verdict.UNKNOWN:
            return "unknown"
        return "none"

    @property
    def as_desired(self):
        """Whether the user ends as the licence set wants: with a mailbox (or none owed)."""
        return self.verdict in (Verdict.HAS_MAILBOX, Verdict.NOT_OWED, *ACTS)

    def to_dict(self):
        return {
            "upn": self.upn,
            "sku": self.sku,
            "wave": self.wave,
            "group": self.group,
            "object_type": self.object_type or "",
            "licence_before": self.licence_before,
            "licence_after": self.licence_after,
            "mailbox_before": self.mailbox_before,
            "mailbox_after": self.mailbox_after,
            "outcome": self.verdict.value,
            "code": self.code,
            "reason": self.reason,
        }


@frozen
class Conditions:
    """What the server leaves behind once the plan is done, as the outcomes need it."""

    staging: bool = False
    #: AD object type -> why msExchMailboxGuid stays in the cloud for it ("" or missing: it does not).
    guid_stays: dict = field(factory=dict)
    #: AD object type -> the attributes that stop flowing for it, and the rules that carried them.
    lost_flows: dict = field(factory=dict)
    #: A full sync runs before the licences: what the plan predicts is what the cloud will hold.
    sync_planned: bool = False
    #: When the last full sync with the current rules ended (ISO), or None.
    cleared_since: Optional[str] = None
    #: UPNs (lower case) purged and re-created by the plan: new objects, never had the GUID.
    recreated: frozenset = frozenset()
    #: UPN (lower case) -> the licences a purged user held before the purge (restored by rebuild).
    before_purge: dict = field(factory=dict)
    #: UPNs (lower case) purged and re-created by an earlier apply (the journal's record):
    #: new objects without the GUID, observed as they are now.
    guid_gone: frozenset = frozenset()
    #: With several AD connectors: connector identifier -> its own ``guid_stays`` (an object
    #: meets only its forest's connector's rules), and the AD connectors to tell a user's.
    guid_stays_by_connector: dict = field(factory=dict)
    #: With several AD connectors: connector identifier -> {object type: why} where its rules
    #: still flow msExchMailboxGuid after the plan and the export does not exclude it, so it
    #: comes back even to a purged and re-created person joined with that connector's object.
    guid_returns_by_connector: dict = field(factory=dict)
    #: With several AD connectors: connector identifier -> (its rules now, after the plan), for
    #: a person joined from several forests, whose rules compete in one precedence order.
    rules_by_connector: dict = field(factory=dict, eq=False)
    #: msExchMailboxGuid excluded from export (now, after the plan).
    guid_excluded: tuple = (False, False)
    ad_connectors: tuple = ()
    #: With several AD connectors: the joins observed in the connector spaces (a
    #: :class:`reconciler.joins.Joins`), which tell the connectors whose objects share a
    #: user's metaverse object; None: not read, or could not be (the cautious answer).
    joins: Optional[object] = None
    #: Why the connector space could not be read (the provider's error, scrubbed), or None.
    joins_error: Optional[str] = None
    #: AD connectors whose scope the plan widens: their objects entering may join a person.
    entering: frozenset = frozenset()
    #: ``ad_connectors`` with their forests' domains worked out once (asked per user).
    forests: Forests = field(default=Factory(lambda self: Forests(self.ad_connectors), takes_self=True), eq=False)

    def guid_reason(self, object_type, on_prem_dn=None):
        """Why the GUID stays in the cloud for a user of ``object_type`` (None: it does not)."""
        found = self.guid_verdict(object_type, on_prem_dn)
        return found[1] if found else None

    def guid_verdict(self, object_type, on_prem_dn=None):
        """``(code, reason)`` when msExchMailboxGuid may stay in the cloud for a user of
        ``object_type``, else None.

        ``on_prem_dn``: the user's AD object, which tells its connector where there are
        several; without it (or when its domain names no single connector), each connector is
        judged on its own rules and any that still brings the GUID counts (the cautious answer). With
        several, the GUID is gone only if every connector whose objects are joined into the
        user's metaverse object stops it (an account/resource topology joins a user's account
        and its mailbox object of another forest into one person); where the joins are not
        known, every other connector whose rules still bring it for ``object_type`` counts."""
        source = self.guid_stays
        owner = None
        if self.guid_stays_by_connector and on_prem_dn:
            owner = self.forests.owner(on_prem_dn, strict=False)
            if owner is not None:
                source = self.guid_stays_by_connector.get(owner.identifier, self.guid_stays)
                members = self.joins.of(on_prem_dn) if self.joins is not None else None
                if members is not None and len({c.lower() for c, _t in members}) > 1:
                    return self._merged_verdict(owner, members) or self._loose_verdict(owner, members, self.guid_stays_by_connector)
        if owner is None and self.guid_stays_by_connector:
            return self._unknown_forest_verdict(object_type)
        own = _why_for(source, object_type)
        if own or owner is None:
            return ("guid-stays", own) if own else None
        return self._joined_verdict(owner, object_type, on_prem_dn, self.guid_stays_by_connector)

    def _unknown_forest_verdict(self, object_type):
        """A user whose forest is not known, with several AD connectors: each connector judged
        on its own rules (an object meets only its forest's rules: one forest's AuthoritativeNull
        does not stop another's flow), the GUID stays if any of them still brings it."""
        for ad in self.ad_connectors:
            why = _why_for(self.guid_stays_by_connector.get(ad.identifier, {}), object_type)
            if why:
                return (
                    "guid-may-stay",
                    f"its forest is not known (no onPremisesDistinguishedName, or its domain names no single AD connector), and {ad.name}'s rules "
                    f"still bring msExchMailboxGuid: {why}",
                )
        return None

    def _merged_verdict(self, owner, members):
        """A person joined from several forests: every joined object's connector's rules in
        one precedence order, as the sync engine orders them (domain-facts A4/A5)."""
        names = {c.identifier.lower(): c.name for c in self.ad_connectors}
        by_id = {k.lower(): v for k, v in self.rules_by_connector.items()}
        now = [(by_id.get(c.lower(), ((), ()))[0], t) for c, t in members]
        after = [(by_id.get(c.lower(), ((), ()))[1], t) for c, t in members]
        text, flows = joined_guid_flow(after)
        _excluded_now, excluded_after = self.guid_excluded
        if excluded_after:
            now_text, now_flows = joined_guid_flow(now)
            if not now_flows:
                return None
            text, flows = f"msExchMailboxGuid is excluded from export, and the value already in Entra ID stays ({now_text})", True
        if not flows:
            return None
        others = sorted({(names.get(c.lower(), c), t) for c, t in members if c.lower() != owner.identifier.lower()})
        joined = " and ".join(f"a {t} object of {name}" for name, t in others)
        where = " and ".join(f"{name}'s" for name in dict.fromkeys(name for name, _t in others))
        return (
            "guid-stays-joined",
            f"the metaverse person is joined with {joined} (seen in the connector space), and the rules of every joined connector, in one precedence "
            f"order, bring msExchMailboxGuid: {text}; to license, stop it on {where} connector too (connector = \"all-ad\")",
        )

    def guid_returns(self, object_type, on_prem_dn=None):
        """``(code, reason)`` when msExchMailboxGuid comes back to a user purged and re-created
        (a new cloud object), else None. Re-creation clears the GUID only where the flow into
        the new object is stopped: its own connector's rules (a replacement, an Apply-once
        NULL) or the export filter; the stock 'In from AD - User Exchange' flows it into the
        new object as into the old one. A joined object of another AD connector whose rules
        still flow the GUID brings it into the same metaverse person too (an account/resource
        forest join). Unknown joins or an unknown forest: every connector that flows it
        counts (the cautious answer)."""
        if not any(self.guid_returns_by_connector.values()):
            return None
        owner = self.forests.owner(on_prem_dn, strict=False) if on_prem_dn else None
        if owner is None:
            for ad in self.ad_connectors:
                why = _why_for(self.guid_returns_by_connector.get(ad.identifier, {}), object_type)
                if why:
                    return "guid-may-stay", f"re-created, but its forest is not known and {ad.name}'s rules still bring msExchMailboxGuid ({why})"
            return None
        members = self.joins.of(on_prem_dn) if self.joins is not None else None
        if members is not None and len({c.lower() for c, _t in members}) > 1:
            found = self._merged_returns(owner, members) or self._loose_verdict(owner, members, self.guid_returns_by_connector)
            return found if found is None or found[1].startswith("re-created") else (found[0], f"re-created, but {found[1]}")
        own = _why_for(self.guid_returns_by_connector.get(owner.identifier, {}), object_type)
        if own:
            return "guid-stays", f"re-created, but its own forest's rules still bring msExchMailboxGuid to the new object ({own})"
        if len(self.ad_connectors) < 2:
            return None
        found = self._joined_verdict(owner, object_type, on_prem_dn, self.guid_returns_by_connector)
        return None if found is None else (found[0], f"re-created, but {found[1]}")

    def _merged_returns(self, owner, members):
        """A re-created person joined from several forests: the rules of every joined
        connector after the plan, in one precedence order, unless the export leaves it out."""
        if self.guid_excluded[1]:
            return None
        if self.staging:
            return "staging-mode", "the server is in staging mode: it exports nothing, so msExchMailboxGuid stays in the cloud"
        names = {c.identifier.lower(): c.name for c in self.ad_connectors}
        by_id = {k.lower(): v for k, v in self.rules_by_connector.items()}
        text, flows = joined_guid_flow([(by_id.get(c.lower(), ((), ()))[1], t) for c, t in members])
        if not flows:
            return None
        joined = " and ".join(sorted({f"a {t} object of {names.get(c.lower(), c)}" for c, t in members if c.lower() != owner.identifier.lower()}))
        return (
            "guid-stays-joined",
            f"re-created, but the metaverse person is joined with {joined} (seen in the connector space), and the rules of every joined connector, "
            f"in one precedence order, bring msExchMailboxGuid: {text}",
        )

    def _joined_verdict(self, owner, object_type, on_prem_dn, by_connector):
        """The other connectors' say (``by_connector``: connector -> {object type: why the GUID
        stays}) on a user whose own connector stops the GUID."""
        members = self.joins.of(on_prem_dn) if self.joins is not None else None
        names = {c.identifier.lower(): c.name for c in self.ad_connectors}
        if members is not None:
            for connector, joined_type in members:
                if connector.lower() == owner.identifier.lower():
                    continue
                why = _why_for(by_connector.get(_known(connector, names, by_connector), {}), joined_type)
                if why:
                    name = names.get(connector.lower(), connector)
                    return (
                        "guid-stays-joined",
                        f"the metaverse person is joined with a {joined_type} object of {name} (seen in the connector space), and {name}'s rules bring "
                        f"msExchMailboxGuid: {why}; to license, replace the rule on {name}'s connector too (connector = \"{name}\", or connector = \"all-ad\")",
                    )
            return self._loose_verdict(owner, members, by_connector)
        unknown = self._why_unknown(on_prem_dn)
        for ad in self.ad_connectors:
            if ad.identifier == owner.identifier:
                continue
            why = _why_for(by_connector.get(ad.identifier, {}), object_type)
            if why:
                return (
                    "guid-may-stay",
                    f"whether a {ad.name} object is joined into the metaverse person is unknown ({unknown}), and {ad.name}'s rules still bring "
                    f"msExchMailboxGuid ({why}): it may still reach the cloud from there (an account/resource-forest join), so no licence is spent",
                )
        return None

    def _loose_verdict(self, owner, members, by_connector):
        """A person object of another connector listed without a metaverse id could be this
        user's partner (a linked mailbox whose join was not given) unless the person already
        has an object of that connector (one object per connector space joins a person): then
        that connector's say is unknown, and if its rules bring the GUID, the cautious answer."""
        names = {c.identifier.lower(): c.name for c in self.ad_connectors}
        seen = {c.lower() for c, _t in members} | {owner.identifier.lower()}
        unknown = [(c, t, f"a {t} object of {{name}} is listed in the connector space without a metaverse id (ConnectedMVObjectId)") for c, t in sorted(self.joins.loose)]
        unknown += [(c, t, f"the plan brings {t} objects of {{name}} into the sync scope") for c in sorted(self.entering) for t in ("user", "inetOrgPerson")]
        for connector, loose_type, what in unknown:
            if connector.lower() in seen:
                continue
            why = _why_for(by_connector.get(_known(connector, names, by_connector), {}), loose_type)
            if why:
                name = names.get(connector.lower(), connector)
                return (
                    "guid-may-stay",
                    f"{what.format(name=name)}, so whether one is joined into this person is unknown, and {name}'s rules still bring "
                    f"msExchMailboxGuid ({why}): it may still reach the cloud from there (an account/resource-forest join), so no licence is spent",
                )
        return None

    def _why_unknown(self, on_prem_dn):
        if self.joins is None:
            return "the connector space could not be read" + (f": {self.joins_error}" if self.joins_error else "")
        if self.joins.unjoined_object(on_prem_dn):
            return "its AD object is a connector in the connector space but carries no metaverse id (ConnectedMVObjectId)"
        return "its AD object was not found in the connector space"

    def usage_location_lost(self, object_type):
        """The rules whose disabling stops usageLocation for ``object_type`` ("" if it keeps flowing)."""
        for t, (attributes, rules) in self.lost_flows.items():
            if USAGE_LOCATION in attributes and (object_type is None or t.lower() == object_type.lower()):
                return rules
        return ""


def _why_for(stays, object_type):
    """From ``{object type: why the GUID stays}``: why for ``object_type`` (None: any type)."""
    if not any(stays.values()):
        return None
    if object_type is None:
        types = ", ".join(sorted(t for t, why in stays.items() if why))
        return f"msExchMailboxGuid stays in the cloud for {types} objects, and this target cannot tell which object type this user is"
    wanted = object_type.lower()
    return next((why for t, why in stays.items() if why and t.lower() == wanted), None)


def _known(connector, names, by_connector):
    """``connector`` as ``by_connector`` spells it (identifiers compare without case)."""
    if connector in by_connector:
        return connector
    return next((k for k in by_connector if k.lower() == connector.lower()), connector)


def conditions(server, predicted_rules, excluded_after, sync_planned, cleared_since, recreated=frozenset(), before_purge=None, guid_gone=frozenset()):
    """The :class:`Conditions` a plan leaves; ``server`` as observed before it."""
    ads = server.connectors_of_kind("AD")
    by_connector, returns, rules = {}, {}, {}
    if len(ads) == 1:
        # One forest: every rule is its connector's (the re-created user meets them all).
        returns[ads[0].identifier] = _guid_returns(server, predicted_rules, excluded_after)
    if len(ads) > 1:
        for ad in ads:
            mine = lambda rules: tuple(r for r in rules if r.connector.lower() == ad.identifier.lower())  # noqa: E731
            rules[ad.identifier] = (mine(server.rules), mine(predicted_rules))
            by_connector[ad.identifier] = _guid_stays(server, mine(server.rules), mine(predicted_rules), excluded_after)
            returns[ad.identifier] = _guid_returns(server, mine(predicted_rules), excluded_after)
    return Conditions(
        staging=server.scheduler.staging_mode,
        guid_stays=_guid_stays(server, server.rules, predicted_rules, excluded_after),
        lost_flows=lost_flows(server.rules, predicted_rules) if sync_planned else {},
        sync_planned=sync_planned,
        cleared_since=cleared_since,
        recreated=frozenset(recreated),
        before_purge=dict(before_purge or {}),
        guid_gone=frozenset(guid_gone),
        guid_stays_by_connector=by_connector,
        guid_returns_by_connector=returns,
        rules_by_connector=rules,
        guid_excluded=(_excludes_guid(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes), _excludes_guid(excluded_after)),
        ad_connectors=tuple(ads) if by_connector or returns else (),
        joins=server.joins if by_connector else None,
        joins_error=server.connector_space_error if by_connector else None,
    )


def _guid_stays(server, rules_now, rules_after, excluded_after):
    """AD object type -> why msExchMailboxGuid stays in the cloud for it, with these rules."""
    excluded_now = tuple(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    guid_excluded_now = GUID_ATTRIBUTE.lower() in {a.lower() for a in excluded_now}
    guid_excluded_after = GUID_ATTRIBUTE.lower() in {a.lower() for a in excluded_after}
    stays = {}
    for object_type in object_types(tuple(rules_now) + tuple(rules_after)):
        now_text, now_flows = guid_flow(rules_now, object_type)
        after_text, after_flows = guid_flow(rules_after, object_type)
        if server.scheduler.staging_mode:
            stays[object_type] = "the server is in staging mode: it exports nothing, so msExchMailboxGuid stays in the cloud"
        elif after_flows and not guid_excluded_after:
            stays[object_type] = f"msExchMailboxGuid still flows for {object_type} objects: {after_text}"
        elif guid_excluded_after and now_flows:
            # The sync engine stops managing an excluded attribute: the value already in
            # Entra ID stays (domain-facts A9). Only re-created objects come without it.
            how = "is excluded from export" if guid_excluded_now else "is excluded from export by this plan"
            stays[object_type] = (
                f"msExchMailboxGuid {how}, and the value already in Entra ID stays ({object_type} rules: {now_text}); "
                "only users purged and re-created lose it ([purge], Solution 2)"
            )
    return stays


def _excludes_guid(attributes):
    return GUID_ATTRIBUTE.lower() in {a.lower() for a in attributes}


def _guid_returns(server, rules_after, excluded_after):
    """AD object type -> why msExchMailboxGuid reaches even a new cloud object (its rules
    flow it and the export does not exclude it), with these rules."""
    if GUID_ATTRIBUTE.lower() in {a.lower() for a in excluded_after}:
        return {}
    returns = {}
    for object_type in object_types(tuple(rules_after)):
        text, flows = guid_flow(rules_after, object_type)
        if server.scheduler.staging_mode:
            returns[object_type] = "the server is in staging mode: it exports nothing, so msExchMailboxGuid stays in the cloud"
        elif flows:
            returns[object_type] = f"msExchMailboxGuid still flows for {object_type} objects: {text}"
    return returns


def lost_flows(rules_now, rules_after):
    """Per AD object type: the attributes no enabled inbound rule carries any more after the
    plan (msExchMailboxGuid aside: stopping it is the point), with the rules that did."""
    lost = {}
    for object_type in sorted({r.source_object_type for r in rules_now if r.direction is Direction.INBOUND}):
        before = _destinations(rules_now, object_type)
        after = _destinations(rules_after, object_type)
        gone = sorted(a for a in set(before) - set(after) if a != GUID_ATTRIBUTE)
        if gone:
            carriers = sorted({name for a in gone for name in before[a]})
            lost[object_type] = (tuple(gone), ", ".join(f"'{n}'" for n in carriers))
    return lost


def _destinations(rules, object_type):
    found = {}
    for rule in rules:
        if rule.disabled or rule.direction is not Direction.INBOUND or rule.source_object_type != object_type:
            continue
        for flow in rule.flows:
            found.setdefault(flow.destination, []).append(rule.name)
    return found


def targeted(spec, tenant, coming_back=()):
    """The users a licence set names, sorted by UPN."""
    selection = UserSelection(frozenset(u.lower() for u in spec.all_users), tuple(spec.ous))
    return sorted((u for u in (*tenant.users, *coming_back) if selection.matches(u)), key=lambda u: u.upn.lower())


def predict(desired, tenant, cond, coming_back=(), reviewed=None):
    """One :class:`UserOutcome` per user and licence set, and the notices that go with them.

    Units are counted once per SKU over the whole plan, whichever entries use it: a
    user who cannot get a mailbox takes none, and those left without a unit are
    named. ``reviewed`` (apply, after the sync) holds the outcomes of the plan that
    was reviewed: a user it did not license is not licensed now either, and takes no unit.
    """
    outcomes, notices = [], []
    planned = None if reviewed is None else {(o.sku, o.upn.lower()): o.verdict for o in reviewed if o.verdict in ACTS}
    selected = {}
    units = {}
    for spec in desired.licenses:
        sku = _sku_for(spec, tenant)
        group = _group_for(spec, sku, tenant)
        users = targeted(spec, tenant, coming_back)
        _refuse_twice(spec, users, selected)
        found = {u.upn.lower() for u in users}
        missing = [upn for upn in spec.all_users if upn.lower() not in found]
        if missing:
            notices.append(_named(Level.WARNING, "user-not-found", f"{spec.label}: no such user in the tenant; not licensed", missing))
        if not users:
            notices.append(Notice(Level.WARNING, "no-users", f"{spec.label}: the selection matches no user in the tenant"))
        decided = [_outcome(spec, sku, user, cond, group) for user in users]
        if planned is not None:
            decided = [narrow(o, planned) for o in decided]
        if sku.sku_id not in units:
            # A purged active user's unit comes free; a licence restored after the purge takes one.
            freed = sum(1 for u in (*tenant.users, *coming_back) if u.upn.lower() in cond.recreated and u.has_license(sku.sku_id))
            freed -= sum(1 for held in cond.before_purge.values() if any(a.sku_id == sku.sku_id and not a.by_group for a in held))
            units[sku.sku_id] = [sku.available + freed, 0, sku.available + freed]
        outcomes += _ration(spec, decided, units[sku.sku_id])
    outcomes = _shortage_reasons(outcomes, units, tenant)
    if any(o.verdict is Verdict.REPROCESS for o in outcomes):
        notices.append(Notice(Level.WARNING, "lab-assumption-reprocess", REPROCESS_ASSUMPTION))
    if cond.joins is not None:
        notices.append(_joins_notice(cond.joins))
        notices += _joined_objects_notice(outcomes, tenant, coming_back, cond)
    return tuple(outcomes), tuple(notices) + outcome_notices(outcomes)


def _joined_objects_notice(outcomes, tenant, coming_back, cond):
    """Which object of another forest keeps each guid-stays-joined user from its licence
    (its DN, for the reviewer to check), one notice for them all."""
    held = {o.upn.lower() for o in outcomes if o.code == "guid-stays-joined"}
    if not held:
        return []
    names = {c.identifier.lower(): c.name for c in cond.ad_connectors}
    lines = []
    for user in sorted((u for u in (*tenant.users, *coming_back) if u.upn.lower() in held), key=lambda u: u.upn.lower()):
        owner = cond.forests.owner(user.on_prem_dn, strict=False) if user.on_prem_dn else None
        others = [
            f"{d} ({names.get(c.lower(), c)})"
            for c, _t, d in (cond.joins.joined(user.on_prem_dn) or ())
            if owner is None or c.lower() != owner.identifier.lower()
        ]
        if others:
            lines.append(f"{user.upn} -> {', '.join(others)}")
    if not lines:
        return []
    return [Notice(Level.INFO, "guid-joined-objects", f"the objects of other forests joined into each person whose GUID stays: {'; '.join(lines)}")]


def _joins_notice(joins):
    """What the plan read the per-user prediction from, with several AD forests."""
    across = joins.across_forests()
    return Notice(
        Level.INFO,
        "metaverse-joins",
        f"with several AD forests, msExchMailboxGuid counts as gone for a user only if every AD connector joined into its metaverse person stops it: "
        f"the connector spaces show {across} person(s) joined from several forests (ConnectedMVObjectId). Lab assumption: Get-ADSyncCSObject's "
        "paged listing carries each object's ConnectedMVObjectId; a user whose AD object shows none gets the cautious answer (not licensed while "
        "another forest's rules still flow the GUID). Lab assumption: Get-ADSyncConnectorStatistics' TotalConnectors counts the objects that listing "
        "shows with IsConnector; a read holding another number is taken as incomplete (joins and counts unknown, the cautious answer). "
        "Lab assumptions of the lab's resource forest: a linked mailbox only joins the person of its account (by msExchMasterAccountSid), and while "
        "that account is out of every scope it stays unjoined, brings nothing and counts neither in TotalConnectors nor as a join",
    )


def _sku_for(spec, tenant):
    sku = tenant.sku_by_part_number(spec.sku)
    if sku is None:
        known = ", ".join(s.part_number for s in tenant.skus) or "none"
        raise PlanError(f"{spec.place or 'licenses'}: SKU {spec.sku!r} is not subscribed in the tenant (subscribed: {known})")
    if not sku.includes_exchange:
        raise PlanError(
            f"{spec.place or 'licenses'}: {sku.part_number} carries no Exchange Online plan, so licensing with it creates no mailbox; "
            "name a SKU with Exchange Online (for example ENTERPRISEPACK, or EXCHANGESTANDARD for a mailbox only)"
        )
    return sku


def _group_for(spec, sku, tenant):
    if spec.group is None:
        return None
    group = tenant.group(spec.group)
    if group is None:
        raise PlanError(f"{spec.place or 'licenses'}: no group {spec.group!r} in the tenant")
    if group.disabled_plans(sku.sku_id) is None:
        carries = ", ".join(s.part_number for s in tenant.skus if group.disabled_plans(s.sku_id) is not None) or "no licence"
        raise PlanError(f"{spec.place or 'licenses'}: group {group.name!r} does not assign {sku.part_number} (it assigns {carries})")
    if set(group.disabled_plans(sku.sku_id)) & set(sku.exchange_plan_ids):
        raise PlanError(
            f"{spec.place or 'licenses'}: group {group.name!r} assigns {sku.part_number} with Exchange Online switched off, "
            "so its members get no mailbox; switch it on in the group's licence or name another group"
        )
    return group


def _refuse_twice(spec, users, selected):
    """A user selected by two entries: refused, naming both (OU selections meet only here)."""
    for user in users:
        first = selected.get(user.upn.lower())
        if first is not None and first is not spec:
            raise PlanError(
                f"{user.upn} is selected by two [[licenses]] entries: {first.place or first.label} and {spec.place or spec.label}; "
                "a user belongs to one entry (one SKU, one wave)"
            )
        selected[user.upn.lower()] = spec


def _outcome(spec, sku, user, cond, group=None):
    assignment = user.license(sku.sku_id)
    recreated = user.upn.lower() in cond.recreated
    prior = _held_before_purge(user, sku, cond) if recreated or user.upn.lower() in cond.guid_gone else None
    if recreated:
        assignment = None  # purged and re-created: a new object, with no licence yet
    member = group is not None and not recreated and user.id in group.members
    base = dict(
        upn=user.upn,
        sku=spec.sku,
        user_id=user.id,
        object_type=user.object_type,
        licence_before="none" if assignment is None else ("group" if assignment.by_group else "direct"),
        mailbox_before=user.mailbox.value,
        disabled_plans=assignment.disabled_plans if assignment is not None else (),
        entry=spec.label,
        wave=spec.wave,
        group=group.name if group is not None else "",
    )

    def out(verdict, code="", reason=""):
        return UserOutcome(verdict=verdict, code=code, reason=reason, **base)

    if prior is not None and prior.by_group and group is None:
        return out(
            Verdict.BLOCKED,
            "group-licence-recreated",
            f"held {spec.sku} from a group before the purge: the new object gets it back only through the group (a group synced from AD "
            "brings its membership back; a cloud group needs the user added again: name it with group = in this entry), so it is not assigned directly",
        )
    if prior is not None and not prior.by_group:
        return out(Verdict.NOT_OWED, "licence-restored", f"its {spec.sku} licence from before the purge is assigned again exactly, disabled plans kept (licences.restore)")
    if user.mailbox is MailboxState.PRESENT and assignment is not None:
        return out(Verdict.HAS_MAILBOX)
    if assignment is not None and set(assignment.disabled_plans) & set(sku.exchange_plan_ids):
        return out(Verdict.NOT_OWED, "exchange-disabled", f"Exchange Online is disabled in the {spec.sku} licence, so no mailbox will come; nothing is relicensed")
    if user.mailbox is MailboxState.PENDING:
        return out(Verdict.PENDING, "mailbox-pending", "the mailbox is still provisioning")
    if user.mailbox is MailboxState.UNKNOWN and assignment is not None:
        return out(Verdict.UNKNOWN, "mailbox-unknown", "the mailbox state could not be read; nothing is decided")
    why = _why_no_mailbox(user, cond, recreated)
    if why is not None and user.mailbox is not MailboxState.PRESENT:
        return out(Verdict.BLOCKED, *why)
    if member and assignment is None:
        return out(
            Verdict.BLOCKED,
            "group-licence-missing",
            f"a member of {group.name!r}, but the group's {spec.sku} licence did not reach the user (a licence error such as no unit left): "
            "resolve the error in the group's licensing view, then plan again",
        )
    if assignment is None:
        return out(Verdict.ASSIGN)
    return _relicense(spec, user, assignment, cond, out)


def _held_before_purge(user, sku, cond):
    for assignment in cond.before_purge.get(user.upn.lower(), ()):
        if assignment.sku_id == sku.sku_id:
            return assignment
    return None


def _why_no_mailbox(user, cond, recreated):
    """(code, reason) when a licence for ``user`` cannot create a mailbox or be assigned, else None."""
    if cond.staging:
        return "staging-mode", "the server is in staging mode: it exports nothing, so msExchMailboxGuid stays in the cloud"
    on_prem_dn = getattr(user, "on_prem_dn", None)
    if recreated or user.upn.lower() in cond.guid_gone:
        guid = cond.guid_returns(user.object_type, on_prem_dn)
    else:
        guid = cond.guid_verdict(user.object_type, on_prem_dn)
    if guid:
        return guid
    if not user.usage_location:
        return "no-usage-location", "no usage location (msExchUsageLocation is empty on-premises)"
    lost = cond.usage_location_lost(user.object_type)
    if lost:
        return "usage-location-lost", f"no usage location after the sync: the plan disables {lost}, which carry msExchUsageLocation -> usageLocation"
    return None


def _relicense(spec, user, assignment, cond, out):
    if not spec.relicense_without_mailbox:
        return out(Verdict.BLOCKED, "no-mailbox", "licensed without a mailbox; relicense_without_mailbox is off")
    if cond.sync_planned or (cond.cleared_since is not None and (assignment.assigned_at or "") < cond.cleared_since):
        # A licence inherited from a group cannot be removed from the user (Graph refuses it):
        # its assignment is processed again instead.
        return out(Verdict.REPROCESS if assignment.by_group else Verdict.RELICENSE)
    if cond.cleared_since is None:
        return out(
            Verdict.BLOCKED,
            "no-mailbox-unknown-clear",
            "licensed without a mailbox, and the run history no longer shows when msExchMailboxGuid was cleared: run a full (Initial) sync (syncprep sync FILE --policy Initial) and plan again to have it relicensed",
        )
    return out(
        Verdict.BLOCKED,
        "no-mailbox-after-clear",
        "licensed after msExchMailboxGuid stopped flowing and still without a mailbox: check that no rule flows the GUID for its object type",
    )


def _ration(spec, decided, units):
    """New assignments (direct or by joining a group) up to the units free; ``units`` is
    the SKU's [free, needed, available at the start] over the whole plan. A relicensed user takes back its own
    unit, and a reprocessed one keeps its own: they need none."""
    result = []
    for o in decided:
        if o.verdict is Verdict.ASSIGN:
            units[1] += 1
            if units[0] <= 0:
                reason = f"no {spec.sku} unit left"
                o = UserOutcome(**{**_fields(o), "verdict": Verdict.BLOCKED, "code": "license-shortage", "reason": reason})
            else:
                units[0] -= 1
        result.append(o)
    return result


def _shortage_reasons(outcomes, units, tenant):
    """Each user left without a unit, with the counts of that SKU over the whole plan."""
    counts = {s.part_number.lower(): units[s.sku_id] for s in tenant.skus if s.sku_id in units}
    result = []
    for o in outcomes:
        if o.code == "license-shortage":
            _free, needed, available = counts[o.sku.lower()]
            reason = f"no {o.sku} unit left ({needed} needed, {available} available)"
            o = UserOutcome(**{**_fields(o), "reason": reason})
        result.append(o)
    return result


def _fields(outcome):
    return {
        "upn": outcome.upn,
        "sku": outcome.sku,
        "verdict": outcome.verdict,
        "code": outcome.code,
        "reason": outcome.reason,
        "user_id": outcome.user_id,
        "object_type": outcome.object_type,
        "licence_before": outcome.licence_before,
        "mailbox_before": outcome.mailbox_before,
        "disabled_plans": outcome.disabled_plans,
        "entry": outcome.entry,
        "wave": outcome.wave,
        "group": outcome.group,
    }


def outcome_notices(outcomes):
    """One notice per reason, naming every user it holds for (never shortened here)."""
    groups = {}
    for o in outcomes:
        if o.verdict in (Verdict.BLOCKED, Verdict.NOT_OWED, Verdict.PENDING, Verdict.UNKNOWN) and o.code:
            groups.setdefault((o.code, o.reason, o.verdict), []).append(o.upn)
    notices = []
    for (code, reason, verdict), upns in groups.items():
        level = Level.INFO if verdict is Verdict.PENDING else Level.WARNING
        head = "licensed as before the purge" if code == "licence-restored" else {
            Verdict.BLOCKED: "not licensed, no unit taken",
            Verdict.NOT_OWED: "no mailbox owed",
            Verdict.PENDING: "mailbox still provisioning",
            Verdict.UNKNOWN: "nothing decided",
        }[verdict]
        text = reason if verdict is not Verdict.PENDING else "still provisioning"
        notices.append(_named(level, code, f"{len(upns)} user(s) {head}: {text}" if verdict is not Verdict.PENDING else f"{len(upns)} mailbox(es) {text}", upns))
    return tuple(notices)


def _named(level, code, text, upns):
    return Notice(level, code, f"{text}: {', '.join(upns)}", tuple(upns))


def flow_notices(cond):
    """What stops flowing besides the GUID when the plan disables rules."""
    notices = []
    for object_type, (attributes, rules) in sorted(cond.lost_flows.items()):
        unlicensable = " (users without it cannot be licensed)" if USAGE_LOCATION in attributes else ""
        notices.append(
            Notice(
                Level.WARNING,
                "flows-stop",
                f"the plan disables {rules}: {', '.join(attributes)} stop flowing for {object_type} objects{unlicensable}",
            )
        )
    return tuple(notices)


def narrow(outcome, reviewed):
    """``outcome`` (decided now) held to the reviewed plan, ``{(sku, upn): verdict}`` of the
    users it licensed: it may do less, never more."""
    planned = reviewed.get((outcome.sku, outcome.upn.lower()))
    if outcome.verdict not in ACTS or outcome.verdict is planned:
        return outcome
    if planned is Verdict.RELICENSE and outcome.verdict is Verdict.ASSIGN:
        return outcome  # the licence went meanwhile: assigning alone is less than the plan
    if planned is None:
        code, reason = "not-in-plan", "not licensed by the reviewed plan: waits for the next plan"
    else:
        code, reason = "not-in-plan", "holds a licence now that the reviewed plan did not remove: left as it is"
    return UserOutcome(**{**_fields(outcome), "verdict": Verdict.BLOCKED, "code": code, "reason": reason})


def ended(outcomes, tenant):
    """The outcomes as read back from ``tenant`` after an apply: one dict per user with
    the actual licence and mailbox, and whether the user ended as desired."""
    by_upn = {u.upn.lower(): u for u in tenant.users}
    skus = {s.part_number.lower(): s for s in tenant.skus}
    rows = []
    for o in outcomes:
        user = by_upn.get(o.upn.lower())
        sku = skus.get(o.sku.lower())
        assignment = user.license(sku.sku_id) if user is not None and sku is not None else None
        mailbox = user.mailbox.value if user is not None else "missing user"
        licence = "none" if assignment is None else ("group" if assignment.by_group else "direct")
        ok = o.verdict is Verdict.NOT_OWED or (assignment is not None and mailbox == MailboxState.PRESENT.value)
        rows.append({**o.to_dict(), "licence_actual": licence, "mailbox_actual": mailbox, "as_desired": ok})
    return rows
