"""Loading desired-state TOML files: strict structuring and errors that point at lines.

Every problem in a file is collected before anything is reported, one line each::

    desired-state/x.toml:14: rules[1].flows[0].flow_type: must be one of Direct, Constant, Expression (got 'Expresion')

tomli gives values but no positions, so :func:`key_lines` scans the text once to
map each key path to the line that sets it.
"""

from __future__ import annotations

import enum
import codecs
import functools
import re
import typing
from pathlib import Path

import tomli

from reconciler.desired import (
    CREDENTIAL_VARIABLES,
    GRAPH_AUTHS,
    SPN_AUTHS,
    TOKEN_CACHES,
    WINRM_AUTHS,
    DesiredState,
    RuleKind,
    TargetKind,
    credential_variable_problem,
    variable_name_problem,
)
from reconciler.dn import is_container
from reconciler.errors import ConfigError
from reconciler.model import COMPARISON_OPERATORS, FlowType
from reconciler.rules import ALL_AD
from reconciler.structure import LOADER_FIELDS, structure

MAX_FILE_BYTES = 1024 * 1024
PRECEDENCE_MAX = 2**31 - 1
UPN = re.compile(r"^[^@\s\"'<>(),;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
# The scope-filter operators: ADSync's own ComparisonOperator values (model.COMPARISON_OPERATORS).
SCOPE_OPERATORS = frozenset(COMPARISON_OPERATORS)
SECRET_WORDS = ("password", "secret", "token_value", "client_secret", "private_key", "bearer")

# Keys each rule kind accepts: a stock rule can only be enabled or disabled (domain-facts A3).
_RULE_KEYS = {
    RuleKind.STOCK: {"name", "kind", "enabled", "connector"},
    RuleKind.REPLACEMENT: {"name", "kind", "enabled", "precedence", "flows", "connector"},
}


def _strict(check, describe):
    def structure(value, _type):
        if not check(value):
            raise TypeError(f"expected {describe}, got {_toml_type(value)}")
        return value

    return structure


def _toml_type(value):
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _raise(exc):
    raise exc


@functools.cache
def _converter():
    """The strict cattrs converter: for a file the quick road (:mod:`reconciler.structure`)
    does not take, whose errors it reports with their key paths. Built when first needed."""
    import cattrs
    from cattrs.errors import IterableValidationError, IterableValidationNote

    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict(lambda v: isinstance(v, str), "a string"))
    converter.register_structure_hook(bool, _strict(lambda v: isinstance(v, bool), "true or false"))
    converter.register_structure_hook(
        int, _strict(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    )

    converter.register_structure_hook(
        float,
        lambda v, _t: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _raise(TypeError(f"expected a number, got {_toml_type(v)}")),
    )

    def structure_enum(value, enum_type):
        if isinstance(value, str):
            for member in enum_type:
                if member.value.lower() == value.lower():
                    return member
        choices = ", ".join(m.value for m in enum_type)
        raise ValueError(f"must be one of {choices} (got {value!r})")

    converter.register_structure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), structure_enum)

    def is_tuple(t):
        return typing.get_origin(t) is tuple

    def structure_tuple(value, tuple_type):
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {_toml_type(value)}")
        (item_type, _ellipsis) = typing.get_args(tuple_type)
        errors, items = [], []
        for index, item in enumerate(value):
            try:
                items.append(converter.structure(item, item_type))
            except Exception as exc:  # noqa: BLE001 - regrouped below with the index
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"Structuring {tuple_type} @ index {index}", index, item_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {tuple_type!r}", errors, tuple_type)
        return tuple(items)

    converter.register_structure_hook_func(is_tuple, structure_tuple)
    _omit_loader_fields(converter)
    return converter


def _omit_loader_fields(converter):
    """Fields the loader fills (a wave's users, where an entry is) are no TOML keys."""
    from cattrs.gen import make_dict_structure_fn, override

    for cls, names in LOADER_FIELDS.items():
        omitted = {name: override(omit=True) for name in names}
        converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **omitted))


def _structured(raw):
    """(the desired state, None), or (None, the error that says what is wrong with ``raw``)."""
    try:
        return structure(raw, DesiredState), None
    except Exception:  # noqa: BLE001 - whatever it was, the converter reports it properly
        pass
    from cattrs import BaseValidationError

    try:
        return _converter().structure(raw, DesiredState), None
    except (BaseValidationError, ValueError, TypeError) as exc:
        return None, exc


def load_desired(path):
    """Read, structure and check a desired-state file; raise :class:`ConfigError` with every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read: {exc.strerror}"]) from None
    return loads_desired(data, str(path))


def loads_desired(data, source="<memory>"):
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"{source}: {len(data)} bytes is over the {MAX_FILE_BYTES}-byte limit for a desired-state file"])
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError([f"{source}:1: UTF-16, not UTF-8 (as Windows PowerShell 5.1 writes with '>'); save it as UTF-8"])
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]  # Notepad's "UTF-8 with BOM"; TOML's text starts after it
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{source}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x})"]) from None
    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f":{match.group(1)}" if match else ""
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ConfigError([f"{source}{where}: invalid TOML: {message}"]) from None

    lines = key_lines(text)
    problems = []

    def report(key_path, message):
        problems.append(f"{source}:{_line_for(lines, key_path)}: {key_path or '(top level)'}: {message}")

    secrets = dict(_secret_keys(raw))
    for key_path, message in secrets.items():
        report(key_path, message)
    for key_path, message in _kind_keys(raw):
        report(key_path, message)
    desired, error = _structured(raw)
    if error is not None:
        for key_path, message in _flatten(error, ""):
            if key_path not in secrets:  # said once already, better
                report(key_path, message)
    if desired is not None:
        desired = _with_waves(desired, source, lines, problems.append)

    def where(key_path):
        return f"{source}:{_line_for(lines, key_path)}: {key_path}"

    for key_path, message in _check(_Parts.of(desired) if desired is not None else _Parts.salvage(raw), where):
        report(key_path, message)
    if problems:
        # Keep the order of the file: people fix errors top to bottom.
        problems = sorted(dict.fromkeys(problems), key=_sort_key)
        raise ConfigError(problems)
    return _with_source(desired, source, data)


def _with_source(desired, source, data):
    import hashlib

    import attrs

    return attrs.evolve(desired, source=source, sha256=hashlib.sha256(data).hexdigest())


def _with_waves(desired, source, lines, problem):
    """Each licence entry with where it is, and the users of its wave file read in."""
    import attrs

    from reconciler.waves import WaveError, read_wave

    specs, files = [], []
    for index, spec in enumerate(desired.licenses):
        here = f"licenses[{index}]"
        spec = attrs.evolve(spec, place=f"{source}:{_line_for(lines, here)}: {here}")
        if spec.users_file is not None:
            if not spec.users_file.strip():
                problem(f"{source}:{_line_for(lines, here + '.users_file')}: {here}.users_file: must not be empty")
            else:
                try:
                    users, digest = read_wave(spec.users_file, source, spec.users_column, UPN)
                except WaveError as exc:
                    where = f"{source}:{_line_for(lines, here + '.users_file')}: {here}.users_file"
                    for line in exc.lines:
                        problem(f"{line} (read for {where})")
                else:
                    spec = attrs.evolve(spec, file_users=users)
                    files.append((spec.users_file, digest))
        specs.append(spec)
    return attrs.evolve(desired, licenses=tuple(specs), files=tuple(files))


def _sort_key(problem):
    match = re.match(r"^.*?:(\d+|\?): ", problem)
    return int(match.group(1)) if match and match.group(1).isdigit() else 0


def _flatten(exc, path):
    """(key path, message) for every leaf error in a cattrs exception tree."""
    from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

    if isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield _join(path, key), "unknown key"
        return
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            yield from _flatten_leaf(inner, _join(path, note.name))
        for inner in without:
            yield from _flatten(inner, path)
        return
    if isinstance(exc, IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            yield from _flatten_leaf(inner, f"{path}[{note.index}]")
        for inner in without:
            yield from _flatten(inner, path)
        return
    yield path, _message(exc)


def _flatten_leaf(exc, path):
    from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

    if isinstance(exc, (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError)):
        yield from _flatten(exc, path)
    else:
        yield path, _message(exc)


def _message(exc):
    if isinstance(exc, KeyError):
        return "required key missing"
    text = str(exc)
    if isinstance(exc, AttributeError) and "has no attribute 'keys'" in text:
        # cattrs met something other than a table where a table belongs.
        found = {"'list'": "an array", "'str'": "a string", "'int'": "an integer", "'bool'": "a boolean", "'float'": "a float"}
        return f"expected a table, got {next((v for k, v in found.items() if text.startswith(k)), 'something else')}"
    if isinstance(exc, TypeError) and "missing" in text and "required" in text:
        match = re.search(r"argument: '(\w+)'", text)
        return f"required key {match.group(1)!r} missing" if match else "required key missing"
    return text


def _join(path, key):
    return f"{path}.{key}" if path else key


def _secret_keys(raw, path=""):
    if isinstance(raw, dict):
        for key, value in raw.items():
            key_path = _join(path, key)
            # "password_env" names an environment variable: that is where secrets belong.
            if any(word in key.lower() for word in SECRET_WORDS) and not key.lower().endswith("_env"):
                yield key_path, "secrets do not belong in a desired-state file; name an environment variable instead (see README)"
            else:
                yield from _secret_keys(value, key_path)
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            yield from _secret_keys(item, f"{path}[{index}]")


def _kind_keys(raw):
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict) or not isinstance(rule.get("kind"), str):
            continue
        kind = next((k for k in RuleKind if k.value == rule["kind"].lower()), None)
        allowed = _RULE_KEYS.get(kind)
        if allowed is None:
            continue
        for key in rule:
            if key not in allowed:
                why = "a stock rule can only be enabled or disabled" if kind is RuleKind.STOCK else "a replacement copies everything but its precedence and the flows it lists"
                yield f"rules[{index}].{key}", f"not allowed on a {kind.value} rule: {why}"


class _Parts:
    """What structured of a file, with each item's index in the file (for messages)."""

    def __init__(self, rules, licenses, scope=None, purge=None, target=None, export=None, state=None):
        self.rules, self.licenses, self.scope, self.purge, self.target, self.export = rules, licenses, scope, purge, target, export
        self.state = state

    @classmethod
    def of(cls, desired):
        return cls(
            list(enumerate(desired.rules)), list(enumerate(desired.licenses)), desired.scope, desired.purge, desired.target, desired.export, desired.state
        )

    @classmethod
    def salvage(cls, raw):
        """The items that structure on their own, when the whole file did not:
        their cross-field problems are reported in the same run as the type errors."""

        def each(key, item_type):
            items = raw.get(key) if isinstance(raw, dict) else None
            good = []
            for index, item in enumerate(items if isinstance(items, list) else []):
                try:
                    good.append((index, _converter().structure(item, item_type)))
                except Exception:  # noqa: BLE001 - its own errors are reported already
                    pass
            return good

        def one(key, item_type):
            try:
                return _converter().structure(raw[key], item_type) if isinstance(raw, dict) and key in raw else None
            except Exception:  # noqa: BLE001 - reported already
                return None

        from reconciler.desired import LicenseSpec, PurgeSpec, RuleSpec, ScopeSpec

        return cls(each("rules", RuleSpec), each("licenses", LicenseSpec), one("scope", ScopeSpec), one("purge", PurgeSpec), None)


def _check(parts, place_of=lambda key_path: key_path):
    """Cross-field checks, after structuring: every reason, not just the first."""
    seen_names, seen_precedences = {}, {}
    for index, rule in parts.rules:
        here = f"rules[{index}]"
        if not rule.name.strip():
            yield f"{here}.name", "must not be empty"
        # Each AD connector has its own stock rule of a name: a name may come once per connector.
        key = (rule.name, (rule.connector or "").lower())
        if key in seen_names:
            yield f"{here}.name", f"duplicate rule name {rule.name!r} (first at rules[{seen_names[key]}])"
        elif rule.kind is not RuleKind.CUSTOM and any(n == rule.name and (c == ALL_AD or (c == "") != (key[1] == "") or key[1] == ALL_AD) for n, c in seen_names):
            first = next(i for (n, c), i in seen_names.items() if n == rule.name)
            yield f"{here}.connector", f"rules[{first}] manages {rule.name!r} on every connector already; name one connector in each"
        seen_names.setdefault(key, index)
        if rule.kind is RuleKind.CUSTOM and (rule.connector or "").lower() == ALL_AD:
            yield f"{here}.connector", f"a custom rule is written for one connector; \"{ALL_AD}\" is for stock and replacement rules"
        if rule.kind is RuleKind.STOCK:
            pass
        elif rule.precedence is None and rule.kind is RuleKind.REPLACEMENT:
            pass  # the copy takes back its original's precedence, per connector
        elif rule.precedence is None:
            yield f"{here}", f"a {rule.kind.value} rule needs a precedence"
        elif not 0 <= rule.precedence <= PRECEDENCE_MAX:
            yield f"{here}.precedence", f"precedence {rule.precedence} is out of range (0 to {PRECEDENCE_MAX})"
        elif rule.precedence in seen_precedences:
            other = seen_precedences[rule.precedence]
            yield f"{here}.precedence", f"precedence {rule.precedence} is taken twice (also rules[{other}]); precedence is unique across all rules"
        else:
            seen_precedences[rule.precedence] = index
        if rule.kind is RuleKind.CUSTOM:
            if not rule.source_object_type:
                yield f"{here}", "a custom rule needs source_object_type (user, inetOrgPerson, ...)"
            if rule.direction not in ("Inbound", "Outbound"):
                yield f"{here}.direction", f"must be one of Inbound, Outbound (got {rule.direction!r})"
        if rule.kind is not RuleKind.STOCK and not rule.flows:
            yield f"{here}", f"a {rule.kind.value} rule needs at least one [[rules.flows]]"
        destinations = set()
        for group_index, group in enumerate(rule.scope):
            for condition_index, condition in enumerate(group):
                if condition.operator.upper() not in SCOPE_OPERATORS:
                    yield f"{here}.scope[{group_index}][{condition_index}].operator", f"must be one of {', '.join(COMPARISON_OPERATORS)} (got {condition.operator!r})"
        for flow_index, flow in enumerate(rule.flows):
            where = f"{here}.flows[{flow_index}]"
            if not flow.destination.strip():
                yield f"{where}.destination", "must not be empty"
            if flow.destination in destinations:
                yield f"{where}.destination", f"{flow.destination} has two flows in this rule"
            destinations.add(flow.destination)
            if flow.flow_type is FlowType.DIRECT:
                if not flow.source:
                    yield where, "a Direct flow needs a source attribute"
                if flow.expression is not None:
                    yield f"{where}.expression", "a Direct flow takes a source, not an expression"
                if flow.sources:
                    yield f"{where}.sources", "a Direct flow takes one source: source = \"attr\""
            else:
                if not flow.expression:
                    yield where, f"a {flow.flow_type.value} flow needs an expression (the constant's value for Constant)"
                if flow.flow_type is FlowType.CONSTANT and (flow.sources or flow.source):
                    yield where, "a Constant flow takes its value as expression, not sources"
                if flow.source and flow.sources:
                    yield f"{where}.source", "give the attributes an Expression reads as sources = [...] only"
    yield from _check_licenses(parts.licenses, place_of)
    for section, spec in (("scope", parts.scope), ("purge", parts.purge)):
        if spec is None:
            continue
        for field_name in ("included", "excluded", "ous"):
            for index, dn in enumerate(getattr(spec, field_name, ())):
                if not is_container(dn):
                    yield f"{section}.{field_name}[{index}]", f"{dn!r} is not a distinguished name such as OU=Sales,DC=contoso,DC=com"
    if parts.scope is not None and not parts.scope.included:
        yield "scope.included", "an empty inclusion list takes every object out of sync"
    if parts.export is not None and parts.export.deletion_threshold is not None and parts.export.deletion_threshold < 1:
        yield "export.deletion_threshold", "must be at least 1"
    if parts.purge is not None:
        purge = parts.purge
        if not purge.users and not purge.ous:
            yield "purge", "names no users: give users = [...] or ous = [...]"
        for key in ("users", "acknowledge_loss"):
            for index, upn in enumerate(getattr(purge, key)):
                if not UPN.match(upn):
                    yield f"purge.{key}[{index}]", f"{upn!r} is not a valid user principal name (name@domain.tld)"
        if purge.max_count is not None and purge.max_count < 1:
            yield "purge.max_count", "must be at least 1"
        if not 0 < purge.max_percent <= 100:
            yield "purge.max_percent", "must be a percentage above 0 and at most 100"
    target = parts.target
    if target is None:
        return
    for name, spec in (("graph", target.graph), ("entra_connect", target.entra_connect)):
        if spec is not None and not 0 < spec.poll_seconds <= 3600:
            yield f"target.{name}.poll_seconds", "must be above 0 and at most 3600"
        for key in CREDENTIAL_VARIABLES:
            if spec is not None and hasattr(spec, key) and (problem := credential_variable_problem(key, getattr(spec, key))):
                yield f"target.{name}.{key}", problem
    if target.graph is not None:
        yield from _graph_problems(target.graph)
    if target.entra_connect is not None:
        yield from _winrm_problems(target.entra_connect)
    if target.kind is TargetKind.LAB and (target.graph or target.entra_connect):
        yield "target.kind", "a lab target takes no [target.graph] or [target.entra_connect]; set kind = \"remote\""
    if target.kind is TargetKind.REMOTE:
        if target.lab is not None:
            yield "target.lab", "only a lab target has a lab file"
        if target.allow_staging:
            yield "target.allow_staging", "a remote target says it in [target.entra_connect]"
        if target.graph is None:
            yield "target", "a remote target needs [target.graph]"
        if target.entra_connect is None:
            yield "target", "a remote target needs [target.entra_connect]"
    if parts.state is not None:
        yield from check_state(parts.state, target)


STORAGE_TOKEN_ENV = "SYNCPREP_STORAGE_TOKEN"
STORAGE_AUTHS = ("default", "environment", "managed-identity", "workload-identity", "azure-cli", "token-env")


def check_state(state, target):
    """``[state]``: the backend's own keys, and a backend the target can have."""
    from reconciler.desired import StateBackendKind

    backend = state.backend
    if backend is StateBackendKind.SERVER and target.kind is TargetKind.LAB:
        yield "state.backend", "an in-process lab has no server to keep the lock on: use \"local\" (or a remote target, e.g. 'syncprep lab serve')"
    blob_keys = {"account_url": state.account_url, "container": state.container}
    if backend is StateBackendKind.AZUREBLOB:
        for key, value in blob_keys.items():
            if not value:
                yield "state", f"backend \"azureblob\" needs {key}"
        if state.account_url and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", state.account_url):
            yield "state.account_url", f"{state.account_url!r} is not a URL (https://ACCOUNT.blob.core.windows.net)"
        if state.container and not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", state.container):
            yield "state.container", f"{state.container!r} is not a container name (3 to 63 lower-case letters, digits and single hyphens)"
        if state.auth not in STORAGE_AUTHS:
            yield "state.auth", f"{state.auth!r}: choose one of {', '.join(STORAGE_AUTHS)}"
        if problem := variable_name_problem(STORAGE_TOKEN_ENV, state.token_env):
            yield "state.token_env", problem
        if not 15 <= state.lease_seconds <= 60:
            yield "state.lease_seconds", "must be from 15 to 60 (Azure's lease lengths)"
    else:
        for key, value in blob_keys.items():
            if value:
                yield f"state.{key}", "only the azureblob backend takes it"


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _graph_problems(graph):
    if graph.auth not in GRAPH_AUTHS:
        yield "target.graph.auth", f"unknown auth {graph.auth!r}; choose one of {', '.join(GRAPH_AUTHS)}"
    if graph.token_cache is not None:
        if graph.token_cache not in TOKEN_CACHES:
            yield "target.graph.token_cache", f"must be one of {', '.join(TOKEN_CACHES)} (got {graph.token_cache!r})"
        elif graph.auth != "device-code":
            yield "target.graph.token_cache", "only device-code sign-in keeps tokens between commands; remove it or set auth = \"device-code\""


def _winrm_problems(winrm):
    if winrm.auth not in WINRM_AUTHS:
        yield "target.entra_connect.auth", f"unknown auth {winrm.auth!r}; choose one of {', '.join(WINRM_AUTHS)}"
    for key in ("negotiate_service", "negotiate_hostname_override"):
        value = getattr(winrm, key)
        if value is None:
            continue
        if winrm.auth not in SPN_AUTHS:
            yield f"target.entra_connect.{key}", f"applies only to auth = {', '.join(SPN_AUTHS)} (not {winrm.auth})"
        elif not _NAME.fullmatch(value):
            yield f"target.entra_connect.{key}", f"{value!r} is not a service or host name (letters, digits, '.', '-', '_')"
    if not 0 < winrm.connection_timeout_seconds <= 3600:
        yield "target.entra_connect.connection_timeout_seconds", "must be above 0 and at most 3600"
    if not 1 <= winrm.operation_timeout_seconds <= 3600:
        yield "target.entra_connect.operation_timeout_seconds", "must be at least 1 and at most 3600"
    if not 0 < winrm.script_timeout_seconds:
        yield "target.entra_connect.script_timeout_seconds", "must be above 0"


def _check_licenses(licenses, place_of):
    seen_labels, seen_users = {}, {}
    for index, spec in licenses:
        here = f"licenses[{index}]"
        label = spec.label.lower()
        if label in seen_labels:
            other = seen_labels[label]
            if spec.group is None and not spec.users_file:
                yield f"{here}.sku", f"{spec.sku} is already licensed by licenses[{other}]: list its users and OUs there"
            else:
                yield here, f"licenses[{other}] has the same SKU, group and wave ({spec.label}): merge them"
        seen_labels.setdefault(label, index)
        if not spec.users and not spec.ous and not spec.users_file:
            yield here, "names no users: give users = [...], ous = [...] or users_file = \"waves/....csv\""
        if spec.group is not None and not spec.group.strip():
            yield f"{here}.group", "must not be empty"
        if spec.users_column is not None and spec.users_file is None:
            yield f"{here}.users_column", "names the column of users_file, which is not set"
        for user_index, upn in enumerate(spec.users):
            if not UPN.match(upn):
                yield f"{here}.users[{user_index}]", f"{upn!r} is not a valid user principal name (name@domain.tld)"
        for ou_index, ou in enumerate(spec.ous):
            if not is_container(ou):
                yield f"{here}.ous[{ou_index}]", f"{ou!r} is not a distinguished name such as OU=Sales,DC=contoso,DC=com"
        # A user selected by two entries would be licensed twice (or with two SKUs): refused,
        # naming both places. Users selected by OU are checked at plan time (the tenant says who).
        named = [(f"{here}.users[{i}]", upn) for i, upn in enumerate(spec.users)]
        named += [(f"{here}.users_file", upn) for upn in spec.file_users]
        for key_path, upn in named:
            first = seen_users.get(upn.lower())
            if first is not None and first[0] != index:
                yield key_path, f"{upn} is selected by two [[licenses]] entries: here" + (f" ({spec.users_file})" if key_path.endswith(".users_file") else "") + f" and at {first[1]}"
            place = place_of(key_path) + (f" ({spec.users_file})" if key_path.endswith(".users_file") else "")
            seen_users.setdefault(upn.lower(), (index, place))


# ---------------------------------------------------------------------------- line index

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(key):
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", key)
    return [a or b or c for a, b, c in parts]


def key_lines(text):
    """Map key paths (``rules[1].flows[0].expression``) to 1-based line numbers.

    Understands tables, arrays of tables, dotted keys and multi-line strings and
    arrays; it only needs to be right for valid TOML, which tomli has checked.
    """
    lines = {}
    array_counts = {}
    table = ""
    in_string = None
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            is_array = header.group(1) == "[["
            resolved = ""
            parts = _split_key(header.group(2))
            for i, part in enumerate(parts):
                resolved = _join(resolved, part)
                if i < len(parts) - 1 and resolved in array_counts:
                    resolved = f"{resolved}[{array_counts[resolved]}]"
            if is_array:
                array_counts[resolved] = array_counts.get(resolved, -1) + 1
                # A new element: forget the counts of arrays nested in the previous one.
                for key in [k for k in array_counts if k.startswith(resolved + "[")]:
                    del array_counts[key]
                table = f"{resolved}[{array_counts[resolved]}]"
            else:
                table = resolved
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            full = table
            for part in _split_key(key.group(1)):
                full = _join(full, part)
            lines.setdefault(full, number)
            rest = line[key.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) == 1:
                    in_string = quote
            if in_string is None:
                depth = max(_bracket_balance(rest), 0)
    return lines


def _bracket_balance(fragment):
    # Strip strings so brackets inside them do not count.
    fragment = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'", "", fragment.split("#", 1)[0] if "\"" not in fragment else fragment)
    return fragment.count("[") + fragment.count("{") - fragment.count("]") - fragment.count("}")


def _line_for(lines, key_path):
    path = key_path
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return 1
