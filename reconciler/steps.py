"""The values a plan is made of: steps, notices, the flow report and the plan itself.

All frozen; :mod:`reconciler.serialize` turns them into the versioned JSON.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

from attrs import field

from reconciler.classes import frozen


PLAN_FORMAT_VERSION = "1.0"


class Action(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    RUN = "run"
    CHECK = "check"


class Impact(enum.Enum):
    #: Can be undone by another plan.
    REVERSIBLE = "reversible"
    #: Needs a full (Initial) sync cycle: long, and felt by every synced object.
    COSTLY = "costly"
    #: Cannot be undone (a hard delete).
    IRREVERSIBLE = "irreversible"


class Level(enum.Enum):
    INFO = "info"
    WARNING = "warning"


@frozen
class Notice:
    level: Level
    code: str
    #: The whole text; a list of users in it is never shortened (``--json``, reports).
    message: str
    #: The users the message names, when it names some: a renderer may shorten them.
    users: tuple[str, ...] = ()

    def short(self, limit=10):
        """The message with its list of users shortened to ``limit`` names."""
        listed = ", ".join(self.users)
        if len(self.users) <= limit or not self.message.endswith(listed):
            return self.message
        return self.message[: len(self.message) - len(listed)] + name_list(self.users, limit)


@frozen
class FieldChange:
    path: str
    before: Any
    after: Any


@frozen
class Step:
    """One thing apply will do, through one provider, to one resource.

    ``decided_after_sync`` marks a step whose exact content is decided during
    apply from a fresh observation taken after the sync (what the plan shows is
    the prediction).
    """

    id: str
    provider: str
    resource: str
    action: Action
    summary: str
    operation: Any
    impact: Impact = Impact.REVERSIBLE
    before: Optional[dict] = None
    after: Optional[dict] = None
    depends_on: tuple[str, ...] = ()
    decided_after_sync: bool = False
    #: An approval apply needs beyond the plan's own: "irreversible" or "threshold-raise".
    approval: Optional[str] = None
    changes: tuple[FieldChange, ...] = field(default=None)

    def __attrs_post_init__(self):
        if self.changes is None:
            object.__setattr__(self, "changes", field_changes(self.before, self.after))


@frozen
class GuidFlow:
    """Who decides msExchMailboxGuid for existing objects of one AD object type."""

    object_type: str
    now: str
    after: str
    flows_now: bool
    flows_after: bool
    #: The AD connector (its name) whose rules these are, where the server has several; "" when one.
    connector: str = ""

    @classmethod
    def between(cls, object_type, now, after, connector=""):
        """From two :func:`~reconciler.rules.guid_flow` answers, ``(text, flows)`` each."""
        return cls(object_type, now[0], after[0], now[1], after[1], connector)

    @property
    def label(self):
        """The object type, with its connector where there are several ("user (fabrikam.com)")."""
        return f"{self.object_type} ({self.connector})" if self.connector else self.object_type


@frozen
class Plan:
    source: str
    target: str
    steps: tuple[Step, ...]
    notices: tuple[Notice, ...] = ()
    guid_flows: tuple[GuidFlow, ...] = ()
    #: Reasons apply refuses without --force (octoDNS's "too many deletes").
    unsafe: tuple[str, ...] = ()
    #: (upn, why) of users the [purge] selection names that the plan leaves alone.
    purge_kept: tuple[tuple[str, str], ...] = ()
    #: (upn, what is lost) of acknowledged users whose purge destroys a mailbox or gains nothing.
    purge_losses: tuple[tuple[str, str], ...] = ()
    #: One :class:`~reconciler.outcome.UserOutcome` per user and licence set: what the plan predicts.
    outcomes: tuple = ()

    @property
    def approvals_needed(self):
        return tuple(dict.fromkeys(s.approval for s in self.steps if s.approval))

    @property
    def has_changes(self):
        return bool(self.steps)

    def counts(self):
        counts = {action.value: 0 for action in Action}
        for step in self.steps:
            counts[step.action.value] += 1
        counts["costly"] = sum(1 for s in self.steps if s.impact is Impact.COSTLY)
        counts["irreversible"] = sum(1 for s in self.steps if s.impact is Impact.IRREVERSIBLE)
        counts["kept_from_purge"] = len(self.purge_kept)
        return counts


def server_step(**fields):
    return Step(provider="entra-connect", **fields)


def field_changes(before, after):
    """Field-level differences between two JSON-able views, as deepdiff reports them.

    Plain trees (dicts with plain string keys, ``None``, ``bool``, ``int``, ``str``,
    lists that did not change) are compared here, which spares the usual plan the
    import of deepdiff (about 75 ms); anything else, such as a list that changed
    (deepdiff aligns lists with difflib), is left to deepdiff, so the answer is
    the same either way (tests/test_plan.py compares the two).
    """
    if before is None or after is None or before == after:
        return ()
    changes = []
    if not _plain_diff("", before, after, changes):
        return _deepdiff_changes(before, after)
    return tuple(sorted(changes, key=lambda c: c.path))


_PLAIN_SCALARS = (type(None), bool, int, str)


def _plain_diff(path, before, after, changes):
    """Appends the changes between two plain trees; False if they are not plain."""
    kind = type(before)
    if kind is not type(after):
        if not (_is_plain(before) and _is_plain(after)):
            return False
        changes.append(FieldChange(path, before, after))  # deepdiff's type_changes
        return True
    if kind is dict:
        keys = before.keys() | after.keys()
        if not all(map(_plain_key, keys)):
            return False
        if len(keys) > 1 and len(before.keys() & after.keys()) / len(keys) < 0.33:
            # deepdiff's threshold_to_diff_deeper: too few keys shared, the whole value changed.
            changes.append(FieldChange(path, before, after))
            return True
        for key in keys:
            inner = path + ("." if path else "") + key
            if key not in after:
                changes.append(FieldChange(inner, before[key], None))
            elif key not in before:
                changes.append(FieldChange(inner, None, after[key]))
            elif not _plain_diff(inner, before[key], after[key], changes):
                return False
        return True
    if kind is list:
        return _identical(before, after)
    if kind in _PLAIN_SCALARS:
        if before != after:
            changes.append(FieldChange(path, before, after))  # deepdiff's values_changed
        return True
    return False


def _identical(before, after):
    """Equal, and of the same types all the way down (where 1 == True, deepdiff sees a change)."""
    kind = type(before)
    if kind is not type(after):
        return False
    if kind is list:
        return len(before) == len(after) and all(map(_identical, before, after))
    if kind is dict:
        return before.keys() == after.keys() and all(_identical(before[k], after[k]) for k in before)
    return kind in _PLAIN_SCALARS and before == after


def _is_plain(value):
    kind = type(value)
    if kind is list:
        return all(map(_is_plain, value))
    if kind is dict:
        return all(_plain_key(k) and _is_plain(v) for k, v in value.items())
    return kind in _PLAIN_SCALARS


def _plain_key(key):
    # deepdiff quotes keys with quotes its own way; _dd_path splits on brackets and joins with dots.
    return type(key) is str and key != "" and not any(c in key for c in "'\"[].\\")


def _deepdiff_changes(before, after):
    from deepdiff import DeepDiff

    diff = DeepDiff(before, after, verbose_level=2)
    changes = []
    for kind in ("values_changed", "type_changes"):
        for path, change in diff.get(kind, {}).items():
            changes.append(FieldChange(_dd_path(path), change.get("old_value"), change.get("new_value")))
    for path, value in diff.get("dictionary_item_added", {}).items():
        changes.append(FieldChange(_dd_path(path), None, value))
    for path, value in diff.get("dictionary_item_removed", {}).items():
        changes.append(FieldChange(_dd_path(path), value, None))
    for kind, is_add in (("iterable_item_added", True), ("iterable_item_removed", False)):
        for path, value in diff.get(kind, {}).items():
            changes.append(FieldChange(_dd_path(path), None if is_add else value, value if is_add else None))
    return tuple(sorted(changes, key=lambda c: c.path))


def _dd_path(path):
    # root['flows']['msExchMailboxGuid'] -> flows.msExchMailboxGuid
    text = ""
    for chunk in path[len("root"):].strip("[]").split("]["):
        if chunk.isdigit():
            text += f"[{chunk}]"
        elif chunk:
            text += ("." if text else "") + chunk.strip("'\"")
    return text


def rule_view(rule):
    """What a plan shows of a rule: the fields the desired state can manage."""
    if rule is None:
        return None
    return {
        "name": rule.name,
        "precedence": rule.precedence,
        "enabled": not rule.disabled,
        "standard": rule.is_standard,
        "object_types": f"{rule.source_object_type} -> {rule.target_object_type}",
        "flows": {f.destination: f.describe() for f in rule.flows},
    }


def name_list(upns, limit=10):
    upns = list(upns)
    shown = ", ".join(upns[:limit])
    return shown + (f" and {len(upns) - limit} more" if len(upns) > limit else "")
