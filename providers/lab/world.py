"""The lab: an in-process simulation of a whole hybrid environment.

On-premises AD users, the Entra Connect server (scheduler, rules, connector scope,
export filtering, deletion threshold, run history) and the Microsoft 365 tenant
(users, licences, mailboxes, SKUs, recycle bin), with a clock.

Its rules follow the real system as ``shared/reference/domain-facts.md`` records it,
because a plan is only as good as the world it is tested against. The lab does not
use the planner's code to decide anything: it is the world the planner is checked
against. Where the real behaviour is unconfirmed, the choice made is said in a
comment starting ``Lab assumption``.

Time is lab time, in whole minutes since the lab's epoch. Nothing here sleeps:
waiting means advancing the clock, which runs what the real system would run in
that time (cycles finishing, scheduled cycles starting, mailboxes provisioning).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import uuid
from typing import Optional

from attrs import evolve, field, setters

from reconciler.classes import as_tuple, define
from reconciler import dn
from reconciler.errors import ProviderError, RefusedError
from reconciler.model import (
    AUTHORITATIVE_NULL,
    GUID_ATTRIBUTE,
    IGNORE_THIS_FLOW,
    NULL,
    Connector,
    Direction,
    FlowType,
    LinkType,
    RunResult,
    SyncPolicy,
    SyncRule,
)

EPOCH = dt.datetime(2026, 1, 5, 22, 0, tzinfo=dt.timezone.utc)
EXCHANGE_PLAN_ID = "efb87545-963c-4e0d-99df-69c6916d9eb0"
LAB_NAMESPACE = uuid.UUID("6f1c3a52-8a0e-4d1e-9a57-3f0c2b7d9e10")

# The metaverse attributes the lab simulates, and the cloud user field each exports to.
EXPORTED_ATTRIBUTES = {
    "sourceAnchor": "immutable_id",
    "userPrincipalName": "upn",
    "displayName": "display_name",
    "usageLocation": "usage_location",
    GUID_ATTRIBUTE: "mailbox_guid",
}

_KEEP = object()  # IgnoreThisFlow: leave the existing value as it is


def lab_guid(*parts):
    return str(uuid.uuid5(LAB_NAMESPACE, "/".join(str(p) for p in parts)))


@functools.lru_cache(maxsize=1024)
def minute_to_iso(minute):
    # Cached: 100,000 licences assigned in the same minute are read back in it (issue 19).
    return (EPOCH + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


RUN_HISTORY_MINUTES = 7 * 24 * 60
RUN_HISTORY_CAP = 1200  # Lab assumption: enough for a week of 30-minute cycles (3 runs each)


def iso_to_minute(text):
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    return int((moment - EPOCH).total_seconds() // 60)


class Stamps:
    """A clock of changes to AD and cloud users (issue 19): setting any field of one gives
    it the next stamp, so a checkpoint encodes again only the users stamped since it last
    wrote (and those added or replaced). Every field of an AD user or a cloud user is a
    string, a number, None, or (a cloud user's licences) a tuple replaced whole: setting
    is the only way to change one. A licence's own fields can still be set in place
    (``lic.by_group = True``, which has no user to stamp): those sets are counted in
    ``licences``, and a checkpoint that sees it moved encodes every cloud user again."""

    now = 0
    licences = 0


def _stamp(instance, attribute, value):
    Stamps.now += 1
    object.__setattr__(instance, "_stamp", Stamps.now)
    return value


def _licence_changed(instance, attribute, value):
    Stamps.licences += 1
    return value


def _stamp_field():
    """The stamp of the last set of a field (0: none since the object was made); never saved."""
    return field(default=0, init=False, eq=False, repr=False, on_setattr=setters.NO_OP)


#: The object classes of the lab's AD users (AdUser) and of its other AD objects (AdObject). AD's
#: schema has no class it does not define, and the lab's rules match a class by its exact
#: name, so a lab file with another (a typo, another case) is refused.
AD_USER_CLASSES = ("user", "inetOrgPerson")
AD_OBJECT_CLASSES = ("group", "contact", "computer", "user")  # user: a resource-forest mailbox


@define(on_setattr=_stamp)
class AdUser:
    """An on-premises AD object of class user or inetOrgPerson."""

    object_guid: str
    sam: str
    upn: str
    dn: str
    object_class: str = "user"
    display_name: str = ""
    mailbox_guid: Optional[str] = None  # on-prem msExchMailboxGuid
    mail_nickname: Optional[str] = None
    usage_location: Optional[str] = None  # msExchUsageLocation
    changed_at: int = 0
    _stamp: int = _stamp_field()

    def attribute(self, name):
        field_name = _AD_ATTRIBUTES.get(name)
        return getattr(self, field_name) if field_name is not None else None

    @property
    def object_sid(self):
        return object_sid(self.object_guid)

    @property
    def master_account_sid(self):
        return None  # an account: msExchMasterAccountSid is a resource-forest mailbox's


def _other_forests(account, mailbox, in_scope):
    """``account`` if it is under another AD connector than ``mailbox`` (None otherwise).

    A linked mailbox's master account is in another, trusted forest, and the sync engine joins
    at most one connector-space object of a connector to a metaverse object: a mailbox whose
    msExchMasterAccountSid names a user of its own forest is not joined to that user's person.
    Lab assumption: it then stays a disconnector, as while its account is out of scope (the lab
    does not refuse it at load: the AD users are not built then). Real Exchange does not make
    such a linked mailbox; what a real server does with one made by hand is not known."""
    if account is None or in_scope(account).identifier.lower() == in_scope(mailbox).identifier.lower():
        return None
    return account


def ad_object_problem(ad_objects):
    """Why the AD objects of a lab file are not what a real directory and sync engine would
    hold (a key path and the reason), or None. A ``user`` in ``ad_objects`` is a resource-forest
    mailbox: without msExchMasterAccountSid it would be a user in scope that the lab never
    provisions (a real server provisions every user in scope; such a user goes in
    ``ad_users``). A group, contact or computer is never joined into a person (a group's
    connector-space object joins a group), and the lab simulates none of their flows: the
    mailbox fields are a resource-forest mailbox's only."""
    for i, o in enumerate(ad_objects):
        where = f"$.lab.ad_objects[{i}]"
        if o.object_class == "user" and not o.master_account_sid:
            return f"{where}: a user in ad_objects is a resource-forest mailbox and needs master_account_sid (put other users in ad_users)"
        if o.object_class != "user":
            extra = [n for n in ("master_account_sid", "mailbox_guid", "mail_nickname", "usage_location") if getattr(o, n) is not None]
            if extra:
                return f"{where}: a {o.object_class} has no {extra[0]} in the lab (only a resource-forest mailbox, class user, has)"
    return None


def object_sid(object_guid):
    """An AD object's objectSid, made up from its objectGUID (the lab keeps no SIDs: it needs
    them only to join a resource-forest mailbox to its account)."""
    parts = uuid.UUID(object_guid).fields
    return f"S-1-5-21-{parts[0]}-{parts[1] * 65536 + parts[2]}-{parts[5] % 2**32}"


# The AD attributes the lab simulates, and the AdUser field each is kept in.
_AD_ATTRIBUTES = {
    "objectGUID": "object_guid",
    "sAMAccountName": "sam",
    "userPrincipalName": "upn",
    "displayName": "display_name",
    GUID_ATTRIBUTE: "mailbox_guid",
    "mailNickname": "mail_nickname",
    "msExchUsageLocation": "usage_location",
    "objectClass": "object_class",
    "objectSid": "object_sid",
    "msExchMasterAccountSid": "master_account_sid",
}

#: Metaverse attributes a linked mailbox never contributes: "An account with a linked mailbox
#: is never used for userPrincipalName and sourceAnchor" (Entra Connect Sync: Understanding
#: Users, Groups, and Contacts). The real stock rules get there by their scope filters and
#: expressions; the lab, which simulates neither, says it here.
_ACCOUNT_ONLY = frozenset(("sourceAnchor", "userPrincipalName"))


@define
class AdObject:
    """An on-premises AD object that is not a person of its own: a group, a contact, a
    computer, or a resource-forest mailbox (``master_account_sid``).

    The lab does not simulate the flows of groups, contacts and computers (no cloud object
    is made for them); they are in the connector space while in scope, so a scope change
    that takes them out counts them as deletions, as the export deletion threshold does on
    a real server. A resource-forest mailbox's flows go into its account's person."""

    object_guid: str
    name: str
    dn: str
    object_class: str  # group, contact or computer; user for a resource-forest mailbox
    #: A resource-forest mailbox (a linked mailbox's disabled user, account/resource topology):
    #: msExchMasterAccountSid names the account (its objectSid) in another forest whose
    #: metaverse person it joins, bringing its Exchange attributes. None for the others.
    #: Lab assumption: it only joins (the wizard's "objectSID and msExchangeMasterAccountSID"
    #: matching); while its account is in no connector's scope it stays a disconnector, joined
    #: to nothing, and brings nothing.
    master_account_sid: Optional[str] = None
    mailbox_guid: Optional[str] = None  # its msExchMailboxGuid
    mail_nickname: Optional[str] = None
    usage_location: Optional[str] = None  # msExchUsageLocation

    def attribute(self, name):
        field_name = _AD_ATTRIBUTES.get(name)
        return getattr(self, field_name, None) if field_name is not None else None

    @property
    def object_sid(self):
        return object_sid(self.object_guid)


@define(on_setattr=[setters.convert, _licence_changed])
class LabLicense:
    sku_id: str
    assigned_at: int
    by_group: bool = False
    #: A tuple, so that it cannot change in place (see Stamps).
    disabled_plans: tuple[str, ...] = field(factory=tuple, converter=as_tuple)
    #: The group it comes from (Graph's assignedByGroup), when ``by_group``.
    group_id: Optional[str] = None


@define
class GroupLicense:
    sku_id: str
    disabled_plans: list[str] = field(factory=list)


@define
class LabGroup:
    """A cloud security group, with the licences it assigns to its members (group-based licensing)."""

    id: str
    display_name: str
    members: list[str] = field(factory=list)  # cloud user object ids
    licenses: list[GroupLicense] = field(factory=list)


class _UserChanges:
    """How many times any cloud user's id, UPN, licence list or deletion was set, anywhere.

    The lab's user index and its count of licences per SKU are trusted only while
    this is unchanged (and ``cloud_users`` is the same list, of the same length), so
    a test or an emulator that sets those fields directly never meets a stale cache.
    Licence lists are tuples, replaced whole (see Stamps): the lab's own methods keep
    the count of licences per SKU themselves.
    """

    seen = 0


def _user_changed(instance, attribute, value):
    _UserChanges.seen += 1
    return value


_INDEXED = [_user_changed, _stamp]  # a field the user index or the licence counts depend on


@define(on_setattr=_stamp)
class LabCloudUser:
    id: str = field(on_setattr=_INDEXED)
    upn: str = field(on_setattr=_INDEXED)
    display_name: str = ""
    immutable_id: Optional[str] = None
    synced: Optional[bool] = None  # True synced, False no longer, None cloud-only
    on_prem_dn: Optional[str] = None
    usage_location: Optional[str] = None
    mailbox_guid: Optional[str] = None  # cloud msExchMailboxGuid, as synced
    #: A tuple, replaced whole on change (see Stamps).
    licenses: tuple[LabLicense, ...] = field(factory=tuple, converter=as_tuple, on_setattr=[setters.convert, *_INDEXED])
    mailbox_ready_at: Optional[int] = None  # None: no Exchange Online mailbox
    deleted_at: Optional[int] = field(default=None, on_setattr=_INDEXED)  # set while in the recycle bin
    #: When an Exchange Online plan was first assigned, kept after the licence goes (Graph's
    #: assignedPlans keeps a removed plan as "Deleted"). None: never, or only through the
    #: licences held now. Lab assumption: only the first assignment is remembered, and a
    #: removed plan stays listed for as long as the user exists.
    exchange_plan_since: Optional[int] = None
    _stamp: int = _stamp_field()

    def license(self, sku_id):
        for lic in self.licenses:
            if lic.sku_id == sku_id:
                return lic
        return None


@define
class LabSku:
    sku_id: str
    part_number: str
    prepaid: int
    includes_exchange: bool = True

    @property
    def exchange_plan_ids(self):
        # Office 365 E3's Exchange Online (Plan 2) service plan, as Graph names it.
        return (EXCHANGE_PLAN_ID,) if self.includes_exchange else ()


@define
class RunningCycle:
    policy: SyncPolicy
    started_at: int
    ends_at: int


@define
class LabFile:
    """A file or a folder a script made on the lab's server."""

    path: str
    directory: bool = False
    content: str = ""
    #: The identities its own ACL grants full control (None: inherited from the folder above).
    acl: Optional[list[str]] = None
    #: Whether the ACL is protected from inheritance (SetAccessRuleProtection).
    protected: bool = False


@define
class Server:
    sync_cycle_enabled: bool = True
    staging_mode: bool = False
    next_policy: SyncPolicy = SyncPolicy.DELTA
    sync_interval: int = 30
    next_scheduled_at: int = 30
    cycle: Optional[RunningCycle] = None
    rules: list[SyncRule] = field(factory=list)
    # The stock rules of the installed build: an upgrade puts back any that are missing.
    stock_catalogue: list[SyncRule] = field(factory=list)
    connectors: list[Connector] = field(factory=list)
    deletion_threshold: Optional[int] = 500
    run_history: list[RunResult] = field(factory=list)
    # The connector-space memory: AD objectGUID -> minute it was last synced.
    connector_space: dict[str, int] = field(factory=dict)
    build: str = "2.4.18.0"
    # The server's own files and folders that scripts made (the state backend's folder),
    # by path in lower case (Windows paths are case-insensitive): see providers.lab.pwsh_files.
    files: dict[str, LabFile] = field(factory=dict)


@define
class Lab:
    """The whole simulated environment. Mutable: it is a world, not a value."""

    clock: int = 0
    domain: str = "contoso.com"
    provisioning_minutes: int = 15
    ad_users: list[AdUser] = field(factory=list)
    #: Groups, contacts and computers (AD objects that are not users); a lab file without them has none.
    ad_objects: list[AdObject] = field(factory=list)
    server: Server = field(factory=Server)
    cloud_users: list[LabCloudUser] = field(factory=list)
    skus: list[LabSku] = field(factory=list)
    groups: list[LabGroup] = field(factory=list)
    scenario: str = "default"
    # Caches for Graph-sized tenants, never saved (cattrs leaves init=False fields out),
    # each with what it was built from (see _UserChanges): active users by id and by
    # lower-cased UPN, and licences consumed per SKU.
    _user_index: Optional[tuple] = field(default=None, init=False, eq=False, repr=False)
    _consumed: Optional[tuple] = field(default=None, init=False, eq=False, repr=False)
    # Each AD object's connector by its DN, for the scopes it was worked out with (a sync
    # cycle reads 100,000 DNs twice: parsing them each time was a third of the cycle).
    _scope_memo: Optional[tuple] = field(default=None, init=False, eq=False, repr=False)

    # ------------------------------------------------------------------ lookups

    @property
    def now(self):
        return minute_to_iso(self.clock)

    def ad_connector(self):
        return next(c for c in self.server.connectors if c.kind == "AD")

    def aad_connector(self):
        return next(c for c in self.server.connectors if c.kind == "AAD")

    def ad_connectors(self):
        """Every AD connector: one per forest (the lab names each after its forest's domain)."""
        return [c for c in self.server.connectors if c.kind == "AD"]

    def connector(self, identifier):
        """The connector with this identifier (GUIDs compare without case), or None."""
        return next((c for c in self.server.connectors if c.identifier.lower() == str(identifier).lower()), None)

    def active_cloud_users(self):
        return [u for u in self.cloud_users if u.deleted_at is None]

    def cloud_user(self, key):
        """By object id or UPN (as Graph's /users/{id|upn}); active users only."""
        if self._user_index is None or self._user_index[0] != self._built_from():
            # Rebuilt only when a user changed or one was added or removed: a miss on an
            # unchanged lab (a 404) costs a lookup, not a scan of 100,000 users.
            index = {}
            for user in self.cloud_users:
                if user.deleted_at is None:
                    index.setdefault(user.id, user)
                    index.setdefault(user.upn.lower(), user)
            self._user_index = (self._built_from(), index)
        index = self._user_index[1]
        return index.get(key) or index.get(key.lower())

    def deleted_user(self, object_id):
        for user in self.cloud_users:
            if user.deleted_at is not None and user.id == object_id:
                return user
        return None

    def sku(self, sku_id):
        for sku in self.skus:
            if sku.sku_id == sku_id:
                return sku
        return None

    def consumed_units(self):
        """Licences held by active users, per SKU id (counted afresh)."""
        counts = {sku.sku_id: 0 for sku in self.skus}
        for user in self.cloud_users:
            if user.deleted_at is None:
                for lic in user.licenses:
                    counts[lic.sku_id] = counts.get(lic.sku_id, 0) + 1
        self._consumed = (self._built_from(), dict(counts))
        return counts

    def _built_from(self):
        return _UserChanges.seen, id(self.cloud_users), len(self.cloud_users)

    def _consumed_counts(self):
        """The cached counts per SKU, counted afresh when anything they depend on changed."""
        if self._consumed is None or self._consumed[0] != self._built_from():
            self.consumed_units()
        return self._consumed[1]

    def mailbox_state(self, user):
        """present / pending / absent, as the tenant would answer at this minute."""
        if user.mailbox_ready_at is None:
            return "absent"
        return "present" if self.clock >= user.mailbox_ready_at else "pending"

    # ------------------------------------------------------------------ scheduler and clock

    def set_scheduler(self, enabled):
        self.server.sync_cycle_enabled = enabled
        if enabled and self.server.next_scheduled_at <= self.clock:
            self.server.next_scheduled_at = self.clock + self.server.sync_interval

    def advance(self, minutes):
        """Let ``minutes`` of lab time pass, running what the real system would."""
        if minutes < 0:
            raise ValueError("the lab clock only moves forward")
        self.advance_to(self.clock + minutes)

    def advance_to(self, target):
        server = self.server
        while True:
            events = []
            if server.cycle is not None:
                events.append(server.cycle.ends_at)
            elif server.sync_cycle_enabled:
                events.append(max(server.next_scheduled_at, self.clock))
            due = [t for t in events if t <= target]
            if not due:
                break
            self.purge_expired()
            self.clock = max(self.clock, min(due))
            if server.cycle is not None:
                self._finish_cycle()
            else:
                # The scheduler runs the policy it owes: Initial after a rule change.
                self.start_cycle(server.next_policy)
                server.next_scheduled_at = self.clock + server.sync_interval
        self.clock = max(self.clock, target)
        self.purge_expired()

    # ------------------------------------------------------------------ configuration

    def _refuse_while_cycle_runs(self, what):
        if self.server.cycle is not None:
            raise RefusedError(
                "entra-connect", what, "a sync cycle is in progress; configuration changes are not allowed until it finishes"
            )

    def _check_precedence(self, rule):
        # miiserver checks every other rule, whatever its direction or connector (domain-facts A4).
        if rule.precedence < 0:
            raise RefusedError("entra-connect", f"rule {rule.name!r}", "Precedence must be non-negative.")
        for other in self.server.rules:
            if other.identifier != rule.identifier and other.precedence == rule.precedence:
                raise RefusedError(
                    "entra-connect",
                    f"rule {rule.name!r}",
                    f"SyncRule {rule.name}: Precedence is not unique (precedence {rule.precedence} is held by {other.name!r})",
                )

    def put_rule(self, rule):
        """Add-ADSyncRule: create, or overwrite the rule with the same identifier."""
        self._refuse_while_cycle_runs(f"rule {rule.name!r}")
        existing = next((r for r in self.server.rules if r.identifier == rule.identifier), None)
        if existing is not None and existing.is_standard:
            if evolve(existing, disabled=rule.disabled) != rule:
                raise RefusedError(
                    "entra-connect",
                    f"rule {rule.name!r}",
                    "It is not allowed to modify a standard rule. It can only be enabled or disabled.",
                )
        if existing is None and rule.is_standard:
            raise RefusedError("entra-connect", f"rule {rule.name!r}", "a new rule cannot be a standard rule")
        if existing is None and any(r.identifier == rule.identifier for r in self.server.stock_catalogue):
            raise RefusedError("entra-connect", f"rule {rule.name!r}", "the identifier belongs to a stock rule")
        self._check_precedence(rule)
        if not any(c.identifier == rule.connector for c in self.server.connectors):
            raise RefusedError("entra-connect", f"rule {rule.name!r}", f"unknown connector {rule.connector}")
        if existing is None:
            self.server.rules.append(rule)
        else:
            self.server.rules[self.server.rules.index(existing)] = rule
        self.server.next_policy = SyncPolicy.INITIAL

    def set_rule_disabled(self, identifier, disabled):
        rule = self._rule(identifier)
        self.put_rule(evolve(rule, disabled=disabled))

    def remove_rule(self, identifier):
        rule = self._rule(identifier)
        self._refuse_while_cycle_runs(f"rule {rule.name!r}")
        self.server.rules.remove(rule)
        self.server.next_policy = SyncPolicy.INITIAL

    def _rule(self, identifier):
        for rule in self.server.rules:
            if rule.identifier == identifier:
                return rule
        raise ProviderError("entra-connect", f"rule {identifier}", "no such rule")

    def upgrade(self, build=None):
        """An in-place Entra Connect upgrade: deleted stock rules come back (domain-facts A6).

        Returns the rules that were re-created. Disabled stock rules stay disabled.
        """
        self._refuse_while_cycle_runs("upgrade")
        # Each AD connector has its own copy of every stock rule, with the same tag.
        present_tags = {(r.immutable_tag, r.connector.lower()) for r in self.server.rules if r.is_standard}
        restored = []
        for stock in self.server.stock_catalogue:
            if (stock.immutable_tag, stock.connector.lower()) in present_tags:
                continue
            rule = stock
            taken = {r.precedence for r in self.server.rules}
            if rule.precedence in taken:
                # Lab assumption (domain-facts A4 says renumbering is UNCONFIRMED): the
                # returning rule takes the first free precedence above its own.
                free = rule.precedence + 1
                while free in taken:
                    free += 1
                rule = evolve(rule, precedence=free)
            self.server.rules.append(rule)
            restored.append(rule)
        self.server.build = build or _next_build(self.server.build)
        self.server.next_policy = SyncPolicy.INITIAL
        return restored

    def set_container_scope(self, included, excluded, connector=None):
        """One AD connector's OU filtering (``connector``: its identifier; default the first AD connector)."""
        self._refuse_while_cycle_runs("connector scope")
        ad = self.ad_connector() if connector is None else self.connector(connector)
        if ad is None or ad.kind != "AD":
            raise ProviderError("entra-connect", "connector scope", f"no AD connector {connector}")
        self._replace_connector(ad, evolve(ad, included_containers=tuple(included), excluded_containers=tuple(excluded)))

    def set_excluded_attributes(self, attributes):
        self._refuse_while_cycle_runs("export attribute filter")
        aad = self.aad_connector()
        # Kept sorted: it is a set, and the real connector reads back in its own order.
        self._replace_connector(aad, evolve(aad, excluded_attributes=tuple(sorted(set(attributes), key=str.lower))))

    def set_deletion_threshold(self, threshold):
        self._refuse_while_cycle_runs("export deletion threshold")
        if threshold is not None and threshold < 1:
            raise RefusedError("entra-connect", "export deletion threshold", "the threshold must be a positive count")
        self.server.deletion_threshold = threshold

    def _replace_connector(self, old, new):
        connectors = self.server.connectors
        connectors[connectors.index(old)] = new
        self.server.next_policy = SyncPolicy.INITIAL

    # ------------------------------------------------------------------ sync

    def start_cycle(self, policy):
        """Start-ADSyncSyncCycle: returns at once; the cycle finishes as the clock runs."""
        server = self.server
        if server.cycle is not None:
            raise RefusedError("entra-connect", "sync cycle", f"Connector: {self.ad_connector().name} is busy")
        # Lab assumption (A7 UNCONFIRMED): a manual cycle runs even with the scheduler off.
        in_scope = self._scope_test()
        in_scope = sum(1 for u in self.ad_users if in_scope(u))
        if policy is SyncPolicy.INITIAL:
            duration = 5 + math.ceil(in_scope / 500)
        else:
            duration = 2 + math.ceil(in_scope / 5000)
        server.cycle = RunningCycle(policy, self.clock, self.clock + duration)
        return server.cycle

    def run_cycle(self, policy):
        """Start a cycle and let the clock run until it is done; returns its run results."""
        cycle = self.start_cycle(policy)
        self.advance_to(cycle.ends_at)
        return [r for r in self.server.run_history if iso_to_minute(r.started) >= cycle.started_at]

    def _in_scope(self, user):
        return self._scope_test()(user)

    def connector_space(self, connector_identifier):
        """``(objectGUID, DN, object class)`` of every AD object in one AD connector's connector
        space, users first. Lab assumption: the connector space holds exactly the objects in the
        connector's scope, as after a full import (a real one also keeps disconnectors)."""
        in_scope = self._scope_test()
        wanted = str(connector_identifier).lower()
        return [
            (o.object_guid, o.dn, o.object_class)
            for o in (*self.ad_users, *self.ad_objects)
            if (c := in_scope(o)) is not None and c.identifier.lower() == wanted
        ]

    def linked_mailboxes(self, in_scope=None):
        """``(mailbox object, account)`` of each resource-forest mailbox in a connector's scope:
        the AD user whose objectSid its msExchMasterAccountSid names, whose metaverse person it
        joins; the account is None while it is in no connector's scope (see AdObject)."""
        in_scope = in_scope or self._scope_test()
        linked = [o for o in self.ad_objects if o.master_account_sid and in_scope(o) is not None]
        if not linked:
            return []
        wanted = {o.master_account_sid for o in linked}
        accounts = {sid: u for u in self.ad_users if (sid := u.object_sid) in wanted and in_scope(u) is not None}
        return [(o, _other_forests(accounts.get(o.master_account_sid), o, in_scope)) for o in linked]

    def metaverse_anchors(self):
        """objectGUID of each resource-forest mailbox in scope -> the objectGUID of the account
        whose metaverse person it is joined to ("": joined to none). Every other object in a
        connector space is joined to a metaverse object of its own, named here by its own GUID."""
        return {o.object_guid: (a.object_guid if a is not None else "") for o, a in self.linked_mailboxes()}

    def _scope_test(self):
        """The AD connector whose scope holds an AD object (None: out of every scope), the
        connectors looked up once for a whole pass. Each forest has its own connector, and
        its containers name its own domain, so at most one connector's scope holds an object."""
        scopes = tuple((c, c.included_containers, c.excluded_containers) for c in self.ad_connectors())
        if self._scope_memo is None or self._scope_memo[0] != scopes:
            self._scope_memo = (scopes, {})
        memo = self._scope_memo[1]  # DN -> its connector, while the scopes stay as they are

        def in_scope(user):
            try:
                return memo[user.dn]
            except KeyError:
                memo[user.dn] = found = _scope_of(user.dn, scopes)
                return found

        return in_scope

    def _finish_cycle(self):
        """The end of a sync cycle: joins, import and synchronization of each AD connector,
        then the export to Entra ID (or its stop), recorded in the run history."""
        server = self.server
        cycle, server.cycle = server.cycle, None
        full = cycle.policy is SyncPolicy.INITIAL
        times = (minute_to_iso(cycle.started_at), minute_to_iso(self.clock))
        by_anchor = self._cloud_by_anchor()
        in_scope = self._scope_test()
        updates, seen = self._synchronize(in_scope, full, by_anchor)
        deletes, counted = self._import_others(in_scope, seen)
        results = []
        for ad in self.ad_connectors():
            results += [
                RunResult(ad.name, "Full Import" if full else "Delta Import", "success", *times),
                RunResult(ad.name, "Full Synchronization" if full else "Delta Synchronization", "success", *times),
            ]
        results.append(self._export_or_stop(updates, deletes, counted, full, by_anchor, times))
        server.run_history.extend(results)
        self._purge_run_history()

    def _joins(self, in_scope):
        """``(joined, rejoined)``: an account's objectGUID -> the resource-forest mailboxes
        joined to its person; and the master SIDs of the mailboxes that entered or left the
        scope, whose account's person a Delta takes again (what a leaving one brought is recalled)."""
        joined = {}
        for mailbox, account in self.linked_mailboxes(in_scope):
            if account is not None:
                joined.setdefault(account.object_guid, []).append(mailbox)
        space = self.server.connector_space
        rejoined = {o.master_account_sid for o in self.ad_objects if o.master_account_sid and (in_scope(o) is not None) != (o.object_guid in space)}
        return joined, rejoined

    def _synchronize(self, in_scope, full, by_anchor):
        """``(updates, seen)``: each AD user in scope that the cycle takes, with the values its
        rules give it (and its joined mailboxes' rules); the objectGUIDs of all users in scope."""
        rules_by_type = _inbound_rules_by_type(self.server.rules)
        several = len(self.ad_connectors()) > 1
        joined, rejoined = self._joins(in_scope)
        updates, seen = [], set()
        for user in self.ad_users:
            connector = in_scope(user)
            if connector is None:
                continue
            seen.add(user.object_guid)
            members = joined.get(user.object_guid, ()) if joined else ()
            if not full and not members and self._unchanged(user, rejoined):
                continue  # a Delta leaves unchanged objects as they were
            rules = rules_by_type.get(user.object_class, ())
            if several:
                # With several forests, an object meets only its own connector's rules.
                rules = tuple((r, flows) for r, flows in rules if r.connector.lower() == connector.identifier.lower())
            if not any(r.link_type is LinkType.PROVISION for r, _flows in rules):
                continue
            others = tuple((m, _own_rules(rules_by_type, m, in_scope(m), several)) for m in members) if members else ()
            # A soft-deleted object that sync brings back is not new: Apply once stays idle.
            values = _evaluate(user, rules, is_new=user.object_guid not in by_anchor, joined=others)
            updates.append((user, values))
        return updates, seen

    def _unchanged(self, user, rejoined):
        """Synced before, not changed since, and no mailbox of its joined or left its person."""
        synced_at = self.server.connector_space.get(user.object_guid)
        return synced_at is not None and user.changed_at < synced_at and not (rejoined and user.object_sid in rejoined)

    def _import_others(self, in_scope, seen):
        """Imports the other AD objects in scope; ``(deletes, counted)``: the connector-space
        objects no longer in scope, and those of them the deletion threshold counts."""
        space = self.server.connector_space
        for other in self.ad_objects:
            # Groups, contacts and computers: imported while in scope, their flows not simulated.
            if in_scope(other) is not None:
                seen.add(other.object_guid)
                space[other.object_guid] = self.clock
        # A resource-forest mailbox has no cloud object of its own (its flows go into its
        # account's person): leaving the scope, it deletes nothing in the cloud, and the
        # export does not count it against the deletion threshold.
        mailboxes = {o.object_guid for o in self.ad_objects if o.master_account_sid}
        deletes = [guid for guid in space if guid not in seen]
        return deletes, [guid for guid in deletes if guid not in mailboxes]

    def _export_or_stop(self, updates, deletes, counted, full, by_anchor, times):
        """The export to Entra ID, or none (staging mode, deletion threshold): its run result."""
        server = self.server
        aad_name = self.aad_connector().name
        threshold = server.deletion_threshold
        if server.staging_mode:
            return RunResult(aad_name, "Export", "success", *times, "staging mode: nothing exported")
        if threshold is not None and len(counted) > threshold:
            # The export stops before deleting anything; nothing at all is exported (A10).
            return RunResult(aad_name, "Export", "stopped-deletion-threshold-exceeded", *times, f"{len(counted)} deletions exceed the threshold of {threshold}")
        excluded = set(self.aad_connector().excluded_attributes)
        for user, values in updates:
            self._export(user, values, excluded, by_anchor)
        for guid in deletes:
            self._export_delete(guid, by_anchor)
        if full:
            server.next_policy = SyncPolicy.DELTA
        return RunResult(aad_name, "Export", "success", *times, f"{len(updates)} updated, {len(counted)} deleted")

    def _purge_run_history(self):
        """The scheduler's maintenance purges run history older than PurgeRunHistoryInterval
        (7 days by default, A7); the lab also caps it. A cycle's runs stay visible however
        many scheduled cycles follow within that time."""
        history = self.server.run_history
        oldest = self.clock - RUN_HISTORY_MINUTES
        while history and (len(history) > RUN_HISTORY_CAP or iso_to_minute(history[0].started) < oldest):
            del history[0]

    def _cloud_by_anchor(self):
        """Cloud users by immutable id; an active one hides a deleted one."""
        index = {}
        for user in self.cloud_users:
            if user.immutable_id and (user.deleted_at is None or user.immutable_id not in index):
                index[user.immutable_id] = user
        return index

    def _export(self, ad_user, values, excluded, by_anchor):
        cloud = by_anchor.get(ad_user.object_guid)
        if cloud is not None and cloud.deleted_at is not None:
            # Sync brings a soft-deleted object back from the recycle bin, with the
            # attributes it had, GUID included (domain-facts A10).
            cloud.deleted_at = None
            cloud.synced = True
        if cloud is None:
            cloud = LabCloudUser(id=lab_guid("cloud", ad_user.object_guid, self.clock), upn=ad_user.upn, synced=True)
            self.cloud_users.append(cloud)
            _UserChanges.seen += 1  # as many purged before as created now: the length alone would not tell
            by_anchor[ad_user.object_guid] = cloud
        if cloud.on_prem_dn != ad_user.dn:
            cloud.on_prem_dn = ad_user.dn
        for attribute, cloud_field in EXPORTED_ATTRIBUTES.items():
            value = values[attribute]
            # An excluded attribute is no longer managed: the cloud keeps its value (A9).
            if attribute in excluded or value is _KEEP:
                continue
            if getattr(cloud, cloud_field) != value:  # setting runs the change hooks; most values stay
                setattr(cloud, cloud_field, value)
        self.server.connector_space[ad_user.object_guid] = self.clock

    def _export_delete(self, anchor, by_anchor):
        cloud = by_anchor.get(anchor)
        if cloud is not None and cloud.deleted_at is None:
            cloud.deleted_at = self.clock
        del self.server.connector_space[anchor]

    # ------------------------------------------------------------------ tenant

    def assign_license(self, user_key, sku_id, disabled_plans=()):
        """assignLicense with one SKU to add. Raises ProviderError with Graph's message."""
        user = self._tenant_user(user_key)
        sku = self.sku(sku_id)
        if sku is None:
            raise ProviderError("tenant", user.upn, f"License {sku_id} does not correspond to a valid company License.")
        if user.license(sku_id) is not None:
            return  # assigning what is there already is not an error in Graph
        if not user.usage_location:
            raise ProviderError("tenant", user.upn, "License assignment cannot be done for user with invalid usage location.")
        consumed = self._consumed_counts()
        if consumed.get(sku_id, 0) >= sku.prepaid:
            raise ProviderError("tenant", user.upn, f"Subscription with SKU {sku_id} does not have any available licenses.")
        _set_licences(user, (*user.licenses, LabLicense(sku_id, self.clock, disabled_plans=sorted(disabled_plans))))
        consumed[sku_id] = consumed.get(sku_id, 0) + 1
        self._provision(user, sku, disabled_plans)

    def _provision(self, user, sku, disabled_plans):
        plans = sku.exchange_plan_ids
        exchange_on = bool(plans) if not disabled_plans else any(plan not in disabled_plans for plan in plans)
        if exchange_on and user.exchange_plan_since is None:
            user.exchange_plan_since = self.clock
        if exchange_on and user.mailbox_ready_at is None and not user.mailbox_guid:
            # Exchange Online creates a mailbox only for a user without an on-premises
            # mailbox GUID, and only at licence assignment (domain-facts, the KB article).
            user.mailbox_ready_at = self.clock + self.provisioning_minutes

    def remove_license(self, user_key, sku_id):
        user = self._tenant_user(user_key)
        lic = user.license(sku_id)
        if lic is None:
            raise ProviderError("tenant", user.upn, "User does not have a corresponding license.")
        if lic.by_group:
            raise ProviderError(
                "tenant", user.upn, "User license is inherited from a group membership and it cannot be removed directly from the user."
            )
        consumed = self._consumed_counts()
        _set_licences(user, (held for held in user.licenses if held is not lic))
        consumed[sku_id] -= 1
        sku = self.sku(sku_id)
        if sku is not None and set(sku.exchange_plan_ids) - set(lic.disabled_plans) and user.exchange_plan_since is None:
            user.exchange_plan_since = lic.assigned_at  # assignedPlans keeps it, as "Deleted"
        # The mailbox, if any, survives a quick remove-and-add (30-day grace), so nothing else changes.

    def group(self, key):
        """By object id, or by display name (case-insensitive)."""
        for group in self.groups:
            if group.id == key or group.display_name.lower() == key.lower():
                return group
        return None

    def add_group_member(self, group_key, user_key):
        """POST /groups/{id}/members/$ref; the group's licences reach the user at once.

        Lab assumption: Entra ID processes group licences in the background, usually within
        minutes; the lab processes them at once. A licence that cannot be given (no unit, no
        usage location) is left out, as Entra ID leaves the user in an error state.
        """
        group = self._group(group_key)
        user = self._tenant_user(user_key)
        if user.id in group.members:
            raise ProviderError(
                "tenant", user.upn, "One or more added object references already exist for the following modified properties: 'members'."
            )
        group.members.append(user.id)
        self._process_group_licences(user)

    def reprocess_license_assignment(self, user_key):
        """POST /users/{id}/reprocessLicenseAssignment: the user's group licences processed again.

        Lab assumption (undocumented): reprocessing re-runs Exchange Online provisioning for a
        group licence with Exchange on, as assigning a licence does, so a user whose cloud
        msExchMailboxGuid is gone gets a mailbox; the licence's lastUpdatedDateTime moves.
        """
        user = self._tenant_user(user_key)
        self._process_group_licences(user, again=True)
        return user

    def _process_group_licences(self, user, again=False):
        for group in self.groups:
            if user.id not in group.members:
                continue
            for licence in group.licenses:
                held = user.license(licence.sku_id)
                if held is not None and not held.by_group:
                    continue  # Lab assumption: a direct licence of the SKU is left as it is
                if held is None:
                    try:
                        self.assign_license(user.id, licence.sku_id, licence.disabled_plans)
                    except ProviderError:
                        continue  # the error state: no licence, the group says why
                    _replace_licence(user, user.license(licence.sku_id), by_group=True, group_id=group.id)
                elif again:
                    _replace_licence(user, held, assigned_at=self.clock)
                    self._provision(user, self.sku(licence.sku_id), held.disabled_plans)

    def _group(self, key):
        group = self.group(key)
        if group is None:
            raise ProviderError("tenant", key, f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.")
        return group

    def _tenant_user(self, key):
        user = self.cloud_user(key)
        if user is None:
            raise ProviderError(
                "tenant",
                key,
                f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
            )
        return user

    def purge_deleted_user(self, object_id):
        """DELETE /directory/deletedItems/{id}: permanent, irreversible."""
        user = self.deleted_user(object_id)
        if user is None:
            raise ProviderError("tenant", object_id, f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.")
        self.cloud_users.remove(user)
        _UserChanges.seen += 1
        for group in self.groups:
            if user.id in group.members:
                group.members.remove(user.id)  # a purged object leaves its groups

    def purge_expired(self):
        """Deleted items stay restorable for 30 days, then go for good (B4)."""
        limit = self.clock - 30 * 24 * 60
        if any(u.deleted_at is not None and u.deleted_at <= limit for u in self.cloud_users):
            self.cloud_users = [u for u in self.cloud_users if u.deleted_at is None or u.deleted_at > limit]


def _scope_of(text, scopes):
    # The deepest matching container wins; an exclusion wins only if it is deeper (A8).
    # DNs are compared as the sync engine does, by RFC 4514 (escapes, case, spaces).
    for connector, inclusions, exclusions in scopes:
        if dn.in_scope(text, inclusions, exclusions):
            return connector
    return None


def _replace_licence(user, held, **changes):
    """The user's licence ``held`` replaced by a copy with ``changes`` (the same SKU: the counts stand)."""
    _set_licences(user, (evolve(lic, **changes) if lic is held else lic for lic in user.licenses))


def _set_licences(user, licences):
    """The lab's own change of a user's licences: it keeps the counts per SKU itself, so the
    user's stamp moves (see Stamps) but not the count of changes the caches depend on (_UserChanges)."""
    object.__setattr__(user, "licenses", tuple(licences))
    _stamp(user, None, None)


def _next_build(build):
    parts = build.split(".")
    parts[2] = str(int(parts[2]) + 1)
    return ".".join(parts)


def _inbound_rules_by_type(rules):
    """Enabled inbound rules per source object type, by precedence, each with its flows by destination."""
    by_type = {}
    for rule in sorted(rules, key=lambda r: r.precedence):
        if rule.disabled or rule.direction is not Direction.INBOUND:
            continue
        flows = {}
        for flow in rule.flows:
            flows.setdefault(flow.destination, []).append(flow)
        by_type.setdefault(rule.source_object_type, []).append((rule, flows))
    return by_type


def _own_rules(rules_by_type, ad_object, connector, several):
    """The enabled inbound rules an AD object meets: those of its object class, and with
    several forests only its own connector's."""
    rules = rules_by_type.get(ad_object.object_class, ())
    if several:
        rules = tuple((r, flows) for r, flows in rules if r.connector.lower() == connector.identifier.lower())
    return rules


def _scope_passes(rule, user):
    if not rule.scope:
        return True
    for group in rule.scope:
        if all(_condition_holds(c, user) for c in group):
            return True
    return False


def _condition_holds(condition, user):
    value = user.attribute(condition.attribute)
    op = condition.operator.upper()
    if op == "ISNOTNULL":
        return value not in (None, "")
    if op == "ISNULL":
        return value in (None, "")
    if op == "EQUAL":
        return (value or "") == condition.value
    if op == "NOTEQUAL":
        return (value or "") != condition.value
    if op == "NOTSTARTSWITH":
        return not (value or "").startswith(condition.value)
    if op == "STARTSWITH":
        return (value or "").startswith(condition.value)
    raise ProviderError("lab", f"scope condition {condition.operator}", "the lab does not simulate this operator")


def _evaluate(user, rules, is_new, joined=()):
    """Metaverse values for one person: per attribute, rules by precedence (A5).

    The first rule whose flow contributes a value wins. ``NULL`` contributes
    nothing and lets lower rules contribute; ``AuthoritativeNull`` removes the value
    and stops lower rules; ``IgnoreThisFlow`` keeps what is there; an Apply-once
    flow acts only when the object is created. No contribution removes the value.

    ``joined``: ``(object, its rules)`` of the other objects joined into the person
    (resource-forest mailboxes). Each rule reads its own object, and the rules of every
    joined object compete by precedence, which is one number space across all rules of
    every connector (A4): a NULL on one connector lets another connector's rule contribute.
    """
    applicable = [(r, flows, user) for r, flows in rules if _scope_passes(r, user)]
    if joined:
        for other, other_rules in joined:
            applicable += [(r, flows, other) for r, flows in other_rules if _scope_passes(r, other)]
        applicable.sort(key=lambda item: item[0].precedence)
    values = {}
    for attribute in EXPORTED_ATTRIBUTES:
        values[attribute] = None
        for rule, flows, source in applicable:
            if attribute not in flows or (source is not user and attribute in _ACCOUNT_ONLY):
                continue
            outcome = _contribution(rule, flows[attribute], source, is_new)
            if outcome is None:
                continue
            values[attribute] = outcome[0]
            break
    return values


def _contribution(rule, flows, user, is_new):
    """``None`` if the rule's flows to one attribute contribute nothing, else a 1-tuple with the value."""
    for flow in flows:
        if flow.execute_once and not is_new:
            return None
        if flow.flow_type is FlowType.DIRECT:
            value = user.attribute(flow.source)
            # Lab assumption: an empty source contributes nothing, like NULL.
            return None if value in (None, "") else (value,)
        if flow.flow_type is FlowType.CONSTANT:
            return (flow.expression,)
        expression = flow.expression or ""
        if expression == NULL:
            return None
        if expression == AUTHORITATIVE_NULL:
            return (None,)
        if expression == IGNORE_THIS_FLOW:
            return (_KEEP,)
        if expression.startswith("[") and expression.endswith("]"):
            value = user.attribute(expression[1:-1])
            return None if value in (None, "") else (value,)
        if len(expression) >= 2 and expression[0] == expression[-1] == '"':
            return (expression[1:-1],)
        raise ProviderError("lab", f"rule {rule.name!r}", f"the lab cannot evaluate the expression {expression!r}")
    return None
