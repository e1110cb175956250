"""The PowerShell the Entra Connect provider runs, one short script per step.

Rule scripts follow the form the Synchronization Rules Editor's Export produces
(domain-facts A3, A13): ``New-ADSyncRule ... -OutVariable syncRule``, one
``Add-ADSyncAttributeFlowMapping`` per flow, ``New-Object ...ScopeCondition`` and
``Add-ADSyncScopeConditionGroup`` per scope group, ``New-Object ...JoinCondition`` and
``Add-ADSyncJoinConditionGroup`` per join group, then ``Add-ADSyncRule``. A change of
only a rule's precedence or state reads the rule, sets that property and writes it
back, so what the model does not carry (PrecedenceAfter/Before,
SoftDeleteExpiryInterval, EnablePasswordSync, ...) stays as it is. Every
script starts with ``$ErrorActionPreference = 'Stop'`` so a cmdlet's error ends it
before it changes anything more, and scripts that answer do so with one
``ConvertTo-Json -Compress`` document. Everything is Windows PowerShell 5.1: no
``&&``, no ``??``, no ``-EnumsAsStrings``.

Pure text: nothing here imports pypsrp, so ``plan --show-scripts`` costs nothing.
"""

from __future__ import annotations

import attrs

from reconciler.model import FlowType

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
SCOPE_CONDITION_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.ScopeCondition"
JOIN_CONDITION_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.JoinCondition"
# Every script loads the module it uses (a remote session may not autoload it).
PREAMBLE = "$ErrorActionPreference = 'Stop'\nImport-Module ADSync"
JSON_DEPTH = 8  # the observation nests to depth 6 (rules > rule > scope or join groups > conditions)
RUN_RESULTS_PER_CONNECTOR = 20

# The user attributes the Entra ID connector exports that this tool can filter
# (domain-facts A9: the wizard's attribute filtering is thought to edit the
# connector's AttributeInclusionList, UNCONFIRMED). An attribute is "excluded" when
# it is in this list and not in the connector's inclusion list.
AAD_EXPORT_ATTRIBUTES = (
    "accountEnabled",
    "cloudFiltered",
    "displayName",
    "givenName",
    "mail",
    "mailNickname",
    "msExchMailboxGuid",
    "proxyAddresses",
    "sourceAnchor",
    "surname",
    "usageLocation",
    "userPrincipalName",
)


# Windows PowerShell takes all of these as a single quote (its tokenizer's IsSingleQuote):
# one alone inside a single-quoted string would end it.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def quote(value):
    """A PowerShell single-quoted string: nothing inside is expanded.

    Every single-quote character (``'`` and U+2018 to U+201B) is doubled; PowerShell
    reads a doubled one as the second character of the pair.
    """
    return "'" + "".join(c + c if c in SINGLE_QUOTES else c for c in str(value)) + "'"


def _bool(value):
    return "$true" if value else "$false"


def _command(name, arguments):
    """One cmdlet call, one parameter per line (backtick continuation), as Export writes it."""
    if not arguments:
        return name
    return f"{name} `\n" + " `\n".join(f"    {a}" for a in arguments)


# ---------------------------------------------------------------------- reading


def _indent(text, spaces):
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


# One rule as the provider reads it: ``$rule`` projected to what the model carries
# (domain-facts A1), nested to depth 4 (rule > join groups > conditions > values).
# Enums are cast to [string] so that 5.1 writes their names, not their integer
# values (E8), whose numbering this tool would otherwise have to assume.
RULE_PROJECTION = """[pscustomobject]@{
    Identifier = [string]$rule.Identifier
    Name = $rule.Name
    Description = $rule.Description
    Direction = [string]$rule.Direction
    Precedence = $rule.Precedence
    Connector = [string]$rule.Connector
    SourceObjectType = $rule.SourceObjectType
    TargetObjectType = $rule.TargetObjectType
    LinkType = [string]$rule.LinkType
    Disabled = $rule.Disabled
    IsStandardRule = $rule.IsStandardRule
    EnablePasswordSync = $rule.EnablePasswordSync
    ImmutableTag = $rule.ImmutableTag.TagValue
    Flows = @(foreach ($mapping in $rule.AttributeFlowMappings) {
        [pscustomobject]@{
            Source = @($mapping.Source)
            Destination = $mapping.Destination
            FlowType = [string]$mapping.FlowType
            Expression = $mapping.Expression
            ExecuteOnce = $mapping.ExecuteOnce
            ValueMergeType = [string]$mapping.ValueMergeType
        }
    })
    Scope = @(foreach ($group in $rule.ScopeFilter) {
        [pscustomobject]@{
            Conditions = @(foreach ($condition in $group.ScopeConditionList) {
                [pscustomobject]@{
                    Attribute = $condition.Attribute
                    Operator = [string]$condition.ComparisonOperator
                    Value = $condition.ComparisonValue
                }
            })
        }
    })
    Join = @(foreach ($group in $rule.JoinFilter) {
        [pscustomobject]@{
            Conditions = @(foreach ($condition in $group.JoinConditionList) {
                [pscustomobject]@{
                    CSAttribute = $condition.CSAttribute
                    MVAttribute = $condition.MVAttribute
                    CaseSensitive = $condition.CaseSensitive
                }
            })
        }
    })
}"""


# One connector as the provider reads it: the OU filter of each partition, and the
# attribute inclusion list (domain-facts A8, A9).
CONNECTOR_PROJECTION = """[pscustomobject]@{
    Identifier = [string]$connector.Identifier
    Name = $connector.Name
    Type = $connector.ConnectorTypeName
    AttributeInclusions = @($connector.AttributeInclusionList)
    Partitions = @(foreach ($partition in $connector.Partitions) {
        [pscustomobject]@{
            DN = $partition.DN
            Selected = $partition.Selected
            Included = @($partition.ConnectorPartitionScope.ContainerInclusionList)
            Excluded = @($partition.ConnectorPartitionScope.ContainerExclusionList)
        }
    })
}"""


def _module_offers(cmdlet, parameter):
    """PowerShell that is true when the server's ADSync module gives ``cmdlet`` ``parameter``
    (build 2.2.8.0 has -AADCredential on the threshold cmdlets, newer builds -AADUserName)."""
    return f"@((Get-Command -Name {quote(cmdlet)}).Parameters.Keys) -contains {quote(parameter)}"


def observe(aad_username=None):
    """The whole observation in one script and one JSON document."""
    return f"""{PREAMBLE}
$connectors = @(Get-ADSyncConnector)
$scheduler = Get-ADSyncScheduler
[pscustomobject]@{{
    Scheduler = [pscustomobject]@{{
        SyncCycleEnabled = $scheduler.SyncCycleEnabled
        StagingModeEnabled = $scheduler.StagingModeEnabled
        SyncCycleInProgress = $scheduler.SyncCycleInProgress
        NextSyncCyclePolicyType = [string]$scheduler.NextSyncCyclePolicyType
    }}
    Rules = @(foreach ($rule in Get-ADSyncRule) {{
{_indent(RULE_PROJECTION, 8)}
    }})
    Connectors = @(foreach ($connector in $connectors) {{
{_indent(CONNECTOR_PROJECTION, 8)}
    }})
    Runs = @(foreach ($connector in $connectors) {{
        foreach ($run in Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested {RUN_RESULTS_PER_CONNECTOR}) {{
            [pscustomobject]@{{
                Connector = $run.ConnectorName
                Profile = $run.RunProfileName
                Result = $run.Result
                StartDate = $run.StartDate
                EndDate = $run.EndDate
            }}
        }}
    }})
}} | ConvertTo-Json -Depth {JSON_DEPTH} -Compress"""


# Before a change: is a cycle running, is the server staging, which rules exist.
PRECHECK = f"""{PREAMBLE}
$scheduler = Get-ADSyncScheduler
[pscustomobject]@{{
    SyncCycleInProgress = $scheduler.SyncCycleInProgress
    StagingModeEnabled = $scheduler.StagingModeEnabled
    RuleIdentifiers = @(foreach ($rule in Get-ADSyncRule) {{ [string]$rule.Identifier }})
}} | ConvertTo-Json -Compress"""

def precheck_rule(identifier):
    """PRECHECK, plus the rule about to be updated as it is now (``Rule``: empty when absent),
    so the update can touch only what changes."""
    return f"""{PREAMBLE}
$scheduler = Get-ADSyncScheduler
$rules = @(Get-ADSyncRule)
[pscustomobject]@{{
    SyncCycleInProgress = $scheduler.SyncCycleInProgress
    StagingModeEnabled = $scheduler.StagingModeEnabled
    RuleIdentifiers = @(foreach ($rule in $rules) {{ [string]$rule.Identifier }})
    Rule = @(foreach ($rule in $rules) {{
        if ($rule.Identifier -eq {quote(identifier)}) {{
{_indent(RULE_PROJECTION, 12)}
        }}
    }})
}} | ConvertTo-Json -Depth {JSON_DEPTH} -Compress"""


# While a cycle runs (A7): the scheduler's flag (as it is: a missing flag must not read
# as idle), the connectors' run status (empty when idle, but idle between run steps
# too), and every connector's latest ``count`` runs with their run numbers, which the
# wait compares with the watermarks the start script recorded. When scheduled cycles
# follow quickly, the cycle's runs may be further back than ``count``: the wait asks
# again for more until it reaches the watermark (:meth:`PsrpServer._poll`).
POLL_RUNS = 5


def poll_cycle(count=POLL_RUNS):
    return f"""{PREAMBLE}
$connectors = @(Get-ADSyncConnector)
[pscustomobject]@{{
    SyncCycleInProgress = (Get-ADSyncScheduler).SyncCycleInProgress
    RunStatus = @(foreach ($status in Get-ADSyncConnectorRunStatus) {{
        [pscustomobject]@{{
            Connector = $status.ConnectorName
            RunState = [string]$status.RunState
        }}
    }})
    Connectors = @(foreach ($connector in $connectors) {{
        [pscustomobject]@{{
            Name = $connector.Name
            Type = $connector.ConnectorTypeName
        }}
    }})
    Runs = @(foreach ($connector in $connectors) {{
        foreach ($run in Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested {int(count)}) {{
            [pscustomobject]@{{
                Connector = $run.ConnectorName
                RunNumber = $run.RunNumber
                Profile = $run.RunProfileName
                Result = $run.Result
                StartDate = $run.StartDate
                EndDate = $run.EndDate
            }}
        }}
    }})
}} | ConvertTo-Json -Depth 4 -Compress"""


POLL_CYCLE = poll_cycle()


# ---------------------------------------------------------------------- changing


def set_scheduler(enabled):
    return f"{PREAMBLE}\nSet-ADSyncScheduler -SyncCycleEnabled {_bool(enabled)}"


def set_rule_disabled(identifier, disabled):
    # There is no Enable-/Disable-ADSyncRule: read, set, write back (A3, A13).
    return "\n".join(
        (
            PREAMBLE,
            f"$syncRule = Get-ADSyncRule -Identifier {quote(identifier)}",
            f"$syncRule.Disabled = {_bool(disabled)}",
            "Add-ADSyncRule -SynchronizationRule $syncRule",
        )
    )


def remove_rule(identifier):
    return f"{PREAMBLE}\nRemove-ADSyncRule -Identifier {quote(identifier)}"


def put_rule(rule, source=None, keep_links=False):
    """The whole rule, as the editor exports it; Add-ADSyncRule creates or overwrites by Identifier.

    ``source`` names the rule, as the server holds it, that this one is written from
    (a replacement's stock rule, or the rule itself when it is rewritten): what the
    model does not carry comes from it (SoftDeleteExpiryInterval; with ``keep_links``,
    a rewrite at the same precedence, PrecedenceAfter and PrecedenceBefore).
    EnablePasswordSync is in the model: a copy keeps password hash sync.
    """
    parts = [PREAMBLE]
    if source:
        parts.append(f"$source = Get-ADSyncRule -Identifier {quote(source)}")
    links = ("$source.PrecedenceAfter", "$source.PrecedenceBefore") if source and keep_links else (quote(EMPTY_GUID), quote(EMPTY_GUID))
    new_rule = [
        f"-Name {quote(rule.name)}",
        f"-Identifier {quote(rule.identifier)}",
        f"-Description {quote(rule.description)}",
        f"-Direction {quote(rule.direction.value)}",
        f"-Precedence {int(rule.precedence)}",
        f"-PrecedenceAfter {links[0]}",
        f"-PrecedenceBefore {links[1]}",
        f"-SourceObjectType {quote(rule.source_object_type)}",
        f"-TargetObjectType {quote(rule.target_object_type)}",
        f"-Connector {quote(rule.connector)}",
        f"-LinkType {quote(rule.link_type.value)}",
        f"-SoftDeleteExpiryInterval {'$source.SoftDeleteExpiryInterval' if source else '0'}",
        f"-ImmutableTag {quote(rule.immutable_tag)}",
    ]
    if rule.password_sync:
        new_rule.append("-EnablePasswordSync")
    if rule.disabled:
        new_rule.append("-Disabled")
    new_rule.append("-OutVariable syncRule")
    parts.append(_command("New-ADSyncRule", new_rule))
    for flow in rule.flows:
        mapping = ["-SynchronizationRule $syncRule[0]"]
        # A Constant flow carries its constant as its source, as Export writes it (A3).
        sources = (flow.expression or "",) if flow.flow_type is FlowType.CONSTANT else flow.sources
        if sources:
            mapping.append(f"-Source @({', '.join(quote(s) for s in sources)})")
        mapping += [f"-Destination {quote(flow.destination)}", f"-FlowType {quote(flow.flow_type.value)}", f"-ValueMergeType {quote(flow.merge_type.value)}"]
        if flow.execute_once:
            mapping.append("-ExecuteOnce")
        if flow.flow_type is FlowType.EXPRESSION:
            mapping.append(f"-Expression {quote(flow.expression or '')}")
        mapping.append("-OutVariable syncRule")
        parts.append(_command("Add-ADSyncAttributeFlowMapping", mapping))
    counter = 0
    for group in rule.scope:
        names = []
        for condition in group:
            name = f"condition{counter}"
            counter += 1
            names.append(f"${name}[0]")
            arguments = ",".join(quote(v) for v in (condition.attribute, condition.value, condition.operator))
            parts.append(f"New-Object {SCOPE_CONDITION_TYPE} -ArgumentList {arguments} -OutVariable {name}")
        parts.append(
            _command(
                "Add-ADSyncScopeConditionGroup",
                ["-SynchronizationRule $syncRule[0]", f"-ScopeConditions @({', '.join(names)})", "-OutVariable syncRule"],
            )
        )
    for group in rule.join:
        names = []
        for condition in group:
            name = f"condition{counter}"
            counter += 1
            names.append(f"${name}[0]")
            arguments = f"{quote(condition.cs_attribute)},{quote(condition.mv_attribute)},{_bool(condition.case_sensitive)}"
            parts.append(f"New-Object {JOIN_CONDITION_TYPE} -ArgumentList {arguments} -OutVariable {name}")
        parts.append(
            _command(
                "Add-ADSyncJoinConditionGroup",
                ["-SynchronizationRule $syncRule[0]", f"-JoinConditions @({', '.join(names)})", "-OutVariable syncRule"],
            )
        )
    parts.append("Add-ADSyncRule -SynchronizationRule $syncRule[0]")
    return "\n".join(parts)


# The properties a targeted update sets, by model field.
EDITABLE = {"precedence": "Precedence", "disabled": "Disabled"}


def edited_fields(current, wanted):
    """The model fields in which ``wanted`` differs from ``current``, when a targeted
    update can make the change (only precedence and state differ); else ``None``."""
    if current is None or current.identifier.lower() != wanted.identifier.lower():
        return None
    if attrs.evolve(current, identifier=wanted.identifier, precedence=wanted.precedence, disabled=wanted.disabled) != wanted:
        return None
    return tuple(f for f in EDITABLE if getattr(current, f) != getattr(wanted, f))


def update_rule(current, wanted):
    """The script that makes the rule ``current`` (as read now; ``None``: not read) into ``wanted``.

    Only precedence and/or state differ: read the rule, set those properties, write it
    back (as the disable script does; A3, A13), so nothing the model does not carry
    can be lost. Anything else: the whole rule, rebuilt (:func:`put_rule`). With nothing
    to change, the targeted form writes the precedence again, which changes nothing.
    """
    fields = edited_fields(current, wanted)
    if fields is None:
        return put_rule(wanted, source=wanted.identifier, keep_links=current is not None and current.precedence == wanted.precedence)
    values = {"precedence": str(int(wanted.precedence)), "disabled": _bool(wanted.disabled)}
    return "\n".join(
        (
            PREAMBLE,
            f"$syncRule = Get-ADSyncRule -Identifier {quote(wanted.identifier)}",
            *(f"$syncRule.{EDITABLE[f]} = {values[f]}" for f in (fields or ("precedence",))),
            "Add-ADSyncRule -SynchronizationRule $syncRule",
        )
    )


def start_cycle(policy):
    """Record each connector's newest run number (its watermark), then start a cycle.

    The wait counts as this cycle's only the runs numbered above a connector's
    watermark: no comparison of the client's clock or time zone with the run
    history's dates (which 5.1 writes as ``/Date(ms)/`` of unspecified kind).
    """
    return f"""{PREAMBLE}
$started = Get-Date -Format o
$watermarks = @(foreach ($connector in Get-ADSyncConnector) {{
    $last = @(Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested 1)
    [pscustomobject]@{{
        Connector = $connector.Name
        RunNumber = $last[0].RunNumber
    }}
}})
# A cycle the scheduler started meanwhile makes the start fail ("Connector: X is busy"):
# the answer says so, and the provider waits for that cycle and starts again.
$result = $null
$refused = $null
try {{
    $result = Start-ADSyncSyncCycle -PolicyType {policy.value}
}} catch {{
    $refused = $_.Exception.Message
}}
[pscustomobject]@{{
    Started = $started
    Watermarks = $watermarks
    Result = [string]$result.Result
    Refused = $refused
}} | ConvertTo-Json -Depth 4 -Compress"""


def partition_of(container):
    """The domain partition a container DN lives in: its DC= components."""
    from reconciler import dn

    try:
        parts = dn.rdn_texts(container)
    except dn.DnError as exc:
        raise ValueError(f"{container!r} is not a distinguished name: {exc}") from None
    index = next((i for i, p in enumerate(parts) if p.lower().startswith("dc=")), None)
    if index is None:
        raise ValueError(f"{container!r} is not a distinguished name under a domain (no DC= part)")
    return ",".join(parts[index:])


def set_container_scope(connector_id, included, excluded):
    """OU filtering of the AD connector (A8: the edit-and-write-back pattern, UNCONFIRMED for scope).

    Only the partitions the containers live in change: each is cleared and given its
    containers; every other partition (another domain, which the desired state does not
    name) keeps its lists as they are.
    """
    lines = [PREAMBLE, f"$connector = Get-ADSyncConnector -Identifier {quote(connector_id)}"]
    by_partition = {}
    for kind, containers in (("Inclusion", included), ("Exclusion", excluded)):
        for container in containers:
            by_partition.setdefault(partition_of(container), []).append((kind, container))
    for dn, entries in by_partition.items():
        lines += [
            f"$partition = $connector.Partitions | Where-Object -Property DN -EQ -Value {quote(dn)}",
            "if (-not $partition) {",
            f"    Write-Error -Message {quote(f'the AD connector has no partition {dn} (nothing was changed)')}",
            "}",
            "$partition.ConnectorPartitionScope.ContainerInclusionList.Clear()",
            "$partition.ConnectorPartitionScope.ContainerExclusionList.Clear()",
        ]
        for kind, container in entries:
            lines.append(f"$null = $partition.ConnectorPartitionScope.Container{kind}List.Add({quote(container)})")
    lines.append("Add-ADSyncConnector -Connector $connector")
    return "\n".join(lines)


def set_excluded_attributes(connector_id, attributes):
    """Attribute filtering on the Entra ID connector (A9, UNCONFIRMED): drop the excluded, restore the rest.

    ``AttributeInclusionList`` is a .NET ``List<string>``: its ``Remove`` and ``Contains``
    compare case-sensitively, and ``Remove`` of a name spelt otherwise removes nothing
    and says so only by returning False. So each entry is matched against the
    excluded names with ``-contains`` (case-insensitive) and removed by the list's own
    spelling; the step then reads the list back (:func:`read_connector`).
    """
    wanted = {a.lower() for a in attributes}
    kept = [a for a in AAD_EXPORT_ATTRIBUTES if a.lower() not in wanted]
    lines = [PREAMBLE, f"$connector = Get-ADSyncConnector -Identifier {quote(connector_id)}"]
    if attributes:
        lines += [
            f"$excluded = @({', '.join(quote(a) for a in attributes)})",
            "foreach ($attribute in @($connector.AttributeInclusionList)) {",
            "    if ($excluded -contains $attribute) {",
            "        $null = $connector.AttributeInclusionList.Remove($attribute)",
            "    }",
            "}",
        ]
    if kept:
        lines += [
            f"foreach ($attribute in @({', '.join(quote(a) for a in kept)})) {{",
            "    if ($connector.AttributeInclusionList -notcontains $attribute) {",
            "        $null = $connector.AttributeInclusionList.Add($attribute)",
            "    }",
            "}",
        ]
    lines.append("Add-ADSyncConnector -Connector $connector")
    return "\n".join(lines)


def set_deletion_threshold(threshold, aad_username):
    """Enable (with a count) or disable the export deletion threshold, naming the Entra ID account (A10).

    Only with -AADUserName, and only when the server's module offers it: build 2.2.8.0
    takes -AADCredential, and a call without a credential would prompt, which hangs a
    remote session. There the script stops before any change, with the reason.
    """
    if not aad_username:
        raise ValueError("the export deletion threshold cmdlets need an Entra ID account: set aad_username in [target.entra_connect]")
    cmdlet = "Disable-ADSyncExportDeletionThreshold" if threshold is None else "Enable-ADSyncExportDeletionThreshold"
    call = f"{cmdlet} -AADUserName {quote(aad_username)}" if threshold is None else f"{cmdlet} -DeletionThreshold {int(threshold)} -AADUserName {quote(aad_username)}"
    return "\n".join(
        (
            PREAMBLE,
            f"if (-not ({_module_offers(cmdlet, 'AADUserName')})) {{",
            f"    Write-Error -Message {quote(f'{cmdlet} on this server takes -AADCredential, not -AADUserName (build 2.2.8.0): syncprep sends no Entra ID password; change the threshold by hand (nothing was changed)')}",
            "}",
            call,
        )
    )


# ---------------------------------------------------------------------- reading back
# After each change the step reads back what it changed, with a fresh Get-, so
# that a change is reported done only when the server shows it (the "seen done" promise).

READ_SCHEDULER = f"""{PREAMBLE}
$scheduler = Get-ADSyncScheduler
[pscustomobject]@{{
    SyncCycleEnabled = $scheduler.SyncCycleEnabled
}} | ConvertTo-Json -Compress"""


def read_rule(identifier):
    """The rule of ``identifier`` as the observation reads it (``Rule``: empty when it is gone)."""
    return f"""{PREAMBLE}
[pscustomobject]@{{
    Rule = @(foreach ($rule in @(Get-ADSyncRule)) {{
        if ($rule.Identifier -eq {quote(identifier)}) {{
{_indent(RULE_PROJECTION, 12)}
        }}
    }})
}} | ConvertTo-Json -Depth {JSON_DEPTH} -Compress"""


#: Connector-space objects read per script while counting them.
CS_PAGE = 2000


def connector_space_page(identifier, start, count=None, joins=False):
    """One page of an AD connector's connector space (``count`` objects, :data:`CS_PAGE` by
    default): each object's DN, type and whether it is joined (a connector; removing a
    disconnector deletes nothing in the cloud); with ``joins``, the metaverse object it is
    joined to too (ConnectedMVObjectId, a System.Guid written as text: objects of several
    forests with the same one are joined into one person), which only several AD forests need.

    Lab assumption: -StartIndex and -MaxResultCount page through the connector space in a
    stable order (build 2.2.8.0's signature has them; their paging is not documented), and
    Get-ADSyncCSObject returns CsObject (the reference lists its type, not this cmdlet's output)."""
    count = CS_PAGE if count is None else count
    mv = "\n            MV = [string]$object.ConnectedMVObjectId" if joins else ""
    return f"""{PREAMBLE}
$page = @(Get-ADSyncCSObject -ConnectorIdentifier {quote(identifier)} -StartIndex {int(start)} -MaxResultCount {int(count)})
[pscustomobject]@{{
    Objects = @(foreach ($object in $page) {{
        [pscustomobject]@{{
            DN = $object.DistinguishedName
            Type = $object.ObjectType
            Connector = $object.IsConnector{mv}
        }}
    }})
}} | ConvertTo-Json -Depth 4 -Compress"""


def connector_statistics(name):
    """How many connectors (objects joined to a metaverse object) one AD connector's connector
    space holds (Get-ADSyncConnectorStatistics -ConnectorName, build 2.2.8.0's
    ConnectorStatistics.TotalConnectors), to tell a complete read of it from one that ended early.

    Lab assumption: TotalConnectors counts the connector space's objects whose IsConnector is
    true, as the paged Get-ADSyncCSObject listing shows them (the cmdlet is not documented)."""
    return f"""{PREAMBLE}
$statistics = Get-ADSyncConnectorStatistics -ConnectorName {quote(name)}
[pscustomobject]@{{
    TotalConnectors = $statistics.TotalConnectors
}} | ConvertTo-Json -Compress"""


def read_connector(identifier):
    """One connector as the observation reads it."""
    return f"""{PREAMBLE}
$connector = Get-ADSyncConnector -Identifier {quote(identifier)}
[pscustomobject]@{{
    Connector = {_indent(CONNECTOR_PROJECTION, 4).lstrip()}
}} | ConvertTo-Json -Depth {JSON_DEPTH} -Compress"""


def read_threshold(aad_username):
    """The export deletion threshold (A10), read on its own so that it can be time-boxed.

    Called only with -AADUserName and only when the module offers it (never a prompt);
    ``Parameter`` says which form the module has. DeletionPrevention says whether the
    threshold is on: a disabled threshold still holds its count.
    """
    return f"""{PREAMBLE}
$threshold = $null
$parameter = 'AADCredential'
if ({_module_offers('Get-ADSyncExportDeletionThreshold', 'AADUserName')}) {{
    $parameter = 'AADUserName'
    $threshold = Get-ADSyncExportDeletionThreshold -AADUserName {quote(aad_username)}
}}
[pscustomobject]@{{
    Parameter = $parameter
    DeletionThreshold = $threshold
}} | ConvertTo-Json -Depth 3 -Compress"""
