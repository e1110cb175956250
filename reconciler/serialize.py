"""JSON views of plans and observed state (``plan --json``, saved plans, ``lab show --json``)."""

from __future__ import annotations

import enum

import cattrs

from reconciler import __version__

_converter = cattrs.Converter()
_converter.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value)


def unstructure(value):
    return _converter.unstructure(value)


def operation_to_dict(operation):
    return {"type": type(operation).__name__, **_converter.unstructure(operation)}


def plan_to_dict(plan, scripts=None):
    """The plan as versioned JSON. ``scripts`` maps step ids to the text a provider will run."""
    from reconciler.plan import PLAN_FORMAT_VERSION

    scripts = scripts or {}
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "tool_version": __version__,
        "source": plan.source,
        "target": plan.target,
        "has_changes": plan.has_changes,
        "counts": plan.counts(),
        "guid_flows": [unstructure(g) for g in plan.guid_flows],
        "steps": [
            {
                "id": s.id,
                "provider": s.provider,
                "resource": s.resource,
                "action": s.action.value,
                "impact": s.impact.value,
                "summary": s.summary,
                "depends_on": list(s.depends_on),
                "decided_after_sync": s.decided_after_sync,
                "before": s.before,
                "after": s.after,
                "changes": [{"path": c.path, "before": c.before, "after": c.after} for c in s.changes],
                "operation": operation_to_dict(s.operation),
                **({"script": scripts[s.id]} if s.id in scripts else {}),
            }
            for s in plan.steps
        ],
        "notices": [{"level": n.level.value, "code": n.code, "message": n.message} for n in plan.notices],
    }
