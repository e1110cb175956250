"""Saved plans: ``plan -out FILE``, ``show FILE``, ``apply FILE``.

A saved plan is the JSON plan plus what binds it to the world it was made in:

* ``desired_sha256`` of the desired-state file, and its path;
* ``fingerprints``: a short hash of every observed resource the plan depends on
  (the scheduler, each rule, each connector, each SKU, each user in scope, the
  recycle bin);
* ``checksum``: SHA-256 of everything else, so an edited file is refused.

``apply FILE`` observes again and refuses a stale plan ("plan is stale"),
naming what changed, before it changes anything. When nothing changed, planning
again gives the same steps (the planner is a pure function), and those are what
runs: exactly the reviewed plan.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.plan import selection_for
from reconciler.serialize import plan_to_dict, unstructure

SAVED_FORMAT = "syncprep-plan"
MAX_SAVED_BYTES = 256 * 1024 * 1024


class StalePlan(ReconcilerError):
    """The world or the desired state moved since the plan was made."""


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()[:16]


def fingerprints(observed, selection):
    """One short hash per observed resource; the keys name the resources for people."""
    server, tenant = observed.server, observed.tenant
    prints = {"scheduler": _digest(unstructure(server.scheduler)), "deletion-threshold": _digest(server.deletion_threshold)}
    for rule in server.rules:
        prints[f"rule/{rule.name} [{rule.identifier}]"] = _digest(unstructure(rule))
    for connector in server.connectors:
        prints[f"connector/{connector.name}"] = _digest(unstructure(connector))
    for sku in tenant.skus:
        prints[f"sku/{sku.part_number}"] = _digest([sku.prepaid, sku.consumed])
    for user in tenant.users:
        if selection.matches(user):
            prints[f"user/{user.upn.lower()}"] = _digest(
                [user.synced, user.on_prem_dn, user.usage_location, sorted([a.sku_id, a.by_group] for a in user.licenses), user.mailbox.value]
            )
    deleted = tenant.deleted_users
    prints["recycle-bin"] = "unknown" if deleted is None else _digest(sorted(u.upn.lower() for u in deleted))
    return prints


def _desired_hash(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_saved(plan, desired, observed, scripts=None, target_key=""):
    data = plan_to_dict(plan, scripts)
    data["format"] = SAVED_FORMAT
    # Absolute, so the plan applies from any working directory; the target it was made
    # for, so it cannot be applied to another environment that merely looks the same.
    data["desired_path"] = str(Path(desired.source).resolve())
    data["target_key"] = target_key
    data["desired_sha256"] = _desired_hash(desired.source)
    data["fingerprints"] = fingerprints(observed, selection_for(desired, observed.server))
    data["checksum"] = _checksum(data)
    return data


def _checksum(data):
    return hashlib.sha256(json.dumps({k: v for k, v in data.items() if k != "checksum"}, sort_keys=True, default=str).encode()).hexdigest()


def write(data, path):
    Path(path).write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def is_saved_plan(path):
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def load(path):
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot read the saved plan: {exc.strerror}") from None
    if len(raw) > MAX_SAVED_BYTES:
        raise ReconcilerError(f"{path}: too large for a saved plan")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReconcilerError(f"{path}: not a saved plan: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SAVED_FORMAT:
        raise ReconcilerError(f"{path}: not a syncprep saved plan")
    if str(data.get("format_version", "")).split(".")[0] != "1":
        raise ReconcilerError(f"{path}: plan format {data.get('format_version')!r} is not one this syncprep ({__version__}) reads")
    if data.get("checksum") != _checksum(data):
        raise ReconcilerError(f"{path}: the saved plan was modified after it was written (checksum mismatch); make a new plan")
    from reconciler.serialize import plan_from_dict

    try:
        plan_from_dict(data)
        for key in ("desired_path", "desired_sha256", "fingerprints"):
            data[key]  # noqa: B018 - present, or the plan cannot be checked for staleness
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReconcilerError(f"{path}: not a saved plan this syncprep can read ({type(exc).__name__}: {exc})") from None
    return data


def check_fresh(data, desired, observed, target_key=""):
    """Raise :class:`StalePlan` naming what changed since the plan was made."""
    if data.get("target_key", target_key) != target_key:
        raise StalePlan(f"this plan was made for {data.get('target')}, not for this target; nothing was changed")
    if _desired_hash(desired.source) != data["desired_sha256"]:
        raise StalePlan(f"plan is stale: the desired-state file {desired.source} changed since the plan was made; nothing was changed")
    now = fingerprints(observed, selection_for(desired, observed.server))
    before = data["fingerprints"]
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise StalePlan(f"plan is stale: changed since the plan was made: {shown}; nothing was changed; make a new plan")
