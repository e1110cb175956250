"""A plan as a pull-request comment (``syncprep show FILE --markdown``).

:func:`render_markdown` reads the JSON plan (:func:`reconciler.serialize.plan_to_dict`,
or a saved plan with extra keys, which are ignored) and returns GitHub-flavoured
Markdown. It never prints. The comment is laid out for a reviewer:

1. a hidden marker line, :data:`MARKER`, first: a CI job finds its own comment
   by it and edits that one instead of posting a new comment per push;
2. the summary: counts per action, costly and irreversible steps;
3. a banner when steps are irreversible (how many users are purged) or the plan
   is over the safety thresholds;
4. the steps in order, each in its own ``<details>`` section with its diff, its
   users and the PowerShell it runs;
5. which rule decides ``msExchMailboxGuid`` now and after, per object type;
6. the notices, warnings first.

The result always fits in ``limit`` characters (GitHub refuses comments over
65,536). A plan that does not fit is shortened in this order, and says so:
scripts left out, user lists cut (irreversible steps' lists last: a reviewer
approves names, not a count), then one line per step, then steps and notices
left out, pointing to ``plan_file`` for the whole plan.

Everything that comes from a server, a tenant or a desired-state file (rule
names, UPNs, expressions, messages) is escaped for the context it lands in,
so a hostile rule name cannot close a ``<details>``, inject HTML, start a
table cell or ping a team.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import json
import re

#: The first line of every comment: how a CI job recognises the comment it owns.
MARKER = "<!-- syncprep:plan -->"
#: GitHub's limit for an issue or pull-request comment.
GITHUB_COMMENT_LIMIT = 65536

_ACTIONS = ("create", "update", "delete", "run", "check")
_SYMBOLS = {"create": "+", "update": "~", "delete": "-", "run": ">", "check": "="}
#: Users listed per step once lists have to be cut.
_USERS_WHEN_CUT = 20
#: Longest user-controlled text kept in the one-line-per-step form.
_TEXT_WHEN_TIGHT = 300

# The shape the loader accepts for a UPN (reconciler.loader.UPN), found anywhere in a text.
_UPN = re.compile(
    r"[^@\s\"'<>(),;:\\\[\]`|*]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


# A key of this process: a bare hash of a UPN could be reversed by guessing first.last@domain
# names; keyed, the same user still gets the same name within one rendering.
_PSEUDONYM_KEY = os.urandom(16)


def pseudonym(upn):
    """The stand-in for a UPN when users are masked: the same user, the same name (per run)."""
    return "user-" + hmac.new(_PSEUDONYM_KEY, upn.lower().encode("utf-8"), hashlib.sha256).hexdigest()[:8]


def mask_text(text):
    """``text`` with every UPN in it replaced by its :func:`pseudonym`."""
    return _UPN.sub(lambda m: pseudonym(m.group(0)), text)


def _mask(value):
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {_mask(k) if isinstance(k, str) else k: _mask(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------- escaping

# Characters that mean something to Markdown or HTML, as numeric references: they
# read the same once rendered, in running text, in table cells and inside HTML tags.
_ENTITIES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\\": "&#92;",
    "`": "&#96;",
    "*": "&#42;",
    "_": "&#95;",
    "[": "&#91;",
    "]": "&#93;",
    "|": "&#124;",
    "~": "&#126;",
}
_ESCAPE = re.compile("[" + re.escape("".join(_ENTITIES)) + "]")
# GitHub pings @name and @org/team when the @ follows no word character; a UPN's @ does.
_MENTION = re.compile(r"(?<![\w.+-])@")
# GitHub shows :name: as an emoji wherever it is text once rendered (a numeric reference of the
# colon is decoded first, so it does not help), except in code: a zero-width space after the
# first colon breaks it. Emoji names are letters, digits, _, + and - (digits alone: 100, 1234,
# +1 and -1); a time such as 23:00:15 is left alone.
_SHORTCODE = re.compile(r":(?=(?:[\w+-]*[A-Za-z][\w+-]*|100|1234|[+-]1):)")
_ZWSP = "\u200b"


def esc(text, shortcodes=True):
    """``text`` made inert for Markdown and HTML, on one line. ``shortcodes=False`` inside
    ``<code>``, where GitHub shows no emoji."""
    text = " ".join(str(text).split())  # newlines would end an HTML block or a list item
    if shortcodes:
        text = _SHORTCODE.sub(":" + _ZWSP, text)
    text = _ESCAPE.sub(lambda m: _ENTITIES[m.group(0)], text)
    text = _MENTION.sub("@&#8203;", text).replace(_ZWSP, "&#8203;")
    # Leading "-", "+" or "1." would start a list, "#" a heading, "=" a heading underline.
    return re.sub(r"^([-+=#]|\d+(?=[.)](?:\s|$)))", lambda m: "".join(f"&#{ord(c)};" for c in m.group(1)), text)


def _code(text):
    return f"<code>{esc(text, shortcodes=False)}</code>"


def _fence(body, info=""):
    """A fenced block whose fence no backtick run inside ``body`` can close."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


# ---------------------------------------------------------------------------- values


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    text = str(value)
    # One diff line per value: control characters as JSON escapes.
    return json.dumps(text, ensure_ascii=False)[1:-1] if any(ord(c) < 32 for c in text) else text


def _flatten(view, prefix=""):
    for key, value in (view or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def _diff_lines(step):
    action = step.get("action")
    if action == "create" and step.get("after"):
        return [f"+ {path}: {_value(v)}" for path, v in _flatten(step["after"])]
    if action == "delete" and step.get("before"):
        return [f"- {path}: {_value(v)}" for path, v in _flatten(step["before"])]
    lines = []
    for change in step.get("changes") or ():
        if change.get("before") is not None:
            lines.append(f"- {change.get('path')}: {_value(change['before'])}")
        if change.get("after") is not None:
            lines.append(f"+ {change.get('path')}: {_value(change['after'])}")
    return lines


def _users(step):
    operation = step.get("operation") or {}
    users = operation.get("users")
    if not isinstance(users, list):
        return []
    return [u.get("upn", "?") if isinstance(u, dict) else str(u) for u in users]


def _counts(plan):
    counts = plan.get("counts")
    if isinstance(counts, dict):
        return counts
    steps = plan.get("steps") or []
    counts = {a: sum(1 for s in steps if s.get("action") == a) for a in _ACTIONS}
    counts["costly"] = sum(1 for s in steps if s.get("impact") == "costly")
    counts["irreversible"] = sum(1 for s in steps if s.get("impact") == "irreversible")
    return counts


# ---------------------------------------------------------------------------- the comment


class _Options:
    """How much detail one rendering attempt keeps."""

    def __init__(self, scripts=True, users=None, irreversible_users=None, one_line=False, max_steps=None, max_notices=None, text=None, guid=True):
        self.guid = guid
        self.scripts = scripts
        self.users = users  # None: all
        self.irreversible_users = irreversible_users
        self.one_line = one_line
        self.max_steps = max_steps
        self.max_notices = max_notices
        self.text = text  # cap on user-controlled strings, None: none


def _short(text, options):
    text = str(text)
    if options.text is not None and len(text) > options.text:
        return text[: options.text] + "…"
    return text


def _header(plan, options):
    source = _short(plan.get("source") or "?", options)
    target = _short(plan.get("target") or "?", options)
    return [MARKER, f"## syncprep plan for {_code(source)}", "", f"Target: {esc(target)}"]


def _summary(plan):
    counts = _counts(plan)
    total = len(plan.get("steps") or [])
    lines = [
        "### Summary",
        "",
        f"**{total} step(s)**: " + ", ".join(f"{counts.get(a, 0)} to {a}" for a in _ACTIONS) + ".",
        "",
        "| create | update | delete | run | check | costly | irreversible |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join(str(counts.get(k, 0)) for k in (*_ACTIONS, "costly", "irreversible")) + " |",
    ]
    return lines


def _banners(plan, options):
    lines = []
    irreversible = [s for s in plan.get("steps") or [] if s.get("impact") == "irreversible"]
    if irreversible:
        purged = sum(len(_users(s)) for s in irreversible)
        which = ", ".join(_code(_short(s.get("id", "?"), options)) for s in irreversible)
        lines += [
            "",
            "> [!CAUTION]",
            f"> **IRREVERSIBLE: this plan permanently deletes {purged} user(s)** ({which}). "
            "It cannot be undone; apply needs `--approve-irreversible`.",
        ]
        lines += [f"> - lost: {esc(_short(k.get('user'), options))}: {esc(k.get('why', ''))}" for k in plan.get("purge_losses") or []]
    kept = plan.get("purge_kept") or []
    if kept:
        lines += ["", f"**{len(kept)} user(s) kept out of the purge** (see the notices)."]
    unsafe = plan.get("unsafe") or []
    if unsafe:
        lines += ["", "> [!WARNING]", "> **Over the safety thresholds**: apply needs `--force`."]
        lines += [f"> - {esc(_short(reason, options))}" for reason in unsafe]
    approvals = [a for a in plan.get("approvals_needed") or [] if a != "irreversible"]
    if approvals:
        lines += ["", "Approvals needed: " + ", ".join(f"`--approve-{esc(a)}`" for a in approvals) + "."]
    return lines


def _tags(step):
    tags = []
    if step.get("impact") == "costly":
        tags.append("costly: full sync")
    if step.get("impact") == "irreversible":
        tags.append("<b>IRREVERSIBLE</b>")
    if step.get("decided_after_sync"):
        tags.append("decided after the sync")
    if step.get("approval") and step.get("approval") != "irreversible":
        tags.append(f"needs --approve-{esc(step['approval'])}")
    return f" <i>({'; '.join(tags)})</i>" if tags else ""


def _step_title(number, step, options):
    action = step.get("action", "?")
    return (
        f"<b>{number}.</b> {esc(_SYMBOLS.get(action, '?'))} {esc(action)} "
        f"{_code(_short(step.get('resource', '?'), options))}: {esc(_short(step.get('summary', ''), options))}{_tags(step)}"
    )


def _step_details(number, step, options):
    lines = [f"<details><summary>{_step_title(number, step, options)}</summary>", ""]
    meta = f"Step {_code(step.get('id', '?'))} through {esc(step.get('provider', '?'))}"
    depends = step.get("depends_on") or []
    if depends:
        meta += ", after " + ", ".join(_code(d) for d in depends)
    lines += [meta + ".", ""]
    diff = _diff_lines(step)
    if diff:
        lines += [_fence("\n".join(diff), "diff"), ""]
    users = _users(step)
    if users:
        if step.get("action") == "check":
            lines += [f"{len(users)} user(s), those of the step before.", ""]
        else:
            limit = options.irreversible_users if step.get("impact") == "irreversible" else options.users
            shown = users if limit is None else users[:limit]
            lines.append(f"Users ({len(users)}):")
            lines.append("")
            lines += [f"- {_code(u)}" for u in shown]
            if len(shown) < len(users):
                lines.append(f"- … and {len(users) - len(shown)} more")
            lines.append("")
    script = step.get("script")
    if script:
        if options.scripts:
            lines += [_fence(script.rstrip("\n"), "powershell"), ""]
        else:
            lines += ["_Script left out to fit the comment._", ""]
    lines += ["</details>", ""]
    return lines


def _steps(plan, options):
    steps = plan.get("steps") or []
    lines = ["", "### Steps, in order", ""]
    shown = steps if options.max_steps is None else steps[: options.max_steps]
    for number, step in enumerate(shown, start=1):
        if options.one_line:
            lines.append(f"{number}. {_step_title(number, step, options).split('</b> ', 1)[1]}")
        else:
            lines += _step_details(number, step, options)
    if len(shown) < len(steps):
        lines += ["", f"… and {len(steps) - len(shown)} more step(s)."]
    return lines


def _guid_flows(plan, options):
    flows = plan.get("guid_flows") or []
    if not flows or not options.guid:
        return []
    lines = ["", "### msExchMailboxGuid for existing objects", "", "| object type | now | after |", "|---|---|---|"]
    for flow in flows:
        after = esc(_short(flow.get("after", ""), options))
        if flow.get("flows_after"):
            after = "**still reaches the cloud:** " + after
        kind = flow.get("object_type", "?") + (f" ({flow['connector']})" if flow.get("connector") else "")
        lines.append(f"| {esc(kind)} | {esc(_short(flow.get('now', ''), options))} | {after} |")
    return lines


def _notices(plan, options):
    notices = plan.get("notices") or []
    if not notices:
        return []
    ordered = [n for n in notices if n.get("level") == "warning"] + [n for n in notices if n.get("level") != "warning"]
    shown = ordered if options.max_notices is None else ordered[: options.max_notices]
    lines = ["", "### Notices", ""]
    for notice in shown:
        label = "**Warning**" if notice.get("level") == "warning" else "Info"
        lines.append(f"- {label} ({esc(notice.get('code', ''))}): {esc(_short(notice.get('message', ''), options))}")
    if len(shown) < len(ordered):
        lines.append(f"- … and {len(ordered) - len(shown)} more notice(s)")
    return lines


def _shortened_note(plan_file, shortened):
    if not shortened:
        return []
    where = f" The whole plan is in {_code(plan_file)}." if plan_file else ""
    return ["", "> [!NOTE]", f"> Shortened to fit a comment: {', '.join(shortened)}.{where}"]


def _footer(plan, plan_file, shortened):
    lines = [""]
    if plan_file and not shortened:
        lines += [f"Plan file: {_code(plan_file)}", ""]
    facts = [f"syncprep {esc(plan.get('tool_version', '?'))}", f"plan format {esc(plan.get('format_version', '?'))}"]
    if plan.get("checksum"):
        facts.append(f"checksum {_code(str(plan['checksum'])[:12])}")
    lines.append("<sub>" + " · ".join(facts) + "</sub>")
    return lines


def _render(plan, options, plan_file, shortened):
    # Right under the title: a reviewer must know at once that this is not the whole plan.
    lines = _header(plan, options) + _shortened_note(plan_file, shortened)
    if not plan.get("steps"):
        lines += ["", "**No changes.** The environment matches the desired state."]
        lines += _notices(plan, options)
    else:
        lines += [""] + _summary(plan) + _banners(plan, options) + _steps(plan, options) + _guid_flows(plan, options) + _notices(plan, options)
    lines += _footer(plan, plan_file, shortened)
    return "\n".join(lines) + "\n"


def comment_length(text):
    """Length as GitHub counts it, to be safe: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def render_markdown(plan: dict, *, mask_users: bool = False, limit: int = GITHUB_COMMENT_LIMIT, plan_file: str | None = None) -> str:
    """The pull-request comment for a JSON plan, at most ``limit`` characters long.

    ``plan`` is :func:`reconciler.serialize.plan_to_dict`'s output or a saved plan
    (unknown keys are ignored). ``mask_users`` replaces every UPN, wherever it
    appears, by :func:`pseudonym`. ``plan_file`` is named when the comment had to be
    shortened, as the place to read the whole plan.
    """
    if mask_users:
        plan = _mask(plan)
        plan_file = mask_text(plan_file) if plan_file else plan_file
    steps = plan.get("steps") or []
    notices = plan.get("notices") or []
    # Each attempt keeps less than the one before; the first that fits wins.
    cut = ["scripts left out"] if any(s.get("script") for s in steps) else []
    attempts = [(_Options(), [])]
    if cut:
        attempts.append((_Options(scripts=False), cut))
    attempts.append((_Options(scripts=False, users=_USERS_WHEN_CUT), [*cut, "user lists cut"]))
    attempts.append((_Options(scripts=False, users=_USERS_WHEN_CUT, irreversible_users=_USERS_WHEN_CUT), [*cut, "user lists cut, also of irreversible steps"]))
    # From here on, one line per step; then notices, the GUID table and steps go, in that order.
    for max_steps, max_notices, guid in _budgets(len(steps), len(notices)):
        shortened = ["one line per step"]
        if max_notices < len(notices):
            shortened.append(f"{len(notices) - max_notices} of {len(notices)} notice(s) left out")
        if not guid and plan.get("guid_flows"):
            shortened.append("the msExchMailboxGuid table left out")
        if max_steps < len(steps):
            shortened.append(f"{len(steps) - max_steps} of {len(steps)} step(s) left out")
        options = _Options(one_line=True, text=_TEXT_WHEN_TIGHT, max_steps=max_steps, max_notices=max_notices, guid=guid)
        attempts.append((options, shortened))
    text = ""
    for options, shortened in attempts:
        text = _render(plan, options, plan_file, shortened)
        if comment_length(text) <= limit:
            return text
    # Only absurdly small limits get here: the summary and banners, cut at a line.
    return _hard_cut(text, limit)


def _budgets(steps, notices):
    """(max steps, max notices, GUID table) from generous to nothing."""
    yield steps, notices, True
    n = notices
    while n > 0:
        n //= 2
        yield steps, n, True
    yield steps, 0, False
    s = steps
    while s > 0:
        s = s * 3 // 4 if s > 4 else s - 1
        yield s, 0, False


def _hard_cut(text, limit):
    # Last resort for absurd limits: whole blocks (a banner is all or nothing), the marker first.
    kept = []
    for block in text.split("\n\n"):
        candidate = "\n\n".join([*kept, block]).rstrip("\n") + "\n"
        if comment_length(candidate) > limit:
            break
        kept.append(block)
    result = "\n\n".join(kept).rstrip("\n") + "\n" if kept else text[: text.rfind("\n", 0, limit) + 1] or text[:limit]
    while comment_length(result) > limit:
        result = result[:-1]
    return result


# ---------------------------------------------------------------------------- drift


def drift_markdown(report, mask_users=False):
    """A drift report for an issue (the nightly job), marker first so the job updates it.

    Every text from the environment is made inert (an ``@team`` in a rule's description
    pings nobody), and with ``mask_users`` every UPN is a pseudonym, as in a plan comment.
    """
    text = mask_text if mask_users else str
    lines = ["<!-- syncprep:drift -->", f"## syncprep drift: {_code(text(report.source))}", ""]
    if report.interrupted:
        lines += [f"> **warning:** {esc(text(report.interrupted))}", ""]
    if not report.items and not report.unknown:
        lines.append("In sync: nothing drifted.")
    for item in report.items:
        lines.append(f"- **{esc(text(item.what))}** {_code(text(item.resource))}: {esc(text(item.detail))}")
    for unknown in report.unknown:
        lines.append(f"- **unknown**: {esc(text(unknown))}")
    return "\n".join(lines) + "\n"
