"""Observed state: frozen values that providers return and the planner reads.

Identity and value are kept apart: fields the remote system assigns (object ids,
timestamps) are ``eq=False`` so they never make two otherwise equal values differ.
"""

from __future__ import annotations

import enum
from typing import Optional

from attrs import field

from reconciler import dn
from reconciler.classes import as_tuple, frozen

GUID_ATTRIBUTE = "msExchMailboxGuid"


class Direction(enum.Enum):
    INBOUND = "Inbound"
    OUTBOUND = "Outbound"


class FlowType(enum.Enum):
    DIRECT = "Direct"
    CONSTANT = "Constant"
    EXPRESSION = "Expression"


class MergeType(enum.Enum):
    UPDATE = "Update"
    REPLACE = "Replace"
    MERGE = "Merge"
    MERGE_CASE_INSENSITIVE = "MergeCaseInsensitive"


class LinkType(enum.Enum):
    JOIN = "Join"
    PROVISION = "Provision"
    STICKY_JOIN = "StickyJoin"
    JOIN_NO_FLOW = "JoinNoFlow"


class SyncPolicy(enum.Enum):
    DELTA = "Delta"
    INITIAL = "Initial"


class MailboxState(enum.Enum):
    """What the tenant says about a user's Exchange Online mailbox.

    ``PENDING`` is a licensed user whose mailbox may still be provisioning;
    ``UNKNOWN`` is a read that failed or was not made. Neither is ``ABSENT``.
    """

    PRESENT = "present"
    ABSENT = "absent"
    PENDING = "pending"
    UNKNOWN = "unknown"


# Expressions with a meaning of their own in a flow (domain-facts A5).
NULL = "NULL"
AUTHORITATIVE_NULL = "AuthoritativeNull"
IGNORE_THIS_FLOW = "IgnoreThisFlow"


def _canonical_expression(value):
    # Whitespace inside an expression is not a difference (AADConnectDsc had to learn this),
    # and an empty expression is no expression.
    if value is None:
        return None
    return " ".join(value.split()) or None


def _empty_is_none(value):
    return value or None


def _none_is_empty(value):
    return value or ""


@frozen
class AttributeFlow:
    """One attribute flow mapping of a sync rule (ADSync's AttributeFlowMapping)."""

    destination: str
    flow_type: FlowType
    # The first source (Direct, Expression); a Constant flow's constant is its expression.
    source: Optional[str] = field(default=None, converter=_empty_is_none)
    expression: Optional[str] = field(default=None, converter=_canonical_expression)
    execute_once: bool = False
    merge_type: MergeType = MergeType.UPDATE
    # Sources after the first (an Expression flow may read several attributes): a
    # rewrite of the rule writes them all.
    other_sources: tuple[str, ...] = field(default=(), converter=as_tuple)

    @property
    def sources(self):
        return ((self.source,) if self.source else ()) + self.other_sources

    def describe(self):
        """Short text as the Synchronization Rules Editor would show it."""
        if self.flow_type is FlowType.DIRECT:
            what = f"Direct from {self.source}"
        elif self.flow_type is FlowType.CONSTANT:
            what = f"Constant {self.expression!r}"
        else:
            what = f"Expression {self.expression}"
        extras = [self.merge_type.value]
        if self.execute_once:
            extras.append("apply once")
        return f"{what} ({', '.join(extras)})"


@frozen
class ScopeCondition:
    attribute: str
    operator: str  # one of COMPARISON_OPERATORS
    value: str = ""


# ADSync's ComparisonOperator, in declaration order (adsync-signatures.json, build 2.2.8.0):
# Windows PowerShell 5.1 writes an enum as its ordinal.
COMPARISON_OPERATORS = (
    "EQUAL", "NOTEQUAL", "LESSTHAN", "LESSTHAN_OR_EQUAL", "CONTAINS", "NOTCONTAINS", "STARTSWITH", "NOTSTARTSWITH",
    "ENDSWITH", "NOTENDSWITH", "GREATERTHAN", "GREATERTHAN_OR_EQUAL", "ISNULL", "ISNOTNULL", "ISIN", "ISNOTIN",
    "ISBITSET", "ISBITNOTSET", "ISMEMBEROF", "ISNOTMEMBEROF",
)


@frozen
class JoinCondition:
    """One condition of a join rule: connector-space attribute = metaverse attribute."""

    cs_attribute: str
    mv_attribute: str
    case_sensitive: bool = False


@frozen
class SyncRule:
    """A synchronization rule as Get-ADSyncRule reports it (domain-facts A1)."""

    identifier: str
    name: str
    direction: Direction
    precedence: int
    connector: str
    source_object_type: str
    target_object_type: str
    link_type: LinkType = LinkType.JOIN
    flows: tuple[AttributeFlow, ...] = ()
    # Groups are ORed, the conditions inside a group ANDed.
    scope: tuple[tuple[ScopeCondition, ...], ...] = ()
    # Join groups, ORed; a rewrite of the rule must carry them or the join is lost.
    join: tuple[tuple[JoinCondition, ...], ...] = ()
    disabled: bool = False
    is_standard: bool = False
    # EnablePasswordSync: the rule carries password hash sync; a copy without it stops it.
    password_sync: bool = False
    # Empty and missing are the same thing here (PowerShell gives $null or "").
    immutable_tag: str = field(default="", converter=_none_is_empty)
    description: str = field(default="", converter=_none_is_empty)

    def flows_to(self, destination):
        return tuple(f for f in self.flows if f.destination == destination)


@frozen
class Connector:
    """A connector and the parts of its configuration this tool manages."""

    identifier: str
    name: str
    kind: str  # "AD" or "AAD"
    included_containers: tuple[str, ...] = ()
    excluded_containers: tuple[str, ...] = ()
    # For the Entra ID connector: attributes left out of the export (domain-facts A9).
    excluded_attributes: tuple[str, ...] = ()


@frozen
class SchedulerState:
    sync_cycle_enabled: bool
    staging_mode: bool = False
    cycle_in_progress: bool = False
    # After a rule change ADSync sets the next cycle to Initial: a full sync is owed.
    next_policy: SyncPolicy = SyncPolicy.DELTA


@frozen
class RunResult:
    connector: str
    profile: str
    result: str  # "success", "stopped-deletion-threshold-exceeded", ...
    started: str
    ended: str
    detail: str = ""

    @property
    def ok(self):
        """Whether the run let the cycle go on. ``completed-*`` results (warnings, some
        objects in error, nothing to do) are normal on real servers; ``stopped-*`` and
        anything unknown are not."""
        return self.result == "success" or self.result.startswith("completed-")

    @property
    def with_errors(self):
        return self.result in ("completed-export-errors", "completed-sync-errors", "completed-warnings")


@frozen
class ObjectCount:
    """How many objects of one type an AD connector's connector space holds in one container."""

    connector: str  # the AD connector's identifier
    container: str  # the DN of the objects' parent (an OU or container)
    object_type: str  # user, inetOrgPerson, group, contact, computer, ...
    count: int


def count_objects(entries):
    """:class:`ObjectCount` values from ``(connector identifier, DN, object type)`` of each
    object in a connector space, counted per parent container and type."""
    counts = {}
    for connector, distinguished_name, object_type in entries:
        key = (connector, dn.parent(distinguished_name), object_type)
        counts[key] = counts.get(key, 0) + 1
    return tuple(ObjectCount(*key, count) for key, count in sorted(counts.items()))


@frozen
class ServerState:
    """Everything observed on the Entra Connect server."""

    scheduler: SchedulerState
    rules: tuple[SyncRule, ...]
    connectors: tuple[Connector, ...] = ()
    deletion_threshold: Optional[int] = None  # None: disabled or unreadable
    run_history: tuple[RunResult, ...] = field(default=(), eq=False)
    #: The AD connectors' objects per container and type (what a scope change takes out of
    #: sync besides users: groups, contacts, devices); None: not read, or could not be.
    object_counts: Optional[tuple[ObjectCount, ...]] = field(default=None, eq=False)
    #: With several AD connectors: which connectors' objects are joined into each metaverse
    #: object (a :class:`reconciler.joins.Joins`); None: not read, or could not be.
    joins: Optional[object] = field(default=None, eq=False)
    #: Why the connector space could not be read (the provider's error, scrubbed), or None.
    connector_space_error: Optional[str] = field(default=None, eq=False)

    def rules_named(self, name):
        return tuple(r for r in self.rules if r.name == name)

    def rule_by_id(self, identifier):
        for rule in self.rules:
            if rule.identifier == identifier:
                return rule
        return None

    def connectors_of_kind(self, kind):
        return tuple(c for c in self.connectors if c.kind == kind)


@frozen
class Sku:
    sku_id: str
    part_number: str
    prepaid: int
    consumed: int
    includes_exchange: bool = True
    #: The servicePlanIds of its Exchange Online plans: switched off for a user, no mailbox comes.
    exchange_plan_ids: tuple[str, ...] = ()

    @property
    def available(self):
        return max(self.prepaid - self.consumed, 0)


@frozen
class LicenseAssignment:
    sku_id: str
    # A licence that comes from a group cannot be removed for one user (domain-facts B2).
    by_group: bool = False
    # When it was assigned (ISO, UTC), where the tenant says: licenseAssignmentStates.lastUpdatedDateTime.
    assigned_at: Optional[str] = field(default=None, eq=False)
    # Service plans an admin switched off for this user: a re-assignment must keep them off.
    disabled_plans: tuple[str, ...] = ()


@frozen
class UserRef:
    """A user as steps name it: the id the tenant acts on, the UPN people read."""

    id: str = field(eq=False)
    upn: str


@frozen
class CloudUser:
    id: str = field(eq=False)
    upn: str
    # True: synced from on-premises; False: was synced, no longer; None: cloud-only.
    synced: Optional[bool]
    on_prem_dn: Optional[str] = None
    usage_location: Optional[str] = None
    licenses: tuple[LicenseAssignment, ...] = ()
    mailbox: MailboxState = MailboxState.UNKNOWN
    #: The on-premises AD object class (user, inetOrgPerson) where the target can tell;
    #: None when it cannot (Graph does not say): then only a GUID cleared for every type helps.
    object_type: Optional[str] = None

    @property
    def ref(self):
        return UserRef(self.id, self.upn)

    def has_license(self, sku_id):
        return any(a.sku_id == sku_id for a in self.licenses)

    def license(self, sku_id):
        for assignment in self.licenses:
            if assignment.sku_id == sku_id:
                return assignment
        return None

    def in_ou(self, ou_dn):
        """Whether the user's on-premises object is below ``ou_dn`` (RFC 4514, not a text suffix)."""
        return bool(self.on_prem_dn) and dn.below(self.on_prem_dn, ou_dn)


@frozen
class DeletedUser:
    id: str = field(eq=False)
    upn: str
    deleted_at: str
    synced: Optional[bool]
    on_prem_dn: Optional[str] = None
    usage_location: Optional[str] = None
    #: The licences it held when it was deleted (Graph keeps them on the deleted object).
    licenses: tuple[LicenseAssignment, ...] = ()
    #: Its Exchange Online mailbox, where the provider can tell (soft-deleted with the user).
    mailbox: MailboxState = MailboxState.UNKNOWN
    #: An Exchange Online plan was assigned to it, now or before (Graph's assignedPlans keeps
    #: a removed plan as ``Deleted``): a mailbox may exist although no licence is left, since
    #: a mailbox outlives its licence by 30 days.
    had_exchange_plan: bool = False


@frozen
class LicensingGroup:
    """A group that licenses its members (group-based licensing), as far as a plan needs it."""

    id: str = field(eq=False)
    name: str
    #: (skuId, disabledPlans) of each licence the group assigns.
    licenses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Object ids of its direct members among the users the plan reads (or all of them).
    members: frozenset = field(default=frozenset(), eq=False)

    def disabled_plans(self, sku_id):
        """The plans the group switches off for ``sku_id``; None if it does not assign it."""
        for assigned, disabled in self.licenses:
            if assigned == sku_id:
                return disabled
        return None


@frozen
class TenantState:
    """Everything observed in the Microsoft 365 tenant."""

    users: tuple[CloudUser, ...]
    skus: tuple[Sku, ...]
    #: ``None``: the recycle bin could not be read. Unknown is never empty.
    deleted_users: Optional[tuple[DeletedUser, ...]] = ()
    #: The licensing groups the desired state names (by display name or id), found or not.
    groups: tuple[LicensingGroup, ...] = ()

    def group(self, key):
        """The group named ``key`` (display name, case-insensitive, or object id), or None."""
        for group in self.groups:
            if group.id == key or group.name.lower() == key.lower():
                return group
        return None

    def sku_by_part_number(self, part_number):
        for sku in self.skus:
            if sku.part_number.lower() == part_number.lower():
                return sku
        return None


@frozen
class Observed:
    """The whole world as one observation saw it."""

    server: ServerState
    tenant: TenantState
