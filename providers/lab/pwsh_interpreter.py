"""A small interpreter for exactly the PowerShell the Entra Connect provider generates.

Scripts are parsed with a real PowerShell grammar (tree-sitter-powershell) and
walked node by node. What is understood:

* statements: pipelines, assignments to ``$var``, ``$null`` or ``$var.Property``
  (a rule's typed properties convert or refuse the value as PowerShell does),
  ``foreach ($x in ...) { }``, ``if (...) { } else { }``, ``try { } catch { }``;
* expressions: single-quoted strings, integers, ``$true``/``$false``/``$null``,
  variables, ``$x.Property`` (member enumeration on arrays included), ``$x[0]``,
  ``a, b`` arrays, ``@(...)``, ``(...)``, ``[pscustomobject]@{ ... }``, ``[string]`` casts
  (an enum gives its name), single-quoted strings with every single-quote character
  (``'`` and U+2018 to U+201B) doubled, the
  comparisons ``-eq -ne -contains -notcontains``, and the list methods ``Add``,
  ``Remove``, ``Clear`` and ``Contains``;
* commands: the ADSync cmdlets the provider uses, plus ``ConvertTo-Json``,
  ``Where-Object -Property P -EQ -Value V``, ``New-Object`` (scope and join conditions only),
  ``Get-Date -Format o`` and ``Write-Error``; named parameters and switches, and
  the common parameters ``-OutVariable`` and ``-ErrorAction``.

Anything else is an error, so a generated script cannot pass without being
understood. Variables must be set before they are read (as under
``Set-StrictMode``), and an unknown parameter is an error as it is in PowerShell.

Objects behave as Windows PowerShell 5.1 shows them to ``ConvertTo-Json``: enums
come out as integers, dates as ``\\/Date(ms)\\/`` strings, and anything nested below
``-Depth`` as its type name (domain-facts E8).

A script runs inside one :meth:`LabHost.session`, so it sees and changes one
consistent lab; the ADSync cmdlets act only through the lab's server methods. The
session is saved only when a cmdlet that may change the lab ran (``Cmdlet.reads_only``
marks the others): a script that only reads leaves the lab file untouched.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import uuid

from attrs import evolve

from providers.lab import pwsh_files, signatures
from providers.lab.pwsh_objects import Cmdlet, PSObj, ScriptError, as_items, as_text, refuse_positional, single_value
from reconciler.errors import ProviderError
from reconciler.model import (
    COMPARISON_OPERATORS,
    AttributeFlow,
    Direction,
    FlowType,
    JoinCondition,
    LinkType,
    MergeType,
    ScopeCondition,
    SyncPolicy,
    SyncRule,
)

RULE_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.SynchronizationRule"
SCOPE_CONDITION_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.ScopeCondition"
JOIN_CONDITION_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.JoinCondition"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

# Enum members in declaration order: 5.1's ConvertTo-Json writes the ordinal. The
# values and their ordinals are the module's own (adsync-signatures.json, build 2.2.8.0).
ENUMS = {
    "Direction": ("Inbound", "Outbound"),
    "LinkType": ("Provision", "StickyJoin", "Join", "JoinNoFlow"),
    "FlowType": ("Direct", "Constant", "Expression"),
    "ValueMergeType": ("Update", "Replace", "MergeCaseInsensitive", "Merge"),
    "PolicyType": ("Unspecified", "Delta", "Initial"),
    "ComparisonOperator": COMPARISON_OPERATORS,
}

# The Entra ID connector's attribute inclusion list as the lab's server shows it:
# these attributes, less the ones excluded (domain-facts A9, UNCONFIRMED there).
from providers.entraconnect.scripts import AAD_EXPORT_ATTRIBUTES, partition_of  # noqa: E402 - one catalogue for both ends

AD_ATTRIBUTES = ("displayName", "mailNickname", "msExchMailboxGuid", "msExchUsageLocation", "objectGUID", "sAMAccountName", "userPrincipalName")


def _unsupported(node, what="this construct"):
    text = node.text.decode("utf-8", "replace").strip().splitlines()[0][:60]
    line = node.start_point[0] + 1
    return ScriptError(f"The lab's PowerShell does not support {what} at line {line}: {text}", "NotSupported")


# {enum: {lower-case member: member}} and {enum: {member: ordinal}}, for PSEnum.
_ENUM_MEMBERS = {enum: {m.lower(): m for m in reversed(members)} for enum, members in ENUMS.items()}
_ENUM_ORDINALS = {enum: {m: i for i, m in reversed(list(enumerate(members)))} for enum, members in ENUMS.items()}


class PSEnum:
    def __init__(self, enum, name):
        members = ENUMS[enum]
        match = _ENUM_MEMBERS[enum].get(str(name).lower())
        if match is None:
            raise ScriptError(
                f"Cannot convert value \"{name}\" to type \"{enum}\". Specify one of the following enumeration values and try again. "
                f"The possible enumeration values are \"{', '.join(members)}\".",
                "InvalidCastException",
            )
        self.enum = enum
        self.name = match

    @property
    def value(self):
        return _ENUM_ORDINALS[self.enum][self.name]

    def __eq__(self, other):
        if isinstance(other, PSEnum):
            return self.enum == other.enum and self.name == other.name
        if isinstance(other, str):
            return self.name.lower() == other.lower()
        if isinstance(other, int) and not isinstance(other, bool):
            return self.value == other
        return NotImplemented

    def __hash__(self):
        return hash((self.enum, self.name))

    def __str__(self):
        return self.name


# ---------------------------------------------------------------------- lab <-> ADSync objects


def rule_object(rule):
    return PSObj(
        RULE_TYPE,
        Name=rule.name,
        Description=rule.description,
        Identifier=rule.identifier,
        Version="1.6.0.0",
        Direction=PSEnum("Direction", rule.direction.value),
        Precedence=rule.precedence,
        PrecedenceAfter=EMPTY_GUID,
        PrecedenceBefore=EMPTY_GUID,
        Disabled=rule.disabled,
        Connector=rule.connector,
        SourceObjectType=rule.source_object_type,
        TargetObjectType=rule.target_object_type,
        LinkType=PSEnum("LinkType", rule.link_type.value),
        EnablePasswordSync=rule.password_sync,
        SoftDeleteExpiryInterval=0,
        ImmutableTag=_immutable_tag(rule.immutable_tag),
        IsStandardRule=rule.is_standard,
        IsLegacyCustomRule=False,
        ScopeFilter=[PSObj("ScopeConditionGroup", ScopeConditionList=[_condition_object(c) for c in group]) for group in rule.scope],
        JoinFilter=[PSObj("JoinConditionGroup", JoinConditionList=[_join_condition_object(c) for c in group]) for group in rule.join],
        AttributeFlowMappings=[_mapping_object(f) for f in rule.flows],
    )


IMMUTABLE_TAG_TYPE = "Microsoft.IdentityManagement.PowerShell.ObjectModel.ImmutableTag"


def _immutable_tag(tag):
    """ImmutableTag is an object, not a string (its TagValue holds the text);
    ConvertTo-Json writes it as an object. Lab assumption: an empty tag is $null."""
    if not tag:
        return None
    agnostic, _dot, version = tag.rpartition(".")
    return PSObj(
        IMMUTABLE_TAG_TYPE,
        TagValue=tag,
        VersionAgnosticTag=agnostic if version.isdigit() else tag,
        TagVersion=int(version) if version.isdigit() else 0,
        IsStandardTag=tag.startswith("Microsoft."),
        IsLegacyCustomTag=False,
    )


def _condition_object(condition):
    return PSObj(
        SCOPE_CONDITION_TYPE,
        Attribute=condition.attribute,
        ComparisonValue=condition.value,
        ComparisonOperator=PSEnum("ComparisonOperator", condition.operator),
    )


def _join_condition_object(condition):
    return PSObj(
        JOIN_CONDITION_TYPE,
        CSAttribute=condition.cs_attribute,
        MVAttribute=condition.mv_attribute,
        CaseSensitive=condition.case_sensitive,
    )


def _mapping_object(flow):
    # A Constant flow holds its constant as its source; its Expression is empty (A3).
    constant = flow.flow_type is FlowType.CONSTANT
    sources = [flow.expression] if constant and flow.expression is not None else list(flow.sources)
    return PSObj(
        "Microsoft.IdentityManagement.PowerShell.ObjectModel.AttributeFlowMapping",
        Source=sources,
        Destination=flow.destination,
        FlowType=PSEnum("FlowType", flow.flow_type.value),
        ExecuteOnce=flow.execute_once,
        ValueMergeType=PSEnum("ValueMergeType", flow.merge_type.value),
        Expression=None if constant else flow.expression,
        MappingSourceAsString=",".join(sources) or flow.expression or "",
    )


def rule_from_object(obj):
    if not isinstance(obj, PSObj) or obj.type_name != RULE_TYPE:
        raise ScriptError("Cannot bind parameter 'SynchronizationRule': the value is not a SynchronizationRule.", "ParameterBindingException")
    flows = []
    for m in obj["AttributeFlowMappings"] or []:
        sources = list(m["Source"] or [])
        flow_type = FlowType(m["FlowType"].name)
        expression = m["Expression"]
        if flow_type is FlowType.CONSTANT:
            # The constant is the flow's source; an -Expression on a Constant flow gives it no value.
            expression, sources = (sources[0] if sources else None), sources[1:]
        flows.append(
            AttributeFlow(
                destination=m["Destination"],
                flow_type=flow_type,
                source=sources[0] if sources else None,
                expression=expression,
                execute_once=bool(m["ExecuteOnce"]),
                merge_type=MergeType(m["ValueMergeType"].name),
                other_sources=tuple(sources[1:]),
            )
        )
    scope = tuple(
        tuple(ScopeCondition(c["Attribute"], c["ComparisonOperator"].name, c["ComparisonValue"] or "") for c in group["ScopeConditionList"])
        for group in obj["ScopeFilter"] or []
    )
    join = tuple(
        tuple(JoinCondition(c["CSAttribute"], c["MVAttribute"], bool(c["CaseSensitive"])) for c in group["JoinConditionList"])
        for group in obj["JoinFilter"] or []
    )
    return SyncRule(
        identifier=obj["Identifier"],
        name=obj["Name"],
        direction=Direction(obj["Direction"].name),
        precedence=int(obj["Precedence"]),
        connector=obj["Connector"],
        source_object_type=obj["SourceObjectType"],
        target_object_type=obj["TargetObjectType"],
        link_type=LinkType(obj["LinkType"].name),
        flows=tuple(flows),
        scope=scope,
        join=join,
        disabled=bool(obj["Disabled"]),
        is_standard=bool(obj["IsStandardRule"]),
        password_sync=bool(obj["EnablePasswordSync"]),
        immutable_tag=_member(obj["ImmutableTag"], "TagValue") or "",
        description=obj["Description"] or "",
    )


def _partition_dn(domain):
    return ",".join(f"DC={part}" for part in domain.split("."))


def connector_object(lab, connector):
    if connector.kind == "AD":
        # One partition per domain: the connector's forest's own (the lab names an AD connector
        # after its forest's domain), and any other domain a container names.
        domain = connector.name if "." in connector.name and " " not in connector.name else lab.domain
        dns = [_partition_dn(domain)]
        for container in (*connector.included_containers, *connector.excluded_containers):
            dn = partition_of(container)
            if dn.lower() not in {d.lower() for d in dns}:
                dns.append(dn)

        def mine(containers, dn):
            return [c for c in containers if partition_of(c).lower() == dn.lower()]

        partitions = [
            PSObj(
                "Microsoft.IdentityManagement.PowerShell.ObjectModel.ConnectorPartition",
                Name=dn,
                DN=dn,
                Identifier=str(uuid.uuid5(uuid.UUID(connector.identifier), "partition" if index == 0 else dn.lower())),
                Selected=True,
                ConnectorPartitionScope=PSObj(
                    "Microsoft.IdentityManagement.PowerShell.ObjectModel.ConnectorPartitionScope",
                    ContainerInclusionList=mine(connector.included_containers, dn),
                    ContainerExclusionList=mine(connector.excluded_containers, dn),
                ),
            )
            for index, dn in enumerate(dns)
        ]
        partitions[0]["Name"] = domain
        return PSObj(
            "Microsoft.IdentityManagement.PowerShell.ObjectModel.Connector",
            Name=connector.name,
            Identifier=connector.identifier,
            ConnectorTypeName="AD",
            Partitions=partitions,
            AttributeInclusionList=list(AD_ATTRIBUTES),
        )
    excluded = {a.lower() for a in connector.excluded_attributes}
    return PSObj(
        "Microsoft.IdentityManagement.PowerShell.ObjectModel.Connector",
        Name=connector.name,
        Identifier=connector.identifier,
        ConnectorTypeName="Extensible2",
        Partitions=[],
        AttributeInclusionList=[a for a in AAD_EXPORT_ATTRIBUTES if a.lower() not in excluded],
    )


def _minute_datetime(iso):
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------- the interpreter


@functools.lru_cache(maxsize=1)
def _language():
    import tree_sitter_powershell
    from tree_sitter import Language

    return Language(tree_sitter_powershell.language())


def _parser():
    from tree_sitter import Parser

    return Parser(_language())


def parse(script):
    """The tree-sitter tree of ``script``; raises ScriptError on a syntax error."""
    tree = _parser().parse(script.encode("utf-8"))
    if tree.root_node.has_error:
        bad = _first_error(tree.root_node)
        line = bad.start_point[0] + 1 if bad is not None else 0
        raise ScriptError(f"ParserError: the script does not parse (line {line})", "ParseException")
    return tree


#: The longest script whose tree is kept for the next run of the same text: the scripts run
#: again and again (observe, the cycle polls, the reads) are shorter; a rule's whole script
#: (up to 12 KB, 1.7 MB of nodes) is run once.
KEPT_SCRIPT_CHARS = 8192


def _program(script):
    """The root of ``script``'s tree as :class:`_Node` objects. Raises ScriptError on a syntax
    error (never kept: the next run parses and refuses it again)."""
    if len(script) > KEPT_SCRIPT_CHARS:
        return _Node.of(parse(script).root_node, script.encode("utf-8"))
    return _kept_program(script)


@functools.lru_cache(maxsize=8)
def _kept_program(script):
    """_program of a short script, parsed once per text: the parse is pure and the nodes are
    never changed (only their derived views are kept), so a script run again (the observe
    script at every plan) is walked without parsing it again."""
    return _Node.of(parse(script).root_node, script.encode("utf-8"))


class _Node:
    """A tree-sitter node copied into Python once: tree-sitter builds a new Python object at
    every ``children``/``type``/``text`` access, and a loop body is walked once per item.
    Has what the interpreter reads of a node (type, text, children, named_children,
    is_named, start_point, child_count) and keeps what it derives from it."""

    __slots__ = ("type", "is_named", "children", "_source", "_start", "_end", "_named_children", "named", "unwrapped", "_text", "name", "plan", "literal")

    @classmethod
    def of(cls, ts_root, source):
        """The copy of ``ts_root`` and all below it, walked with one cursor (without recursion:
        a deep script is refused by the interpreter's own depth check, as before)."""
        new = cls.__new__

        def copy(ts_node):
            node = new(cls)
            node.type, node.is_named, node._start, node._end = ts_node.type, ts_node.is_named, ts_node.start_byte, ts_node.end_byte
            node._source = source
            node._named_children = node.named = node.unwrapped = node._text = node.name = node.plan = node.literal = None
            return node

        cursor = ts_root.walk()
        root = copy(cursor.node)
        open_nodes = [(root, [])]  # the nodes whose children are being copied, with those so far
        if cursor.goto_first_child():
            while True:
                node = copy(cursor.node)
                open_nodes[-1][1].append(node)
                if cursor.goto_first_child():
                    open_nodes.append((node, []))
                    continue
                node.children = ()
                while not cursor.goto_next_sibling():
                    if not cursor.goto_parent():
                        break
                    parent, children = open_nodes.pop()
                    parent.children = tuple(children)
                else:
                    continue
                break
        while open_nodes:
            parent, children = open_nodes.pop()
            parent.children = tuple(children)
        return root

    @property
    def text(self):
        if self._text is None:
            self._text = self._source[self._start : self._end]
        return self._text

    @property
    def start_point(self):
        """(row, column in bytes) of the node's start, as tree-sitter counts them."""
        line_start = self._source.rfind(b"\n", 0, self._start) + 1
        return self._source.count(b"\n", 0, self._start), self._start - line_start

    @property
    def named_children(self):
        if self._named_children is None:
            self._named_children = tuple(c for c in self.children if c.is_named)
        return self._named_children

    @property
    def child_count(self):
        return len(self.children)


def _first_error(node):
    if node.type == "ERROR" or node.is_missing:
        return node
    for child in node.children:
        found = _first_error(child)
        if found is not None:
            return found
    return None


def _named(node):
    """The node's named children less comments and argument separators (kept on the node)."""
    named = node.named
    if named is None:
        named = node.named = tuple(c for c in node.named_children if c.type not in ("comment", "command_argument_sep"))
    return named


def _unwrap(node):
    """Skip the grammar's chains of single-child expression wrappers (kept on the node)."""
    found = node.unwrapped
    if found is None:
        found = node
        while found.type.endswith("expression") and found.child_count == 1:
            found = found.children[0]
        node.unwrapped = found
    return found


class _Capture(list):
    """The output of a pipeline, before it is assigned (one item: that item)."""

    def value(self):
        if not self:
            return None
        return self[0] if len(self) == 1 else list(self)


class Interpreter:
    """``identity``: the WinRM account the script runs as (the lab's file system names it)."""

    def __init__(self, host, sink, identity=None):
        self.host = host
        self.sink = sink
        self.identity = identity
        self.lab = None
        self.variables = {"erroractionpreference": "Continue"}
        self.imported = set()
        self.changed = False

    # ------------------------------------------------------------------ entry

    def run(self, script):
        root = _program(script)
        self.changed = False  # set before a cmdlet that may change the lab runs
        with self.host.session(writes=lambda: self.changed) as lab:
            self.lab = lab
            try:
                for top in _named(root):
                    if top.type != "statement_list":
                        raise _unsupported(top, f"'{top.type}' at the top level")
                    for statement in _named(top):
                        for item in self.statement(statement):
                            self.sink.output(_wire(item))
            except ProviderError as exc:
                raise ScriptError(exc.message, "Microsoft.IdentityManagement.PowerShell.Cmdlet", "InvalidOperationException") from None
            except RecursionError:
                raise ScriptError("the script nests too deeply") from None
            finally:
                self.lab = None

    # ------------------------------------------------------------------ statements

    def statements(self, statement_list):
        out = _Capture()
        for statement in _named(statement_list):
            out.extend(self.statement(statement))
        return out

    def block(self, block_node):
        lists = [c for c in block_node.named_children if c.type == "statement_list"]
        return self.statements(lists[0]) if lists else _Capture()

    def statement(self, node):
        kind = node.type
        if kind == "pipeline":
            return self.pipeline(node)
        if kind == "foreach_statement":
            return self.foreach(node)
        if kind == "if_statement":
            return self.if_(node)
        if kind == "try_statement":
            return self.try_(node)
        raise _unsupported(node, f"the statement '{kind}'")

    def foreach(self, node):
        kids = _named(node)
        variable = next(c for c in kids if c.type == "variable")
        source = next(c for c in kids if c.type == "pipeline")
        body = next(c for c in kids if c.type == "statement_block")
        out = _Capture()
        for item in as_items(self.pipeline(source).value()):
            self.assign_variable(variable, item)
            out.extend(self.block(body))
        return out

    def if_(self, node):
        kids = _named(node)
        if any(c.type == "elseif_clauses" for c in kids):
            raise _unsupported(node, "elseif")
        condition = next(c for c in kids if c.type == "pipeline")
        body = next(c for c in kids if c.type == "statement_block")
        if _truthy(self.pipeline(condition).value()):
            return self.block(body)
        otherwise = next((c for c in kids if c.type == "else_clause"), None)
        if otherwise is not None:
            return self.block(next(c for c in otherwise.named_children if c.type == "statement_block"))
        return _Capture()

    def try_(self, node):
        kids = _named(node)
        body = next(c for c in kids if c.type == "statement_block")
        clauses = next((c for c in kids if c.type == "catch_clauses"), None)
        if clauses is None or any(c.type == "finally_clause" for c in kids):
            raise _unsupported(node, "try without a plain catch")
        catches = [c for c in clauses.named_children if c.type == "catch_clause"]
        if len(catches) != 1 or any(c.type == "catch_type_list" for c in catches[0].named_children):
            raise _unsupported(node, "typed or several catch clauses")
        try:
            return self.block(body)
        except (ScriptError, ProviderError) as exc:
            # In a catch block $_ is the ErrorRecord; its Exception carries the message.
            message = exc.message if isinstance(exc, ProviderError) else str(exc)
            self.variables["_"] = PSObj(
                "System.Management.Automation.ErrorRecord",
                Exception=PSObj("System.InvalidOperationException", Message=message),
                FullyQualifiedErrorId=getattr(exc, "error_id", "InvalidOperationException"),
            )
            return self.block(next(c for c in catches[0].named_children if c.type == "statement_block"))

    # ------------------------------------------------------------------ pipelines

    def pipeline(self, node):
        kids = _named(node)
        if len(kids) != 1:
            raise _unsupported(node, "this pipeline")
        inner = kids[0]
        if inner.type == "assignment_expression":
            self.assignment(inner)
            return _Capture()
        if inner.type != "pipeline_chain":
            raise _unsupported(inner, "this pipeline")
        return self.chain(inner)

    def value_of(self, node):
        """A pipeline used as a value: a lone expression keeps its value (an array stays
        an array, as in ``$x = @(1)``); command output is collected (one item: that item)."""
        if node.type == "pipeline":
            kids = _named(node)
            if len(kids) == 1 and kids[0].type == "pipeline_chain":
                parts, _piped_only = _chain_parts(kids[0])
                if len(parts) == 1 and parts[0].type != "command":
                    return self.expression(parts[0])
            return self.pipeline(node).value()
        return self.statement(node).value()

    def chain(self, node):
        parts, piped_only = _chain_parts(node)
        if not piped_only:
            raise _unsupported(node, "a pipeline chain operator")
        items = None
        for index, part in enumerate(parts):
            if part.type == "command":
                items = self.command(part, items)
            elif index == 0:
                items = _Capture(as_items(self.expression(part)))
            else:
                raise _unsupported(part, "an expression after '|'")
        return items

    def assignment(self, node):
        kids = _named(node)
        target = _unwrap(kids[0])
        op = next(c for c in kids if c.type == "assignement_operator")
        if op.text.decode() != "=":
            raise _unsupported(op, f"the operator '{op.text.decode()}'")
        value = self.value_of(kids[-1])
        if target.type == "variable":
            self.assign_variable(target, value)
        elif target.type == "member_access":
            obj = self.expression(_named(target)[0])
            name = self.member_name(target)
            if not isinstance(obj, PSObj):
                raise ScriptError(f"The property '{name}' cannot be found on this object. Verify that the property exists and can be set.", "PropertyNotFound")
            try:
                real = signatures.property_of(obj.type_name, name)
            except KeyError:
                real, obj_has = None, False
            else:
                obj_has = obj.has(name)
            if not obj_has:
                raise ScriptError(f"The property '{name}' cannot be found on this object. Verify that the property exists and can be set.", "PropertyNotFound")
            if real is not None and not real[2]:
                raise ScriptError(f"'{real[0]}' is a ReadOnly property.", "PropertyAssignmentException")
            obj[name] = _typed_property(obj, name, value)
        else:
            raise _unsupported(target, "this assignment target")

    def assign_variable(self, node, value):
        name = _variable_name(node)
        if name in ("true", "false"):
            raise ScriptError(f"Cannot overwrite variable {name} because it is read-only or constant.")
        if name != "null":
            self.variables[name] = value

    # ------------------------------------------------------------------ expressions

    def expression(self, node):
        node = _unwrap(node)
        evaluate = _EXPRESSIONS.get(node.type)
        if evaluate is None:
            raise _unsupported(node, f"the expression '{node.type}'")
        return evaluate(self, node)

    def array_literal(self, node):
        return [self.expression(c) for c in _named(node)]

    def array_expression(self, node):
        lists = [c for c in node.named_children if c.type == "statement_list"]
        return list(self.statements(lists[0])) if lists else []

    def parenthesized(self, node):
        return self.value_of(_named(node)[0])

    def member_access(self, node):
        return _member(self.expression(_named(node)[0]), self.member_name(node))

    def element_access(self, node):
        kids = _named(node)
        return _index(self.expression(kids[0]), self.expression(kids[1]))

    def variable(self, node):
        name = _variable_name(node)
        if name == "true":
            return True
        if name == "false":
            return False
        if name == "null":
            return None
        if name not in self.variables:
            raise ScriptError(f"The variable '${name}' cannot be retrieved because it has not been set.", "VariableIsUndefined")
        return self.variables[name]

    def member_name(self, node):
        if node.name is not None:
            return node.name
        member = next(c for c in node.named_children if c.type == "member_name")
        simple = _named(member)
        if len(simple) != 1 or simple[0].type != "simple_name":
            raise _unsupported(node, "a computed member name")
        node.name = simple[0].text.decode()
        return node.name

    def invoke_method(self, node):
        kids = _named(node)
        name = self.member_name(node).lower()
        arg_list = next((c for c in node.named_children if c.type == "argument_list"), None)
        args = []
        if arg_list is not None:
            for expr_list in arg_list.named_children:
                args.extend(self.expression(a) for a in _named(expr_list))
        if _unwrap(kids[0]).type == "type_literal":
            type_name = _unwrap(kids[0]).text.decode().strip("[]")
            result = pwsh_files.call_static(self, type_name, name, args)
            if result is NotImplemented:
                raise _unsupported(node, f"the static method [{type_name}]::{name}")
            return result
        target = self.expression(kids[0])
        if target is None:
            raise ScriptError("You cannot call a method on a null-valued expression.", "InvokeMethodOnNull")
        if isinstance(target, PSObj):
            result = pwsh_files.call_method(self, target, name, args)
            if result is NotImplemented:
                raise _unsupported(node, f"the method '{name}' on {target.type_name}")
            return result
        if not isinstance(target, list):
            raise _unsupported(node, f"the method '{name}' on this object")
        if name == "add" and len(args) == 1:
            target.append(args[0])
            return None
        # .NET List<string>: Remove and Contains compare with the default (ordinal,
        # case-sensitive) equality, unlike PowerShell's -eq and -contains; Remove of a
        # name spelt otherwise removes nothing and returns False.
        if name == "remove" and len(args) == 1:
            for index, item in enumerate(target):
                if _net_equal(item, args[0]):
                    del target[index]
                    return True
            return False
        if name == "clear" and not args:
            target.clear()
            return None
        if name == "contains" and len(args) == 1:
            return any(_net_equal(item, args[0]) for item in target)
        raise _unsupported(node, f"the method '{name}'")

    def compare(self, node):
        kids = _named(node)
        if len(kids) != 3:
            raise _unsupported(node, "this comparison")
        left, right = self.expression(kids[0]), self.expression(kids[2])
        op = kids[1].text.decode().lower()
        if op in ("-eq", "-ieq"):
            return _equal(left, right)
        if op in ("-ne", "-ine"):
            return not _equal(left, right)
        if op in ("-contains", "-icontains"):
            return any(_equal(item, right) for item in as_items(left))
        if op in ("-notcontains", "-inotcontains"):
            return not any(_equal(item, right) for item in as_items(left))
        raise _unsupported(node, f"the operator '{op}'")

    def cast(self, node):
        plan = node.plan
        if plan is None:
            # What the node is, read once: nothing is evaluated before these refusals.
            plan = node.plan = _cast_plan(node)
        kind, operand = plan
        if kind == "not":
            return not _truthy(self.expression(_named(node)[-1]))
        if kind == "string":
            value = self.expression(operand)
            return "" if value is None else as_text(value)
        obj = PSObj("System.Management.Automation.PSCustomObject")
        for entry in operand:
            named = _named(entry)
            key_node, value_node = named[0], named[-1]
            key = _unwrap(key_node)
            key_text = _string(key) if key.type == "string_literal" else key.text.decode()
            obj[key_text] = self.value_of(value_node)
        return obj

    # ------------------------------------------------------------------ commands

    def command(self, node, pipeline_input):
        name_node = next(c for c in node.named_children if c.type == "command_name")
        name = name_node.text.decode()
        cmdlet = CMDLETS.get(name.lower())
        if cmdlet is not None and "-adsync" in name.lower() and "adsync" not in self.imported:
            # Lab assumption: a remote session does not autoload ADSync (its folder need
            # not be on PSModulePath), so a script must Import-Module ADSync first.
            cmdlet = None
        if cmdlet is None and (signatures.cmdlet(name) or signatures.known_elsewhere(name)) and ("-adsync" not in name.lower() or "adsync" in self.imported):
            raise ScriptError(f"The lab's PowerShell does not simulate '{name}' (a real command).", "NotSupported")
        if cmdlet is None:
            raise ScriptError(
                f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program.",
                "CommandNotFoundException",
            )
        elements = next((c for c in node.named_children if c.type == "command_elements"), None)
        named, positional = self.bind(cmdlet, elements)
        # As the real module binds it: sets, mandatory parameters, enum values.
        signatures.check_call(cmdlet.name, named, len(positional), pipeline_input is not None, ScriptError)
        out_variable = named.pop("outvariable", None)
        action = named.pop("erroraction", None)
        saved = self.variables["erroractionpreference"]
        if action is not None:
            self.variables["erroractionpreference"] = str(action)
        if not cmdlet.reads_only:
            self.changed = True
        try:
            result = cmdlet.run(self, named, positional, pipeline_input)
        finally:
            self.variables["erroractionpreference"] = saved
        out = _Capture(result or [])
        if out_variable is not None:
            # -OutVariable stores an ArrayList, hence $syncRule[0] in the editor's exports.
            self.variables[str(out_variable).lower()] = list(out)
        return out

    def bind(self, cmdlet, elements):
        named, positional = {}, []
        parts = _named(elements) if elements is not None else []
        index = 0
        while index < len(parts):
            part = parts[index]
            if part.type == "command_parameter":
                text = part.text.decode()
                pname, colon, _rest = text[1:].partition(":")
                if colon:
                    raise _unsupported(part, "-Parameter:value")
                key = cmdlet.parameter(pname)
                if key in named:
                    raise ScriptError(f"Cannot bind parameter because parameter '{pname}' is specified more than once.", "ParameterAlreadyBound")
                if key in cmdlet.switches:
                    named[key] = True
                    index += 1
                    continue
                if index + 1 >= len(parts) or parts[index + 1].type == "command_parameter":
                    raise ScriptError(f"Missing an argument for parameter '{pname}'. Specify a parameter of the required type and try again.", "MissingArgument")
                named[key] = self.expression(parts[index + 1])
                index += 2
            else:
                positional.append(self.expression(part))
                index += 1
        return named, positional

    # ------------------------------------------------------------------ helpers for cmdlets

    @property
    def stop(self):
        return str(self.variables.get("erroractionpreference", "Continue")).lower() == "stop"


def _cast_plan(node):
    """``("not", None)``, ``("string", operand)`` or ``("object", hash entries)`` for a unary
    expression; raises what the lab refuses of it (all before anything is evaluated)."""
    operator = node.children[0] if node.children else None
    if operator is not None and not operator.is_named and operator.text.decode().lower() in ("-not", "!"):
        return "not", None
    kids = _named(node)
    if len(kids) == 1 and kids[0].type == "cast_expression":
        kids = _named(kids[0])
    if len(kids) != 2 or kids[0].type != "type_literal":
        raise _unsupported(node, "this unary expression")
    type_name = kids[0].text.decode().strip("[]").lower()
    if type_name == "string":
        return "string", kids[1]
    if type_name != "pscustomobject":
        raise _unsupported(node, f"the type [{type_name}]")
    table = _unwrap(kids[1])
    if table.type != "hash_literal_expression":
        raise _unsupported(node, "[pscustomobject] of anything but @{...}")
    body = next((c for c in table.named_children if c.type == "hash_literal_body"), None)
    return "object", tuple(e for e in (body.named_children if body is not None else ()) if e.type != "comment")


def _chain_parts(node):
    """A pipeline chain's parts (named, no comments) and whether every operator between them
    is ``|`` (read once, kept on the node)."""
    if node.plan is None:
        parts = tuple(c for c in node.children if c.is_named and c.type != "comment")
        node.plan = parts, all(c.type == "|" for c in node.children if not c.is_named)
    return node.plan


# Each expression the lab understands, by its node type (any other is refused).
_EXPRESSIONS = {
    "variable": Interpreter.variable,
    "string_literal": lambda _it, node: _string(node),
    "integer_literal": lambda _it, node: int(node.text.decode()),
    "generic_token": lambda _it, node: node.text.decode(),
    "array_literal_expression": Interpreter.array_literal,
    "array_expression": Interpreter.array_expression,
    "parenthesized_expression": Interpreter.parenthesized,
    "member_access": Interpreter.member_access,
    "element_access": Interpreter.element_access,
    "invokation_expression": Interpreter.invoke_method,
    "comparison_expression": Interpreter.compare,
    "expression_with_unary_operator": Interpreter.cast,
}

# The typed properties of a rule that a script may set, as .NET types them (domain-facts A1).
# The lab is stricter than PowerShell's conversions: a wrong type is an error, never coerced.
RULE_PROPERTY_TYPES = {"precedence": (int, "System.Int32"), "disabled": (bool, "System.Boolean"), "name": (str, "System.String"), "description": (str, "System.String")}


def _typed_property(obj, name, value):
    if obj.type_name != RULE_TYPE:
        return value
    typed = RULE_PROPERTY_TYPES.get(name.lower())
    if typed is None:
        raise ScriptError(f"The lab's PowerShell does not set the rule property '{name}'.", "NotSupported")
    kind, net_type = typed
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScriptError(
            f"Exception setting \"{name}\": \"Cannot convert value \"{as_text(value)}\" to type \"{net_type}\".\"",
            "ExceptionWhenSetting",
            "Management.Automation.SetValueInvocationException",
        )
    return value


def _variable_name(node):
    if node.name is not None:
        return node.name
    text = node.text.decode()
    if not text.startswith("$") or text.startswith("${") or ":" in text:
        raise _unsupported(node, "this kind of variable")
    node.name = text[1:].lower()
    return node.name


def _string(node):
    if node.literal is None:
        node.literal = _string_value(node)
    return node.literal


def _string_value(node):
    text = node.text.decode()
    if node.type != "string_literal" or not (text.startswith("'") and text.endswith("'")):
        raise _unsupported(node, "a string other than a single-quoted one")
    out, body, index = [], text[1:-1], 0
    while index < len(body):
        char = body[index]
        if char in SINGLE_QUOTES:
            # Windows PowerShell ends the string at any single-quote character that is not doubled.
            if index + 1 >= len(body) or body[index + 1] not in SINGLE_QUOTES:
                raise ScriptError(
                    f"ParserError: the single-quote character U+{ord(char):04X} ends the string at line {node.start_point[0] + 1}; double it",
                    "ParseException",
                )
            char = body[index + 1]
            index += 1
        out.append(char)
        index += 1
    return "".join(out)


# The characters Windows PowerShell's tokenizer takes as a single quote.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def _member(value, name):
    if isinstance(value, list):
        # Member enumeration (PowerShell 3+): the property of every element.
        out = []
        for item in value:
            got = _member(item, name)
            out.extend(got if isinstance(got, list) else [got])
        return out
    if isinstance(value, PSObj):
        try:
            signatures.property_of(value.type_name, name)
        except KeyError:
            # Lab assumption: as under Set-StrictMode, reading a property the type does not
            # have is an error (Windows PowerShell would give $null, silently).
            raise ScriptError(f"The property '{name}' cannot be found on this object of type {value.type_name}.", "PropertyNotFound") from None
        return value[name]
    if value is None:
        return None
    if name.lower() == "count":
        return 1
    raise ScriptError(f"The property '{name}' cannot be found on this object.", "PropertyNotFound")


def _index(value, index):
    if not isinstance(index, int):
        raise ScriptError("Array index must be an integer in the lab's PowerShell.")
    if isinstance(value, list):
        try:
            return value[index]
        except IndexError:
            return None
    if value is None:
        raise ScriptError("Cannot index into a null array.", "NullArray")
    return value if index in (0, -1) else None


def _equal(left, right):
    if isinstance(left, str) and isinstance(right, str):
        return left.lower() == right.lower()
    if isinstance(left, PSEnum) or isinstance(right, PSEnum):
        return left == right
    return left == right


def _net_equal(left, right):
    """.NET's default equality: strings compare ordinally (case-sensitive)."""
    if isinstance(left, PSEnum) or isinstance(right, PSEnum):
        return left == right
    return type(left) is type(right) and left == right


def _truthy(value):
    if isinstance(value, list):
        return len(value) > 1 or (len(value) == 1 and _truthy(value[0]))
    return bool(value)


def _wire(item):
    """What goes back to the client for one output object."""
    if item is None or isinstance(item, (str, bool, int)):
        return item
    return as_text(item)


# ---------------------------------------------------------------------- cmdlets


def _guid(name, value):
    value = single_value(name, value, str)
    try:
        uuid.UUID(value)
    except ValueError:
        raise ScriptError(f"{name}: Cannot convert value \"{value}\" to type \"System.Guid\".", "InvalidCastException") from None
    return value


def _get_scheduler(it, named, positional, _input):
    refuse_positional("Get-ADSyncScheduler", positional)
    server = it.lab.server
    return [
        PSObj(
            "Microsoft.IdentityManagement.PowerShell.ObjectModel.SchedulerSettings",
            AllowedSyncCycleInterval="00:30:00",
            CurrentlyEffectiveSyncCycleInterval=f"00:{server.sync_interval:02d}:00" if server.sync_interval < 60 else "01:00:00",
            CustomizedSyncCycleInterval=None,
            NextSyncCyclePolicyType=PSEnum("PolicyType", server.next_policy.value),
            NextSyncCycleStartTimeInUTC=_minute_datetime(_iso(server.next_scheduled_at)),
            PurgeRunHistoryInterval="7.00:00:00",
            SyncCycleEnabled=server.sync_cycle_enabled,
            MaintenanceEnabled=True,
            StagingModeEnabled=server.staging_mode,
            SchedulerSuspended=False,
            SyncCycleInProgress=server.cycle is not None,
        )
    ]


def _iso(minute):
    from providers.lab.world import minute_to_iso

    return minute_to_iso(minute)


def _set_scheduler(it, named, positional, _input):
    refuse_positional("Set-ADSyncScheduler", positional)
    if "synccycleenabled" in named:
        value = named["synccycleenabled"]
        if not isinstance(value, bool):
            raise ScriptError(
                f"Cannot process argument transformation on parameter 'SyncCycleEnabled'. Cannot convert value \"{as_text(value)}\" to type "
                "\"System.Boolean\". Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0.",
                "ParameterArgumentTransformationError",
            )
        it.lab.set_scheduler(value)
    return []


def _get_rule(it, named, positional, _input):
    refuse_positional("Get-ADSyncRule", positional)
    rules = it.lab.server.rules
    if "identifier" in named:
        identifier = _guid("Get-ADSyncRule", named["identifier"])
        found = [r for r in rules if r.identifier.lower() == identifier.lower()]
        if not found:
            raise ScriptError(f"Get-ADSyncRule: no synchronization rule with identifier {identifier} exists.", "ObjectNotFound")
        return [rule_object(found[0])]
    return [rule_object(r) for r in rules]


def _new_rule(it, named, positional, _input):
    refuse_positional("New-ADSyncRule", positional)
    identifier = _guid("New-ADSyncRule", named["identifier"]) if "identifier" in named else str(uuid.uuid4())
    for key in ("precedenceafter", "precedencebefore"):
        if key in named and _guid("New-ADSyncRule", named[key]) != EMPTY_GUID:
            raise ScriptError("The lab's server does not simulate PrecedenceAfter/PrecedenceBefore.", "NotSupported")
    rule = PSObj(
        RULE_TYPE,
        Name=single_value("New-ADSyncRule", named["name"], str),
        Description=single_value("New-ADSyncRule", named.get("description", ""), str),
        Identifier=identifier,
        Version="1.6.0.0",
        Direction=PSEnum("Direction", single_value("New-ADSyncRule", named["direction"], str)),
        Precedence=single_value("New-ADSyncRule", named.get("precedence", 0), int),
        PrecedenceAfter=EMPTY_GUID,
        PrecedenceBefore=EMPTY_GUID,
        Disabled=bool(named.get("disabled", False)),
        Connector=_guid("New-ADSyncRule", named["connector"]),
        SourceObjectType=single_value("New-ADSyncRule", named["sourceobjecttype"], str),
        TargetObjectType=single_value("New-ADSyncRule", named["targetobjecttype"], str),
        LinkType=PSEnum("LinkType", single_value("New-ADSyncRule", named["linktype"], str)),
        EnablePasswordSync=bool(named.get("enablepasswordsync", False)),
        SoftDeleteExpiryInterval=single_value("New-ADSyncRule", named.get("softdeleteexpiryinterval", 0), int),
        ImmutableTag=_immutable_tag(single_value("New-ADSyncRule", named.get("immutabletag", ""), str)),
        IsStandardRule=False,
        IsLegacyCustomRule=False,
        ScopeFilter=[],
        JoinFilter=[],
        AttributeFlowMappings=[],
    )
    return [rule]


def _the_rule(name, value):
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, PSObj) or value.type_name != RULE_TYPE:
        raise ScriptError(f"{name}: Cannot bind parameter 'SynchronizationRule': the value is not a SynchronizationRule.", "ParameterBindingException")
    return value


def _add_mapping(it, named, positional, _input):
    refuse_positional("Add-ADSyncAttributeFlowMapping", positional)
    rule = _the_rule("Add-ADSyncAttributeFlowMapping", named["synchronizationrule"])
    sources = [single_value("Add-ADSyncAttributeFlowMapping", s, str) for s in as_items(named.get("source"))]
    flow_type = PSEnum("FlowType", single_value("Add-ADSyncAttributeFlowMapping", named["flowtype"], str))
    expression = named.get("expression")
    if flow_type.name == "Direct" and len(sources) != 1:
        raise ScriptError("Add-ADSyncAttributeFlowMapping: a Direct flow needs exactly one -Source.", "InvalidArgument")
    if flow_type.name == "Expression" and not expression:
        raise ScriptError("Add-ADSyncAttributeFlowMapping: an Expression flow needs -Expression.", "InvalidArgument")
    rule["AttributeFlowMappings"].append(
        PSObj(
            "Microsoft.IdentityManagement.PowerShell.ObjectModel.AttributeFlowMapping",
            Source=sources,
            Destination=single_value("Add-ADSyncAttributeFlowMapping", named["destination"], str),
            FlowType=flow_type,
            ExecuteOnce=bool(named.get("executeonce", False)),
            ValueMergeType=PSEnum("ValueMergeType", single_value("Add-ADSyncAttributeFlowMapping", named.get("valuemergetype", "Update"), str)),
            Expression=None if expression is None else single_value("Add-ADSyncAttributeFlowMapping", expression, str),
            MappingSourceAsString=",".join(sources) or expression,
        )
    )
    return [rule]


def _new_object(it, named, positional, _input):
    type_name = named.get("typename")
    if type_name is None and positional:
        type_name = positional.pop(0)
    refuse_positional("New-Object", positional)
    args = as_items(named.get("argumentlist"))
    if str(type_name) == SCOPE_CONDITION_TYPE:
        if len(args) != 3 or not all(isinstance(a, str) for a in args):
            raise ScriptError("New-Object: a ScopeCondition takes three arguments: attribute, value, operator.", "ConstructorNotFound")
        return [_condition_object(ScopeCondition(args[0], PSEnum("ComparisonOperator", args[2]).name, args[1]))]
    if str(type_name) == JOIN_CONDITION_TYPE:
        # JoinCondition(string csAttribute, string mvAttribute, bool caseSensitive)
        if len(args) != 3 or not all(isinstance(a, str) and a for a in args[:2]) or not isinstance(args[2], bool):
            raise ScriptError(
                "New-Object: a JoinCondition takes three arguments: the connector-space attribute, the metaverse attribute, $true or $false.",
                "ConstructorNotFound",
            )
        return [_join_condition_object(JoinCondition(args[0], args[1], args[2]))]
    made = pwsh_files.new_object(str(type_name), args)
    if made is not None:
        return [made]
    raise ScriptError(f"The lab's PowerShell creates only {SCOPE_CONDITION_TYPE} and {JOIN_CONDITION_TYPE} objects, not '{type_name}'.", "NotSupported")


def _condition_group(kind, condition_type):
    """Add-ADSyncScopeConditionGroup or Add-ADSyncJoinConditionGroup (``kind`` Scope or Join):
    one more group of ``condition_type`` objects in the rule's ScopeFilter or JoinFilter."""
    cmdlet = f"Add-ADSync{kind}ConditionGroup"

    def add(it, named, positional, _input):
        refuse_positional(cmdlet, positional)
        rule = _the_rule(cmdlet, named["synchronizationrule"])
        conditions = as_items(named[f"{kind.lower()}conditions"])
        if not conditions or not all(isinstance(c, PSObj) and c.type_name == condition_type for c in conditions):
            raise ScriptError(f"{cmdlet}: -{kind}Conditions takes {kind}Condition objects.", "ParameterBindingException")
        rule[f"{kind}Filter"].append(PSObj(f"{kind}ConditionGroup", **{f"{kind}ConditionList": list(conditions)}))
        return [rule]

    return add


def _add_rule(it, named, positional, pipeline_input):
    refuse_positional("Add-ADSyncRule", positional)
    objects = as_items(named["synchronizationrule"]) if "synchronizationrule" in named else list(pipeline_input or [])
    if not objects:
        raise ScriptError("Add-ADSyncRule: cannot process command because of one or more missing mandatory parameters: SynchronizationRule.", "MissingMandatoryParameter")
    out = []
    for obj in objects:
        rule = rule_from_object(_the_rule("Add-ADSyncRule", obj))
        it.lab.put_rule(rule)
        out.append(rule_object(rule))
    return out


def _remove_rule(it, named, positional, _input):
    refuse_positional("Remove-ADSyncRule", positional)
    if "identifier" in named:
        identifier = _guid("Remove-ADSyncRule", named["identifier"])
    elif "synchronizationrule" in named:
        identifier = _the_rule("Remove-ADSyncRule", named["synchronizationrule"])["Identifier"]
    else:
        raise ScriptError("Remove-ADSyncRule: give -Identifier or -SynchronizationRule.", "MissingMandatoryParameter")
    match = next((r for r in it.lab.server.rules if r.identifier.lower() == identifier.lower()), None)
    if match is None:
        raise ScriptError(f"Remove-ADSyncRule: no synchronization rule with identifier {identifier} exists.", "ObjectNotFound")
    it.lab.remove_rule(match.identifier)
    return []


def _get_connector(it, named, positional, _input):
    refuse_positional("Get-ADSyncConnector", positional)
    connectors = it.lab.server.connectors
    if "identifier" in named:
        identifier = _guid("Get-ADSyncConnector", named["identifier"])
        connectors = [c for c in connectors if c.identifier.lower() == identifier.lower()]
    elif "name" in named:
        name = single_value("Get-ADSyncConnector", named["name"], str)
        connectors = [c for c in connectors if c.name.lower() == name.lower()]
    else:
        return [connector_object(it.lab, c) for c in connectors]
    if not connectors:
        raise ScriptError("Get-ADSyncConnector: the connector was not found.", "ObjectNotFound")
    return [connector_object(it.lab, connectors[0])]


def _validate_range(cmdlet, parameter, value, low):
    """An Int32 parameter with ``[ValidateRange(low, Int32.MaxValue)]``, refused as PowerShell
    refuses it when binding (whatever -ErrorAction says)."""
    value = single_value(cmdlet, value, int)
    if value > 2**31 - 1:
        raise ScriptError(f"{cmdlet}: Cannot convert value \"{value}\" to type \"System.Int32\". Error: \"Value was either too large or too small for an Int32.\"", "ParameterArgumentTransformationError")
    if value < low:
        raise ScriptError(
            f"{cmdlet}: Cannot validate argument on parameter '{parameter}'. The {value} argument is less than the minimum allowed range of {low}. "
            f"Supply an argument that is greater than or equal to {low} and then try the command again.",
            "ParameterArgumentValidationError",
            "Management.Automation.ParameterBindingValidationException",
        )
    return value


def _get_connector_statistics(it, named, positional, _input):
    """Get-ADSyncConnectorStatistics -ConnectorName N (build 2.2.8.0: ConnectorStatistics).
    Lab assumption: TotalConnectors counts the connector space's objects joined to a metaverse
    object (IsConnector), as Get-ADSyncCSObject lists them; the other counts are the last run's,
    0 in the lab. The name is compared without case, as Get-ADSyncConnector -Name compares it."""
    refuse_positional("Get-ADSyncConnectorStatistics", positional)
    name = single_value("Get-ADSyncConnectorStatistics", named["connectorname"], str)
    connector = next((c for c in it.lab.server.connectors if c.name.lower() == name.lower()), None)
    if connector is None:
        raise ScriptError(f"Get-ADSyncConnectorStatistics: the connector {name} was not found.", "ObjectNotFound")
    total = 0
    if connector.kind == "AD":
        anchors = it.lab.metaverse_anchors()
        total = sum(1 for guid, _dn, _kind in it.lab.connector_space(connector.identifier) if anchors.get(guid, guid))
    counts = dict.fromkeys(("ExportAdds", "ExportUpdates", "ExportDeletes", "ImportAdds", "ImportUpdates", "ImportDeletes", "ImportNoChange"), 0)
    return [PSObj("Microsoft.IdentityManagement.PowerShell.ObjectModel.ConnectorStatistics", TotalConnectors=total, **counts)]


def _get_cs_object(it, named, positional, _input):
    """Get-ADSyncCSObject -ConnectorIdentifier G -StartIndex N -MaxResultCount M: one page of
    the connector's connector space. Lab assumption: StartIndex and MaxResultCount page
    through it in a stable order (the signature has them; their paging is not documented)."""
    refuse_positional("Get-ADSyncCSObject", positional)
    if "connectoridentifier" not in named:
        raise ScriptError("Get-ADSyncCSObject: the lab simulates only -ConnectorIdentifier with -StartIndex and -MaxResultCount.", "NotSupported")
    identifier = _guid("Get-ADSyncCSObject", named["connectoridentifier"])
    connector = it.lab.connector(identifier)
    if connector is None:
        raise ScriptError(f"Get-ADSyncCSObject: the connector {identifier} was not found.", "ObjectNotFound")
    # [ValidateRange] of 2.2.8.0 (adsync-signatures.json): StartIndex 0 and up, MaxResultCount 1 and up.
    start = _validate_range("Get-ADSyncCSObject", "StartIndex", named.get("startindex", 0), 0)
    count = _validate_range("Get-ADSyncCSObject", "MaxResultCount", named.get("maxresultcount", 1000), 1)
    objects = it.lab.connector_space(identifier)[start : start + count] if connector.kind == "AD" else []
    anchors = _anchors_for(it.lab, objects)
    page = []
    in_connector, in_metaverse = uuid.UUID(connector.identifier), uuid.UUID(EMPTY_GUID)  # the uuid5 namespaces, parsed once a page
    for guid, dn, kind in objects:
        anchor = anchors.get(guid, guid)  # "": a resource-forest mailbox joined to nothing
        page.append(
            PSObj(
                "Microsoft.IdentityManagement.PowerShell.ObjectModel.CsObject",
                ObjectId=str(uuid.uuid5(in_connector, guid)),
                ConnectorId=connector.identifier,
                ConnectorName=connector.name,
                ConnectorType="AD",
                DistinguishedName=dn,
                ObjectType=kind,
                IsTransient=False,
                IsPlaceHolder=False,
                IsConnector=bool(anchor),
                # A System.Guid: Guid.Empty for a disconnector.
                ConnectedMVObjectId=str(uuid.uuid5(in_metaverse, anchor)) if anchor else EMPTY_GUID,
            )
        )
    return page


def _anchors_for(lab, objects):
    """lab.metaverse_anchors() where ``objects`` (a page) may need it, else {}: it names only
    resource-forest mailboxes (AD objects with a master account SID), by their objectGUID, and
    working it out takes every AD user's objectSid (issue 19: 12 s a plan at 100,000 users
    when each page of 2,000 did it), while the pages of users before them need none of it."""
    mailboxes = {o.object_guid for o in lab.ad_objects if o.master_account_sid}
    if not any(guid in mailboxes for guid, _dn, _kind in objects):
        return {}
    return lab.metaverse_anchors()


def _add_connector(it, named, positional, _input):
    refuse_positional("Add-ADSyncConnector", positional)
    obj = named["connector"]
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, PSObj) or not obj.has("ConnectorTypeName"):
        raise ScriptError("Add-ADSyncConnector: -Connector takes a connector object.", "ParameterBindingException")
    connector = next((c for c in it.lab.server.connectors if c.identifier.lower() == str(obj["Identifier"]).lower()), None)
    if connector is None:
        raise ScriptError("Add-ADSyncConnector: the lab's server does not create connectors.", "NotSupported")
    if connector.kind == "AD":
        included, excluded = [], []
        for partition in obj["Partitions"] or []:
            scope = partition["ConnectorPartitionScope"]
            included += [c for c in scope["ContainerInclusionList"] if c not in included]
            excluded += [c for c in scope["ContainerExclusionList"] if c not in excluded]
        it.lab.set_container_scope(included, excluded, connector=connector.identifier)
    else:
        kept = {a.lower() for a in obj["AttributeInclusionList"] or []}
        # Keep the order already recorded, then the newly excluded in catalogue order.
        before = [a for a in connector.excluded_attributes if a.lower() not in kept]
        after = before + [a for a in AAD_EXPORT_ATTRIBUTES if a.lower() not in kept and a not in before]
        it.lab.set_excluded_attributes(after)
    return [obj]


def _start_cycle(it, named, positional, _input):
    refuse_positional("Start-ADSyncSyncCycle", positional)
    policy = PSEnum("PolicyType", single_value("Start-ADSyncSyncCycle", named.get("policytype", "Delta"), str))
    chosen = it.lab.server.next_policy if policy.name == "Unspecified" else SyncPolicy(policy.name)
    it.lab.start_cycle(chosen)
    return [PSObj("System.Management.Automation.PSCustomObject", Result="Success")]


def _run_numbers(history):
    """RunNumber of every run, as the server numbers them: growing per connector.

    Lab assumption: the lab's history has no numbers, and is trimmed from the front,
    so a run's number comes from its start minute and its place among the runs of
    its connector that started in that minute (steps of one cycle share a minute).
    """
    from providers.lab.world import iso_to_minute

    numbers, seen = [], collections.Counter()
    for r in history:
        key = (r.connector, r.started)
        numbers.append(iso_to_minute(r.started) * 100 + seen[key] + 1)
        seen[key] += 1
    return numbers


def _run_results(it, named, positional, _input):
    refuse_positional("Get-ADSyncRunProfileResult", positional)
    history = list(zip(it.lab.server.run_history, _run_numbers(it.lab.server.run_history)))
    connectors = {c.name: c.identifier for c in it.lab.server.connectors}
    if "connectorid" in named:
        wanted = _guid("Get-ADSyncRunProfileResult", named["connectorid"]).lower()
        history = [(r, n) for r, n in history if connectors.get(r.connector, "").lower() == wanted]
    history.reverse()  # newest first
    if "numberrequested" in named:
        history = history[: single_value("Get-ADSyncRunProfileResult", named["numberrequested"], int)]
    return [
        PSObj(
            "Microsoft.IdentityManagement.PowerShell.ObjectModel.RunHistory",
            RunHistoryId=str(uuid.uuid5(uuid.UUID(int=0), f"{r.connector}/{r.profile}/{r.started}/{n}")),
            ConnectorId=connectors.get(r.connector),
            ConnectorName=r.connector,
            RunProfileName=r.profile,
            RunNumber=n,
            Result=r.result,
            StartDate=_minute_datetime(r.started),
            EndDate=_minute_datetime(r.ended),
        )
        for r, n in history
    ]


def _run_status(it, named, positional, _input):
    """Get-ADSyncConnectorRunStatus: empty when idle, else the busy connector (A7).

    The lab runs a cycle's steps all at once when it ends, so while a cycle runs the
    AD connector reads as busy (the real server also goes idle between steps)."""
    refuse_positional("Get-ADSyncConnectorRunStatus", positional)
    if it.lab.server.cycle is None:
        return []
    return [PSObj("System.Management.Automation.PSCustomObject", ConnectorName=it.lab.ad_connector().name, RunState="Busy")]


def _threshold_parameter(lab):
    """The account parameter of the threshold cmdlets in the lab server's build: build
    2.2.8.0 has -AADCredential (adsync-signatures.json), newer builds -AADUserName
    (Lab assumption: from 2.3 on)."""
    return "AADCredential" if lab.server.build.startswith(("1.", "2.0.", "2.1.", "2.2.")) else "AADUserName"


def _threshold_account(it, cmdlet, named):
    offered = _threshold_parameter(it.lab)
    for given in ("aadusername", "aadcredential"):
        if given in named and given != offered.lower():
            raise ScriptError(f"A parameter cannot be found that matches parameter name '{'AADUserName' if given == 'aadusername' else 'AADCredential'}'.", "NamedParameterNotFound")
    if offered == "AADUserName":
        if "aadusername" not in named:
            raise ScriptError(f"{cmdlet}: cannot process command because of one or more missing mandatory parameters: AADUserName.", "MissingMandatoryParameter")
        single_value(cmdlet, named["aadusername"], str)
    elif "aadcredential" not in named:
        # Lab assumption: without a credential the cmdlet prompts for one; with no
        # interactive host a remote session cannot answer (the real one may hang).
        raise ScriptError(f"{cmdlet}: a command that prompts the user failed because the host program does not support user interaction.", "HostException")


def _get_threshold(it, named, positional, _input):
    refuse_positional("Get-ADSyncExportDeletionThreshold", positional)
    _threshold_account(it, "Get-ADSyncExportDeletionThreshold", named)
    threshold = it.lab.server.deletion_threshold
    # Lab assumption: a disabled threshold answers DeletionPrevention 0 and still holds
    # its count (the default 500); the real shape when disabled is UNCONFIRMED.
    return [
        PSObj(
            "Microsoft.IdentityManagement.PowerShell.ObjectModel.DeletionThresholdConfiguration",
            DeletionPrevention=1 if threshold is not None else 0,
            ThresholdPercentage=0,
            ThresholdCount=threshold if threshold is not None else 500,
        )
    ]


def _enable_threshold(it, named, positional, _input):
    refuse_positional("Enable-ADSyncExportDeletionThreshold", positional)
    _threshold_account(it, "Enable-ADSyncExportDeletionThreshold", named)
    it.lab.set_deletion_threshold(single_value("Enable-ADSyncExportDeletionThreshold", named["deletionthreshold"], int))
    return []


def _disable_threshold(it, named, positional, _input):
    refuse_positional("Disable-ADSyncExportDeletionThreshold", positional)
    _threshold_account(it, "Disable-ADSyncExportDeletionThreshold", named)
    it.lab.set_deletion_threshold(None)
    return []


def _get_command(it, named, positional, _input):
    name = named.get("name")
    if name is None and positional:
        name = positional.pop(0)
    refuse_positional("Get-Command", positional)
    name = single_value("Get-Command", name, str)
    cmdlet = CMDLETS.get(name.lower())
    if cmdlet is None or ("-adsync" in name.lower() and "adsync" not in it.imported):
        raise ScriptError(f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program.", "CommandNotFoundException")
    parameters = [p for key, p in cmdlet.names.items() if key not in ("aadusername", "aadcredential")]
    if "threshold" in name.lower():
        parameters.append(_threshold_parameter(it.lab))
    return [
        PSObj(
            "System.Management.Automation.CmdletInfo",
            Name=cmdlet.name,
            Parameters=PSObj("System.Collections.Generic.Dictionary[string,ParameterMetadata]", Keys=parameters),
        )
    ]


def _convert_to_json(it, named, positional, pipeline_input):
    refuse_positional("ConvertTo-Json", positional)
    items = as_items(named["inputobject"]) if "inputobject" in named else list(pipeline_input or [])
    depth = single_value("ConvertTo-Json", named.get("depth", 2), int)
    value = items[0] if len(items) == 1 else items
    if not items:
        return []
    data = _jsonable(value, 0, depth)
    if named.get("compress"):
        return [json.dumps(data, separators=(",", ":"), ensure_ascii=False)]
    return [json.dumps(data, indent=4, ensure_ascii=False)]


def _jsonable(value, level, depth):
    if isinstance(value, PSEnum):
        return value.value  # Windows PowerShell 5.1: enums as their integer value
    if isinstance(value, dt.datetime):
        return f"/Date({int(value.timestamp() * 1000)})/"
    if isinstance(value, (list, PSObj)) and level > depth:
        # 5.1 cuts silently below -Depth: the object's string form takes its place.
        return "System.Object[]" if isinstance(value, list) else str(value)
    if isinstance(value, list):
        return [_jsonable(v, level + 1, depth) for v in value]
    if isinstance(value, PSObj):
        return {k: _jsonable(v, level + 1, depth) for k, v in value.items()}
    return value


def _where(it, named, positional, pipeline_input):
    refuse_positional("Where-Object", positional)
    if "eq" not in named or "property" not in named or "value" not in named:
        raise ScriptError("The lab's Where-Object supports only -Property P -EQ -Value V.", "NotSupported")
    prop = single_value("Where-Object", named["property"], str)
    return [item for item in pipeline_input or [] if _equal(_member(item, prop), named["value"])]


def _get_date(it, named, positional, _input):
    refuse_positional("Get-Date", positional)
    if str(named.get("format", "")).lower() != "o":
        raise ScriptError("The lab's Get-Date supports only -Format o.", "NotSupported")
    moment = _minute_datetime(it.lab.now)
    return [moment.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")]


def _import_module(it, named, positional, _input):
    name = named.get("name")
    if name is None and positional:
        name = positional.pop(0)
    refuse_positional("Import-Module", positional)
    name = single_value("Import-Module", name, str)
    if name.lower() != "adsync":
        raise ScriptError(f"Import-Module : The specified module '{name}' was not loaded because no valid module file was found in any module directory.", "Modules_ModuleNotFound")
    it.imported.add("adsync")
    return []


def _write_error(it, named, positional, _input):
    message = named.get("message")
    if message is None and positional:
        message = positional.pop(0)
    refuse_positional("Write-Error", positional)
    if it.stop:
        raise ScriptError(as_text(message), "Microsoft.PowerShell.Commands.WriteErrorException", "Management.Automation.RuntimeException")
    it.sink.error(as_text(message))
    return []


CMDLETS = {
    c.name.lower(): c
    for c in (
        Cmdlet("Get-ADSyncScheduler", run=_get_scheduler, reads_only=True),
        Cmdlet("Set-ADSyncScheduler", ("SyncCycleEnabled",), run=_set_scheduler),
        Cmdlet("Get-ADSyncRule", ("Identifier",), run=_get_rule, reads_only=True),
        Cmdlet(
            "New-ADSyncRule",
            ("Name", "Identifier", "Description", "Direction", "Precedence", "PrecedenceAfter", "PrecedenceBefore", "SourceObjectType",
             "TargetObjectType", "Connector", "LinkType", "SoftDeleteExpiryInterval", "ImmutableTag"),
            ("Disabled", "EnablePasswordSync"),
            ("Name", "Direction", "Connector", "SourceObjectType", "TargetObjectType", "LinkType"),
            _new_rule,
            reads_only=True,
        ),
        Cmdlet(
            "Add-ADSyncAttributeFlowMapping",
            ("SynchronizationRule", "Source", "Destination", "FlowType", "ValueMergeType", "Expression"),
            ("ExecuteOnce",),
            ("SynchronizationRule", "Destination", "FlowType"),
            _add_mapping,
            reads_only=True,
        ),
        Cmdlet("New-Object", ("TypeName", "ArgumentList"), run=_new_object, reads_only=True),
        Cmdlet("Add-ADSyncScopeConditionGroup", ("SynchronizationRule", "ScopeConditions"), (), ("SynchronizationRule", "ScopeConditions"), _condition_group("Scope", SCOPE_CONDITION_TYPE), reads_only=True),
        Cmdlet("Add-ADSyncJoinConditionGroup", ("SynchronizationRule", "JoinConditions"), (), ("SynchronizationRule", "JoinConditions"), _condition_group("Join", JOIN_CONDITION_TYPE), reads_only=True),
        Cmdlet("Add-ADSyncRule", ("SynchronizationRule",), run=_add_rule),
        Cmdlet("Remove-ADSyncRule", ("Identifier", "SynchronizationRule"), run=_remove_rule),
        Cmdlet("Get-ADSyncConnector", ("Identifier", "Name"), run=_get_connector, reads_only=True),
        Cmdlet("Add-ADSyncConnector", ("Connector",), (), ("Connector",), _add_connector),
        Cmdlet("Get-ADSyncCSObject", ("ConnectorIdentifier", "StartIndex", "MaxResultCount"), run=_get_cs_object, reads_only=True),
        Cmdlet("Get-ADSyncConnectorStatistics", ("ConnectorName",), (), ("ConnectorName",), _get_connector_statistics, reads_only=True),
        Cmdlet("Start-ADSyncSyncCycle", ("PolicyType",), run=_start_cycle),
        Cmdlet("Get-ADSyncRunProfileResult", ("ConnectorId", "NumberRequested"), run=_run_results, reads_only=True),
        Cmdlet("Get-ADSyncConnectorRunStatus", run=_run_status, reads_only=True),
        # -AADUserName (2025 documentation) or -AADCredential (build 2.2.8.0), by the lab server's build.
        Cmdlet("Get-ADSyncExportDeletionThreshold", ("AADUserName", "AADCredential"), run=_get_threshold, reads_only=True),
        Cmdlet("Enable-ADSyncExportDeletionThreshold", ("DeletionThreshold", "AADUserName", "AADCredential"), (), ("DeletionThreshold",), _enable_threshold),
        Cmdlet("Disable-ADSyncExportDeletionThreshold", ("AADUserName", "AADCredential"), run=_disable_threshold),
        Cmdlet("Get-Command", ("Name",), run=_get_command, reads_only=True),
        Cmdlet("ConvertTo-Json", ("InputObject", "Depth"), ("Compress",), run=_convert_to_json, reads_only=True),
        Cmdlet("Where-Object", ("Property", "Value"), ("EQ",), run=_where, reads_only=True),
        Cmdlet("Get-Date", ("Format",), run=_get_date, reads_only=True),
        Cmdlet("Write-Error", ("Message",), run=_write_error, reads_only=True),
        Cmdlet("Import-Module", ("Name",), run=_import_module, reads_only=True),
    )
}
CMDLETS.update((c.name.lower(), c) for c in pwsh_files.cmdlets())

__all__ = ["Interpreter", "ScriptError", "parse", "CMDLETS", "rule_object", "rule_from_object", "evolve"]
