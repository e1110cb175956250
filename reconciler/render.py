"""Rendering for people: plans, apply progress and reports, with rich.

Only this module and the :mod:`reconciler.cli` package write to the terminal. Colour follows
rich's rules: off when the output is not a terminal, when ``NO_COLOR`` is set, or
with ``--no-color``.
"""

from __future__ import annotations

import json

from rich.markup import escape

from reconciler.plan import Action, Impact, Level
from reconciler.errors import one_line

SYMBOLS = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.DELETE: ("-", "red"),
    Action.RUN: (">", "cyan"),
    Action.CHECK: ("=", "blue"),
}
MAX_USERS_SHOWN = 15


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    return str(value)


def _flatten(view, prefix=""):
    for key, value in (view or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, path + ".")
        else:
            yield path, value


class _Lines(list):
    """Lines of markup, printed by the console at once: one ``print`` per line parses and
    writes each line on its own, which was most of a small plan's rendering time (issue 19).
    Each line closes its own markup, so the output is the same."""

    def print(self, line=""):
        self.append(line)


class PlanRenderer:
    def __init__(self, console):
        self.console = console

    def render(self, plan, scripts=None):
        lines = _Lines()
        self._render(lines, plan, scripts)
        self.console.print("\n".join(lines))

    def _render(self, out, plan, scripts):
        out.print(f"[bold]Plan[/bold] for {escape(plan.source)} on {escape(plan.target)}")
        out.print()
        irreversible = [s for s in plan.steps if s.impact is Impact.IRREVERSIBLE]
        if irreversible:
            count = sum(len(getattr(s.operation, "users", ())) for s in irreversible)
            out.print(
                f"[bold white on red] IRREVERSIBLE [/bold white on red] [bold red]this plan permanently deletes {count} user(s); "
                f"apply needs --approve-irreversible[/bold red]"
            )
            for upn, why in plan.purge_losses:
                out.print(f"  [bold red]lost: {escape(upn)}: {escape(why)}[/bold red]")
            out.print()
        if plan.guid_flows:
            by = "by AD connector and object type" if any(f.connector for f in plan.guid_flows) else "by AD object type"
            out.print(f"[bold]msExchMailboxGuid[/bold] for existing objects, {by}")
            for flow in plan.guid_flows:
                style_now = "red" if flow.flows_now else "green"
                style_after = "red" if flow.flows_after else "green"
                out.print(f"  {escape(flow.label)}")
                out.print(f"    now:   [{style_now}]{escape(flow.now)}[/{style_now}]")
                if flow.after != flow.now:
                    out.print(f"    after: [{style_after}]{escape(flow.after)}[/{style_after}]")
            out.print()
        left = [o for o in plan.outcomes if not o.as_desired]
        if not plan.steps and left:
            out.print(f"[green]No changes.[/green] [yellow]Nothing this plan can do helps the {len(left)} user(s) named in the notices.[/yellow]")
        elif not plan.steps:
            out.print("[green]No changes.[/green] The environment matches the desired state.")
        else:
            out.print("[bold]Steps, in order[/bold]")
            width = len(str(len(plan.steps)))
            for number, step in enumerate(plan.steps, start=1):
                self._step(out, number, width, step, (scripts or {}).get(step.id))
        self._notices(out, plan.notices)
        for reason in plan.unsafe:
            out.print(f"  [bold red]! {escape(reason)}[/bold red]")
        if plan.outcomes:
            out.print()
            out.print(users_line(plan.outcomes))
            for line in entry_lines(plan.outcomes):
                out.print(line)
        if plan.steps:
            out.print()
            out.print(self.summary(plan))

    def summary(self, plan):
        counts = plan.counts()
        parts = [
            f"{counts['create']} to create",
            f"{counts['update']} to change",
            f"{counts['delete']} to delete",
            f"{counts['run']} to run",
            f"{counts['check']} to check",
        ]
        tail = f"{counts['costly']} costly (full sync)"
        irreversible = counts["irreversible"]
        tail += f", [bold red]{irreversible} IRREVERSIBLE[/bold red]" if irreversible else ", 0 irreversible"
        if plan.purge_kept:
            tail += f"; {len(plan.purge_kept)} user(s) kept out of the purge"
        return f"[bold]Plan:[/bold] {', '.join(parts)}; {tail}."

    def _step(self, out, number, width, step, script):
        symbol, colour = SYMBOLS[step.action]
        tags = []
        if step.impact is Impact.COSTLY:
            tags.append("[magenta]costly: full sync[/magenta]")
        if step.impact is Impact.IRREVERSIBLE:
            tags.append("[bold red]IRREVERSIBLE[/bold red]")
        if step.decided_after_sync:
            tags.append("[dim]known after sync[/dim]" if step.impact is Impact.IRREVERSIBLE else "[dim]decided after the sync[/dim]")
        if step.approval == "threshold-raise":
            tags.append("[red]needs --approve-threshold-raise[/red]")
        tag_text = f"  {' '.join(tags)}" if tags else ""
        out.print(
            f" {number:>{width}}  [{colour}]{symbol}[/{colour}] [bold]{escape(step.resource)}[/bold] ({step.provider}){tag_text}"
        )
        indent = " " * (width + 6)
        out.print(f"{indent}{escape(step.summary)}")
        if step.action is Action.CREATE and step.after:
            for path, value in _flatten(step.after):
                out.print(f"{indent}[green]+ {escape(path)}: {escape(_value(value))}[/green]")
        elif step.action is Action.DELETE and step.before:
            for path, value in _flatten(step.before):
                if path in ("name", "precedence", "enabled", "standard"):
                    out.print(f"{indent}[red]- {escape(path)}: {escape(_value(value))}[/red]")
        else:
            for change in step.changes:
                if change.before is None:
                    out.print(f"{indent}[green]+ {escape(change.path)}: {escape(_value(change.after))}[/green]")
                elif change.after is None:
                    out.print(f"{indent}[red]- {escape(change.path)}: {escape(_value(change.before))}[/red]")
                else:
                    out.print(
                        f"{indent}[yellow]~ {escape(change.path)}:[/yellow] {escape(_value(change.before))} [yellow]->[/yellow] {escape(_value(change.after))}"
                    )
        users = getattr(step.operation, "users", None)
        if users and step.action is not Action.CHECK:  # a check lists the users of the step before it
            # Every user an irreversible step touches is listed: a reviewer approves names, not a count.
            limit = len(users) if step.impact is Impact.IRREVERSIBLE else MAX_USERS_SHOWN
            shown = ", ".join(u.upn for u in users[:limit])
            more = f" and {len(users) - limit} more" if len(users) > limit else ""
            out.print(f"{indent}users: {escape(shown)}{more}")
        if script:
            out.print(f"{indent}[dim]script:[/dim]")
            for line in script.splitlines():
                out.print(f"{indent}  [dim]{escape(line)}[/dim]")

    def _notices(self, out, notices):
        if not notices:
            return
        out.print()
        out.print("[bold]Notices[/bold]")
        for notice in notices:
            if notice.level is Level.WARNING:
                out.print(f"  [yellow]! {escape(notice.short())}[/yellow]")
            else:
                out.print(f"  [dim]i[/dim] {escape(notice.short())}")


class ProgressView:
    """Long waits as they go: on a terminal, rich's progress display (what, a bar where there
    are counts, elapsed, time left), updated in place; otherwise (a CI log) one plain line
    when the wait starts and then one a minute. Updates may come from a provider's thread."""

    #: Seconds between two plain lines of one wait.
    EVERY = 60.0

    def __init__(self, console, clock=None):
        import threading
        import time

        self.console = console
        self.clock = clock or time.monotonic
        self.lock = threading.Lock()
        self.live = None
        self.task = None
        self.last_line = None

    def update(self, progress):
        with self.lock:
            if self.console.is_terminal:
                self._live(progress)
            elif self.last_line is None or self.clock() - self.last_line >= self.EVERY:
                self.last_line = self.clock()
                self.console.print(f"      [dim]{escape(progress.line())}[/dim]")

    def _live(self, progress):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

        from reconciler.progress import duration

        if self.live is None:
            columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[times]}")]
            self.live = Progress(*columns, console=self.console, transient=True)
            self.live.start()
            self.task = self.live.add_task("", total=None, times="")
        times = f"{duration(progress.elapsed)} elapsed" + (f", about {duration(progress.remaining)} left" if progress.remaining is not None else "")
        waiting = f" [dim](waiting for {escape(progress.waiting_for)})[/dim]" if progress.waiting_for else ""
        self.live.update(self.task, description=escape(progress.what) + waiting, completed=progress.done or 0, total=progress.total, times=times)

    def stop(self):
        with self.lock:
            if self.live is not None:
                self.live.stop()
            self.live = self.task = self.last_line = None


class ApplyRenderer:
    """Turns engine events into progress lines."""

    def __init__(self, console, total, clock=None):
        self.console = console
        self.total = total
        self.count = 0
        self.waits = ProgressView(console, clock)
        #: The output is gone (a closed pipe, a hung-up terminal): nothing more is shown.
        self.gone = False

    def __call__(self, event):
        """Show ``event``; never raises because the output is gone: the engine calls this
        inside its brackets (the threshold put back, the scheduler resumed), which must run
        to their end. A closed pipe makes rich raise SystemExit; a hung-up terminal, EIO."""
        if self.gone:
            return
        try:
            self._show(event)
        except (OSError, SystemExit):
            self.gone = True

    def _show(self, event):
        out = self.console
        if event.kind == "progress":
            self.waits.update(event.result)
            return
        self.waits.stop()
        if event.kind == "started":
            self.count += 1
            out.print(f"[dim][{self.count}/{self.total}][/dim] {escape(event.step.summary)} ...")
        elif event.kind == "finished":
            detail = f" ({escape(one_line(event.message))})" if event.message else ""
            out.print(f"      [green]done[/green]{detail}")
            for upn, reason in event.result.failures:
                out.print(f"      [red]x {escape(upn)}: {escape(one_line(reason))}[/red]")
        elif event.kind == "failed":
            out.print(f"      [bold red]failed:[/bold red] {escape(one_line(event.message))}")
        elif event.kind == "replanned":
            steps, notices = event.result
            self.total = self.count + len(steps)
            out.print(f"[dim]{escape(event.message)}[/dim]")
            for notice in notices:
                if notice.level is Level.WARNING:
                    out.print(f"      [yellow]! {escape(notice.short())}[/yellow]")
        elif event.kind == "note":
            out.print(f"[yellow]{escape(one_line(event.message))}[/yellow]")

    def report(self, report):
        self.waits.stop()
        out = self.console
        done = sum(1 for r in report.results if r.status.value == "done")
        failed = [r for r in report.results if r.status.value == "failed"]
        skipped = sum(1 for r in report.results if r.status.value == "skipped")
        out.print()
        if report.ok:
            out.print(f"[bold green]Apply complete:[/bold green] {done} step(s) done.")
        else:
            out.print(f"[bold red]Apply incomplete:[/bold red] {done} done, {len(failed)} failed, {skipped} skipped.")
            for result in failed:
                out.print(f"  [red]{escape(result.step_id)}: {escape(one_line(result.detail))}[/red]")
            for upn, reason, step_id in report.user_failures:
                out.print(f"  [red]{escape(upn)}: {escape(one_line(reason))}[/red] [dim]({escape(step_id)})[/dim]")
            if report.scheduler_restored:
                out.print("  [yellow]The sync scheduler was resumed.[/yellow]")


def print_json(console, data):
    # Compact: json's fast C encoder is used only without indent (5x at 100,000 users).
    console.file.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")


def render_lab(console, summary, all_users=False):
    """``syncprep lab show``: the lab at a glance."""
    out = console
    out.print(f"[bold]Lab[/bold] {escape(summary['path'])}  (scenario {summary['scenario']}, lab time {summary['clock']})")
    s = summary["server"]
    cycle = f"running until {s['cycle_ends']}" if s["cycle_ends"] else "idle"
    out.print(
        f"Entra Connect {s['build']}: scheduler {'[green]on[/green]' if s['scheduler_enabled'] else '[red]OFF[/red]'}, "
        f"next cycle {s['next_policy']}, {cycle}, staging mode {'on' if s['staging_mode'] else 'off'}, "
        f"deletion threshold {s['deletion_threshold'] if s['deletion_threshold'] is not None else 'disabled'}"
    )
    ads = s.get("ad_connectors") or [{"name": "", "included": s["included"], "excluded": s["excluded"]}]
    for ad in ads:
        which = f" ({escape(ad['name'])})" if len(ads) > 1 else ""
        out.print(f"AD scope{which}: include {', '.join(ad['included']) or '(none)'}; exclude {', '.join(ad['excluded']) or '(none)'}")
    out.print(f"Attributes not exported: {', '.join(s['excluded_attributes']) or '(none)'}")
    from rich.table import Table

    table = Table(title="Rules that flow msExchMailboxGuid", title_justify="left")
    for column in ("precedence", "name", "state", "kind", "msExchMailboxGuid flow"):
        table.add_column(column)
    for rule in s["guid_rules"]:
        name = rule["name"] + (f" ({rule['connector']})" if len(ads) > 1 and rule.get("connector") else "")
        table.add_row(str(rule["precedence"]), escape(name), "enabled" if rule["enabled"] else "disabled", "stock" if rule["standard"] else "custom", rule["flow"])
    out.print(table)
    out.print(f"{s['rule_count']} rules in all; last runs: " + ("; ".join(f"{r['connector']} {r['profile']} {r['result']}" for r in s["last_runs"]) or "none"))
    t = summary["tenant"]
    out.print("SKUs: " + ", ".join(f"{k['part_number']} {k['consumed']}/{k['prepaid']}" for k in t["skus"]))
    if t.get("groups"):
        out.print("Licensing groups: " + escape(", ".join(f"{g['name']} ({', '.join(g['licenses']) or 'no licence'}; {g['members']} member(s))" for g in t["groups"])))
    users = t["users"] if all_users else t["users"][:40]
    table = Table(title=f"Cloud users ({len(t['users'])}; {t['with_mailbox']} with a mailbox)", title_justify="left")
    for column in ("upn", "synced", "usage loc.", "msExchMailboxGuid", "licences", "mailbox"):
        table.add_column(column)
    for user in users:
        mailbox = user["mailbox"]
        colour = {"present": "green", "pending": "yellow"}.get(mailbox, "red")
        table.add_row(
            user["upn"],
            {True: "yes", False: "no longer", None: "cloud-only"}[user["synced"]],
            user["usage_location"] or "-",
            "set" if user["mailbox_guid"] else "-",
            ", ".join(user["licenses"]) or "-",
            f"[{colour}]{mailbox}[/{colour}]",
        )
    out.print(table)
    if len(users) < len(t["users"]):
        out.print(f"[dim]... {len(t['users']) - len(users)} more (lab show --all-users)[/dim]")
    if t["deleted"]:
        out.print(f"Recycle bin: {len(t['deleted'])} user(s): " + ", ".join(d["upn"] for d in t["deleted"][:10]))


def render_drift(console, report):
    out = console
    out.print(f"[bold]Drift[/bold] of {escape(report.target)} from {escape(report.source)}")
    for item in report.items:
        detail = item.detail if len(item.detail) <= 400 else item.detail[:400] + "… (--json has the whole list)"
        out.print(f"  [yellow]~ {escape(item.resource)}[/yellow]: [bold]{escape(item.what)}[/bold] — {escape(detail)}")
    for unknown in report.unknown:
        out.print(f"  [magenta]? {escape(unknown)}[/magenta]")
    if not report.items and not report.unknown:
        out.print("[green]In sync.[/green]")
    elif report.unknown:
        out.print("[magenta]Observation incomplete:[/magenta] what could not be read is unknown, not absent.")
    else:
        out.print(f"[yellow]{len(report.items)} drifted item(s).[/yellow] Run 'syncprep plan' to see the fix.")


def entry_lines(outcomes):
    """Per SKU and per wave, where a plan has more than one licence entry: who does what."""
    entries = {}
    for o in outcomes:
        entries.setdefault((o.sku, o.wave, o.group), []).append(o)
    if len(entries) < 2:
        return []
    lines = []
    for (sku, wave, group), mine in entries.items():
        counts = {}
        for o in mine:
            counts[o.verdict.value] = counts.get(o.verdict.value, 0) + 1
        name = sku + (f" through {group}" if group else "") + ((f", {wave}" if wave.lower().startswith("wave") else f", wave {wave}") if wave else "")
        lines.append(f"  {escape(name)}: {len(mine)} user(s): {escape(', '.join(f'{n} {v}' for v, n in counts.items()))}")
    return lines


def ended_lines(rows):
    """After an apply, per SKU and per wave (where there are several): who ended as desired."""
    entries = {}
    for row in rows:
        entries.setdefault((row["sku"], row.get("wave", ""), row.get("group", "")), []).append(row)
    if len(entries) < 2:
        return []
    lines = []
    for (sku, wave, group), mine in entries.items():
        name = sku + (f" through {group}" if group else "") + ((f", {wave}" if wave.lower().startswith("wave") else f", wave {wave}") if wave else "")
        ok = sum(1 for r in mine if r["as_desired"])
        lines.append(f"  {escape(name)}: {ok} of {len(mine)} user(s) ended as desired (licence and mailbox read back)")
    return lines


def users_line(outcomes):
    """One line of per-user outcome counts, in the order a reader cares about."""
    counts = {}
    for o in outcomes:
        counts[o.verdict.value] = counts.get(o.verdict.value, 0) + 1
    parts = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    return f"[bold]Users:[/bold] {len(outcomes)} targeted by licences: {escape(parts)} (--report FILE lists every user with the reason)"
