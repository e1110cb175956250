"""The closed set of operations a plan step can ask a provider to carry out.

Each is a frozen value. Providers dispatch on them with ``match``; an operation a
provider does not list in its ``SUPPORTS`` is refused before apply starts.
The server-side operations mirror what ADSync itself offers (domain-facts A13):
there is no "edit rule" cmdlet, only Add-ADSyncRule (create or overwrite by
identifier) and Remove-ADSyncRule.
"""

from __future__ import annotations

from typing import Optional

from reconciler.classes import frozen
from reconciler.model import SyncPolicy, SyncRule, UserRef


# Entra Connect server -------------------------------------------------------


@frozen
class SetScheduler:
    """Set-ADSyncScheduler -SyncCycleEnabled."""

    enabled: bool


@frozen
class SetRuleDisabled:
    """Enable or disable a rule; the only change a stock rule accepts."""

    identifier: str
    name: str
    disabled: bool


@frozen
class CreateRule:
    """Add a new custom rule (New-ADSyncRule ... Add-ADSyncRule).

    ``copy_of``: the identifier of the rule this one copies (a replacement's stock
    rule); what the model does not carry (SoftDeleteExpiryInterval, ...) is taken
    from that rule as the server holds it."""

    rule: SyncRule
    copy_of: Optional[str] = None


@frozen
class UpdateRule:
    """Overwrite a custom rule with the same identifier (Add-ADSyncRule)."""

    rule: SyncRule


@frozen
class RemoveRule:
    identifier: str
    name: str


@frozen
class RunSyncCycle:
    """Start a sync cycle and wait until every connector's run of it has finished."""

    policy: SyncPolicy


@frozen
class SetContainerScope:
    """An AD connector's OU filtering: containers included and excluded (domain-facts A8).

    ``connector``: the AD connector's identifier, where the server has several (one per
    forest); None: the only one."""

    included: tuple[str, ...]
    excluded: tuple[str, ...]
    connector: Optional[str] = None


@frozen
class SetExcludedAttributes:
    """Attributes the Entra ID connector no longer exports (domain-facts A9)."""

    attributes: tuple[str, ...]


@frozen
class SetDeletionThreshold:
    """Enable-ADSyncExportDeletionThreshold; ``None`` disables it (domain-facts A10)."""

    threshold: int | None


# Tenant -----------------------------------------------------------------------


@frozen
class AssignLicense:
    sku_id: str
    part_number: str
    users: tuple[UserRef, ...]
    #: Per UPN (lower case): service plans to keep disabled when the licence is assigned again.
    disabled_plans: tuple[tuple[str, tuple[str, ...]], ...] = ()


@frozen
class RemoveLicense:
    sku_id: str
    part_number: str
    users: tuple[UserRef, ...]


@frozen
class AddGroupMembers:
    """POST /groups/{id}/members/$ref for each user: the group's licences follow (group-based
    licensing). Done once each user is read back among the group's members."""

    group_id: str
    group_name: str
    users: tuple[UserRef, ...]


@frozen
class ReprocessLicences:
    """POST /users/{id}/reprocessLicenseAssignment: the user's group licences are processed
    again (a licence inherited from a group cannot be removed from the user)."""

    users: tuple[UserRef, ...]


@frozen
class PurgeDeletedUsers:
    """DELETE /directory/deletedItems/{id}: permanent and irreversible."""

    users: tuple[UserRef, ...]


@frozen
class VerifyMailboxes:
    """Read-only: wait (up to a bound) until each user's mailbox exists."""

    users: tuple[UserRef, ...]


SERVER_OPERATIONS = frozenset(
    {
        SetScheduler,
        SetRuleDisabled,
        CreateRule,
        UpdateRule,
        RemoveRule,
        RunSyncCycle,
        SetContainerScope,
        SetExcludedAttributes,
        SetDeletionThreshold,
    }
)
TENANT_OPERATIONS = frozenset({AssignLicense, RemoveLicense, AddGroupMembers, ReprocessLicences, PurgeDeletedUsers, VerifyMailboxes})


@frozen
class Outcome:
    """What a provider reports back from one operation.

    ``failures`` lists per-user problems of a tenant operation that went ahead for
    the other users (``(upn, reason)``); ``detail`` is a line for the progress log.
    """

    detail: str = ""
    failures: tuple[tuple[str, str], ...] = ()
