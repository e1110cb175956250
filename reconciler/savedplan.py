"""Saved plans: ``plan -out FILE``, ``show FILE``, ``apply FILE --desired DESIRED``.

A saved plan is the JSON plan plus what binds it to the world it was made in:

* ``desired_sha256``: SHA-256 of the desired-state file's bytes: the file is bound by
  content (``desired_path``, absolute, is for people only);
* ``desired_ref``: where to find that file in another checkout: ``{"base": "repository",
  "path": "desired-state/x.toml"}`` (relative to the git repository's root) or ``{"base":
  "plan", ...}`` (relative to the plan's own folder, when the file is in no repository).
  ``apply PLAN`` without ``--desired`` reads the file there, inside that root only, and
  refuses it unless its SHA-256 is the plan's;
* ``desired_files``: the SHA-256 of each other file the desired state reads (a wave's
  CSV file, by the path the desired state gives it), so a changed wave file is stale too;
* ``target_key``: the environment it was made for (required);
* ``created``: when it was made (UTC), so that an old plan is refused;
* ``fingerprints``: a short hash of every observed resource the plan depends on
  (the scheduler, each rule, each connector, each SKU, each user in scope, each
  licensing group named, the recycle bin);
* the scripts each server step will run, in the steps;
* ``checksum``: SHA-256 of everything else, so an edited file is refused;
* ``signature`` (optional): HMAC-SHA256 of everything else with a key held by the
  trusted job (``SYNCPREP_PLAN_SIGNING_KEY``); anyone can recompute a checksum, only
  the key holder a signature.

``apply FILE`` checks all of that before it reads anything else or connects
(:func:`load_verified`, :func:`bind`), then observes again and refuses a stale plan
("plan is stale"), naming what changed, before it changes anything. When nothing
changed, planning again gives the same steps and scripts (the planner is a pure
function), and those are what runs: exactly the reviewed plan.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
from pathlib import Path

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.plan import selection_for
from reconciler.serialize import plan_to_dict, unstructure

SAVED_FORMAT = "syncprep-plan"
MAX_SAVED_BYTES = 256 * 1024 * 1024
#: The environment variable holding the key plans are signed and checked with.
SIGNING_KEY_ENV = "SYNCPREP_PLAN_SIGNING_KEY"
MIN_KEY_LENGTH = 32
#: A plan older than this is refused unless apply is given another ``--max-plan-age``.
DEFAULT_MAX_AGE = dt.timedelta(hours=72)
#: The longest --max-plan-age accepted.
MAX_MAX_AGE = dt.timedelta(days=365)
#: Clocks differ a little between the machine that planned and the one that applies.
CLOCK_SKEW = dt.timedelta(minutes=5)


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
    for group in tenant.groups:
        prints[f"group/{group.name}"] = _digest([sorted(map(list, group.licenses)), sorted(group.members)])
    deleted = tenant.deleted_users
    prints["recycle-bin"] = "unknown" if deleted is None else _digest(sorted(u.upn.lower() for u in deleted))
    return prints


def desired_hash(data):
    """SHA-256 of a desired-state file's bytes: what binds a plan to the file it was made from."""
    return hashlib.sha256(data).hexdigest()


def make_saved(plan, desired, observed, scripts=None, target_key="", now=None, signing_key=None, plan_path=None):
    if not target_key:
        raise ReconcilerError("a saved plan needs the identity of its target")
    data = plan_to_dict(plan, scripts)
    data["format"] = SAVED_FORMAT
    # For people (show, the pull-request comment); apply is given the file and never reads this path.
    data["desired_path"] = str(Path(desired.source).resolve())
    reference = desired_reference(desired.source, plan_path)
    if reference is not None:
        data["desired_ref"] = reference
    data["target_key"] = target_key
    data["desired_sha256"] = desired.sha256
    data["desired_files"] = dict(desired.files)
    data["created"] = _iso(now or dt.datetime.now(dt.timezone.utc))
    data["fingerprints"] = fingerprints(observed, selection_for(desired, observed.server))
    data["checksum"] = _checksum(data)
    if signing_key:
        data["signature"] = _signature(data, signing_key)
    return data


def _iso(moment):
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(data, leave_out):
    return json.dumps({k: v for k, v in data.items() if k not in leave_out}, sort_keys=True, default=str).encode()


def _checksum(data):
    return hashlib.sha256(_canonical(data, ("checksum", "signature"))).hexdigest()


def _signature(data, key):
    return "hmac-sha256:" + hmac.new(key.encode(), _canonical(data, ("signature",)), hashlib.sha256).hexdigest()


def signing_key(environ=None):
    """The signing key from the environment, or None; a key too short to be one is an error."""
    environ = os.environ if environ is None else environ
    key = environ.get(SIGNING_KEY_ENV, "")
    if not key:
        return None
    if len(key) < MIN_KEY_LENGTH:
        raise ReconcilerError(f"{SIGNING_KEY_ENV} is shorter than {MIN_KEY_LENGTH} characters: use a random key (e.g. 'openssl rand -hex 32')")
    return key


def parse_age(text):
    """``90m``, ``72h``, ``7d`` (or plain hours) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhd]?)\s*", text or "")
    if not match:
        raise ReconcilerError(f"--max-plan-age {text!r}: give a duration such as 90m, 72h or 7d")
    unit = {"m": "minutes", "h": "hours", "d": "days", "": "hours"}[match.group(2)]
    try:
        age = dt.timedelta(**{unit: float(match.group(1))})
    except OverflowError:
        age = dt.timedelta.max
    if age > MAX_MAX_AGE:
        raise ReconcilerError(f"--max-plan-age {text!r}: at most {MAX_MAX_AGE.days} days; a reviewed plan older than that describes another world")
    return age


def write(data, path, inputs=None):
    """Atomically, 0600, never through a symlink nor over one of ``inputs`` (see :mod:`reconciler.files`)."""
    from reconciler.files import write_private

    write_private(path, json.dumps(data, separators=(",", ":")) + "\n", inputs)


def is_saved_plan(path):
    try:
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
    except OSError:
        return False
    return head.startswith(b"{")


def load(path):
    """The saved plan at ``path``, its checksum checked (``show``); see :func:`load_verified` for apply."""
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
        for key in ("desired_sha256", "fingerprints"):
            data[key]  # noqa: B018 - present, or the plan cannot be checked for staleness
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReconcilerError(f"{path}: not a saved plan this syncprep can read ({type(exc).__name__}: {exc})") from None
    return data


def load_verified(path, key=None, now=None, max_age=DEFAULT_MAX_AGE):
    """The saved plan for ``apply``: checksum, signature (when a key is configured), the
    target it names and its age, all checked before anything else is read or connected."""
    data = load(path)
    nothing = "; nothing was read or changed"
    if key is not None:
        given = data.get("signature")
        if not isinstance(given, str) or not given:
            raise ReconcilerError(f"{path}: the plan is not signed, and {SIGNING_KEY_ENV} is set: only signed plans are applied{nothing}")
        if not hmac.compare_digest(given, _signature(data, key)):
            raise ReconcilerError(f"{path}: the plan's signature does not match {SIGNING_KEY_ENV}: not made by the trusted job, or edited{nothing}")
    if not isinstance(data.get("target_key"), str) or not data["target_key"]:
        raise ReconcilerError(f"{path}: the plan names no target; make a new plan{nothing}")
    if not isinstance(data.get("desired_sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", data["desired_sha256"]):
        raise ReconcilerError(f"{path}: the plan names no desired-state file hash; make a new plan{nothing}")
    _check_age(path, data, now or dt.datetime.now(dt.timezone.utc), max_age)
    return data


def _check_age(path, data, now, max_age):
    try:
        created = dt.datetime.strptime(str(data.get("created")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ReconcilerError(f"{path}: the plan has no creation time (made by an older syncprep?); make a new plan; nothing was read or changed") from None
    age = now - created
    if age < -CLOCK_SKEW:
        raise ReconcilerError(f"{path}: the plan was made in the future ({data['created']}); check the clocks; nothing was read or changed")
    if age > max_age:
        raise StalePlan(
            f"{path}: the plan is {_hours(age)} old, over the maximum of {_hours(max_age)} (--max-plan-age); make a new plan; nothing was read or changed"
        )


def _hours(delta):
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{delta.total_seconds() / 60:.0f} min"


def bind(data, desired, planfile):
    """The desired-state file the operator gave must be the one the plan was made from, by
    content, and so must each wave file it reads."""
    if desired.sha256 != data["desired_sha256"]:
        raise StalePlan(
            f"{planfile}: the plan was not made from {desired.source} as it is now (its SHA-256 differs); "
            "plan again from this file; nothing was changed"
        )
    changed = _changed_files(data, desired)
    if changed:
        raise StalePlan(
            f"{planfile}: the plan was not made from the wave file(s) {', '.join(changed)} as they are now (SHA-256 differs); "
            "plan again; nothing was changed"
        )


def _changed_files(data, desired):
    """The files the desired state reads whose content is not what the plan was made from."""
    before = data.get("desired_files") or {}
    now = dict(desired.files)
    return sorted(name for name in set(before) | set(now) if before.get(name) != now.get(name))


def check_fresh(data, desired, observed, target_key):
    """Raise :class:`StalePlan` naming what changed since the plan was made."""
    if data.get("target_key") != target_key:
        raise StalePlan(f"this plan was made for {data.get('target')}, not for this target; nothing was changed")
    if desired.sha256 != data["desired_sha256"]:
        raise StalePlan(f"plan is stale: the desired-state file {desired.source} changed since the plan was made; nothing was changed")
    if _changed_files(data, desired):
        raise StalePlan(f"plan is stale: the wave file(s) {', '.join(_changed_files(data, desired))} changed since the plan was made; nothing was changed")
    now = fingerprints(observed, selection_for(desired, observed.server))
    before = data["fingerprints"]
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise StalePlan(f"plan is stale: changed since the plan was made: {shown}; nothing was changed; make a new plan")


def repository_root(start):
    """The nearest folder at or above ``start`` holding ``.git`` (a folder, or a worktree's file), or None."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return None


def desired_reference(source, plan_path):
    """How another checkout finds the desired-state file: relative to the repository's root,
    else to the plan's folder; None when neither holds it."""
    path = Path(source).resolve()
    root = repository_root(path.parent)
    if root is not None:
        return {"base": "repository", "path": path.relative_to(root).as_posix()}
    if plan_path is not None:
        folder = Path(plan_path).resolve().parent
        if path.is_relative_to(folder):
            return {"base": "plan", "path": path.relative_to(folder).as_posix()}
    return None


def locate_desired(data, planfile, cwd=None):
    """The desired-state file of this checkout that the plan names (see ``desired_ref``):
    under the repository root of ``cwd`` (or beside the plan), never outside it. None when
    the plan names none or there is no repository here; the caller binds it by content."""
    reference = data.get("desired_ref")
    if not isinstance(reference, dict) or not isinstance(reference.get("path"), str):
        return None
    base = {"repository": lambda: repository_root(cwd or Path.cwd()), "plan": lambda: Path(planfile).resolve().parent}.get(reference.get("base"))
    root = base() if base is not None else None
    if root is None:
        return None
    relative = Path(reference["path"])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ReconcilerError(f"{planfile}: the plan's desired-state path {reference['path']!r} leaves its {reference.get('base')} folder; nothing was read or changed")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise ReconcilerError(f"{planfile}: the plan's desired-state path {reference['path']!r} leads outside {root} (a link?); nothing was read or changed")
    return candidate
