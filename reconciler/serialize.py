"""JSON views of plans and observed state (``plan --json``, saved plans, ``lab show --json``)."""

from __future__ import annotations

import enum
import hashlib
import json
import weakref

import cattrs

from reconciler import __version__, operations
from reconciler.steps import PLAN_FORMAT_VERSION, Action, FieldChange, GuidFlow, Impact, Level, Notice, Plan, Step

_converter = cattrs.Converter()
_converter.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value)


def unstructure(value):
    return _converter.unstructure(value)


def operation_to_dict(operation):
    return {"type": type(operation).__name__, **_converter.unstructure(operation)}


def plan_to_dict(plan, scripts=None):
    """The plan as versioned JSON. ``scripts`` maps step ids to the text a provider will run."""
    scripts = scripts or {}
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "tool_version": __version__,
        "source": plan.source,
        "target": plan.target,
        "has_changes": plan.has_changes,
        "counts": plan.counts(),
        "guid_flows": [unstructure(g) for g in plan.guid_flows],
        "steps": steps_to_dicts(plan.steps, scripts),
        "notices": [{"level": n.level.value, "code": n.code, "message": n.message, **({"users": list(n.users)} if n.users else {})} for n in plan.notices],
        "outcomes": [o.to_dict() for o in plan.outcomes],
        "unsafe": list(plan.unsafe),
        "approvals_needed": list(plan.approvals_needed),
        "purge_kept": [{"user": upn, "why": why} for upn, why in plan.purge_kept],
        "purge_losses": [{"user": upn, "why": why} for upn, why in plan.purge_losses],
    }


def steps_to_dicts(steps, scripts=None):
    """The plan's steps as :func:`plan_to_dict` writes them."""
    scripts = scripts or {}
    return [
        {
            "id": s.id,
            "provider": s.provider,
            "resource": s.resource,
            "action": s.action.value,
            "impact": s.impact.value,
            "summary": s.summary,
            "depends_on": list(s.depends_on),
            "decided_after_sync": s.decided_after_sync,
            "approval": s.approval,
            "before": s.before,
            "after": s.after,
            "changes": [{"path": c.path, "before": c.before, "after": c.after} for c in s.changes],
            "operation": operation_to_dict(s.operation),
            **({"script": scripts[s.id]} if s.id in scripts else {}),
        }
        for s in steps
    ]


def plan_from_dict(data):
    """A :class:`~reconciler.plan.Plan` back from :func:`plan_to_dict` (for ``show``)."""
    steps = []
    for item in data["steps"]:
        operation = dict(item["operation"])
        cls = getattr(operations, operation.pop("type"))
        steps.append(
            Step(
                id=item["id"],
                provider=item["provider"],
                resource=item["resource"],
                action=Action(item["action"]),
                summary=item["summary"],
                operation=_converter.structure(operation, cls),
                impact=Impact(item["impact"]),
                before=item["before"],
                after=item["after"],
                depends_on=tuple(item["depends_on"]),
                decided_after_sync=item["decided_after_sync"],
                approval=item.get("approval"),
                changes=tuple(FieldChange(c["path"], c["before"], c["after"]) for c in item["changes"]),
            )
        )
    return Plan(
        source=data["source"],
        target=data["target"],
        steps=tuple(steps),
        notices=tuple(Notice(Level(n["level"]), n["code"], n["message"], tuple(n.get("users", ()))) for n in data["notices"]),
        guid_flows=tuple(_converter.structure(g, GuidFlow) for g in data["guid_flows"]),
        unsafe=tuple(data.get("unsafe", ())),
        purge_kept=tuple((k["user"], k["why"]) for k in data.get("purge_kept", ())),
        purge_losses=tuple((k["user"], k["why"]) for k in data.get("purge_losses", ())),
    )


def plan_checksum(plan):
    """SHA-256 of the plan's steps as JSON: what the journal records a run against.

    Remembered for the last plan asked about (apply asks twice; at 100,000 users the steps
    name every user)."""
    last = _last_checksum
    if last and last[0]() is plan:
        return last[1]
    data = json.dumps(steps_to_dicts(plan.steps), sort_keys=True, default=str).encode()
    checksum = hashlib.sha256(data).hexdigest()
    _last_checksum[:] = [weakref.ref(plan), checksum]
    return checksum


_last_checksum = []  # [weak reference to a plan, its checksum]
