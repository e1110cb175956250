"""The Entra Connect server as a :class:`~reconciler.provider.ServerProvider`, over PSRP.

Each operation is one short script (see :mod:`.scripts`), run through one
:class:`~providers.entraconnect.session.PsrpSession`. Before any change a small
read checks that no sync cycle is running (A7: "When a sync cycle is running, you
can't make configuration changes") and that the server is not in staging mode
(unless the target allows it), and that the rule to change exists or not; a
refusal changes nothing.

An update that changes only a rule's precedence and/or state is a targeted edit
(read, set, write back) rather than a rebuild of the whole rule. Which form an
update takes depends on the rule as it will be found, so the provider keeps the
rules as last read and, for :meth:`PsrpServer.scripts_for`, the rule operations
shown since then, in order: the script shown for a plan's step is the one its
apply runs (which decides again on the rule as read just before).

A sync cycle is waited for until every connector has ended the last step the
cycle's policy gives it (the Entra ID connector: Export; an AD connector: Full or
Delta Synchronization) in a run numbered above the watermark the start script
recorded, the run status has been empty on two polls running (it goes idle between
run steps, A7) and SyncCycleInProgress reads an explicit False.
"""

from __future__ import annotations

import time

from attrs import evolve, fields

from reconciler.errors import ProviderError, RefusedError
from reconciler.operations import (
    SERVER_OPERATIONS,
    CreateRule,
    Outcome,
    RemoveRule,
    RunSyncCycle,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
)
from reconciler.model import SyncPolicy, SyncRule
from reconciler.progress import Progress
from reconciler.provider import ServerProvider
import providers.entraconnect.parse as parse
import providers.entraconnect.scripts as scripts

CONFIGURATION_CHANGES = (SetScheduler, SetRuleDisabled, CreateRule, UpdateRule, RemoveRule, SetContainerScope, SetExcludedAttributes, SetDeletionThreshold)


class PsrpServer(ServerProvider):
    """``session`` is anything with ``invoke(script, resource, json_output=True) -> JSON`` and ``close()``.

    ``script_timeout`` (seconds; ``None`` leaves the session's own) bounds each
    script: one that runs longer is stopped and reported with its outcome unknown.
    A cycle is waited for up to ``cycle_timeout``, in short scripts.
    ``poll_interval`` and ``cycle_timeout`` are real seconds; ``clock`` and
    ``sleep`` are injectable for tests. ``aad_username`` is the Entra ID account the
    export deletion threshold cmdlets name (-AADUserName); without it the threshold
    is not read and cannot be set.
    """

    SUPPORTS = SERVER_OPERATIONS

    def __init__(self, session, allow_staging=False, poll_interval=10.0, cycle_timeout=3 * 3600.0, clock=time.monotonic, sleep=time.sleep, label=None,
                 aad_username=None, script_timeout=None):
        self.session = session
        if script_timeout is not None:
            session.script_timeout = script_timeout
        self.allow_staging = allow_staging
        self.aad_username = aad_username or None
        self.poll_interval = poll_interval
        self.cycle_timeout = cycle_timeout
        self._clock = clock
        self._sleep = sleep
        self._label = label
        self._connectors = None
        # The rules as last read ({lower identifier: SyncRule}; None: never read), and the
        # rule operations scripted since, in order (see _rule_before).
        self._rules = None
        self._scripted = []

    def describe(self):
        where = self._label or getattr(self.session, "where", "remote server")
        return f"Entra Connect server {where} over PowerShell remoting"

    def close(self):
        self.session.close()

    # ------------------------------------------------------------------ reading

    @property
    def observe_script(self):
        return scripts.observe(self.aad_username)

    def observe(self):
        document = self.session.invoke(self.observe_script, "observe")
        state = parse.server_state(document)
        self._connectors = state.connectors
        self._remember(state.rules)
        if self.aad_username:
            state = evolve(state, deletion_threshold=self._read_threshold("export deletion threshold", unknown_on_failure=True))
        return state

    def connector_space(self, joins=False):
        """Every AD connector's objects, read a page at a time from its connector space
        (Get-ADSyncCSObject); None when a read fails or is incomplete (unknown)."""
        if self._connectors is None:
            self.observe()
        entries = []
        self.connector_space_error = None
        try:
            for connector in (c for c in self._connectors if c.kind == "AD"):
                entries += self._complete(connector, self._connector_space_of(connector.identifier, joins))
        except ProviderError as exc:
            self.connector_space_error = str(exc)
            return None  # unknown: the plan says it could not count them, and why
        return entries

    def _connector_space_of(self, identifier, joins):
        """One AD connector's connector space, page after page until a short one (its
        metaverse ids only with ``joins``: one AD connector needs none)."""
        entries, start = [], 0
        while True:
            page = self._connector_space_page(identifier, start, joins)
            entries += (entry for item in page if (entry := parse.cs_object(item, identifier, "connector space", joins)) is not None)
            if len(page) < scripts.CS_PAGE:
                return entries
            start += len(page)

    def _complete(self, connector, entries):
        """``entries`` if they hold as many connectors as the connector's statistics count
        (a read that ended early, on a page cut short, must not read as "no join" or as
        fewer deletions); ProviderError otherwise."""
        where = f"connector space of {connector.name}"
        document = parse.obj_of(self.session.invoke(scripts.connector_statistics(connector.name), "connector statistics"), where)
        total = parse.count_of(document.get("TotalConnectors"), where)
        read = sum(1 for entry in entries if entry[3])
        if read != total:
            raise ProviderError(
                self.name,
                where,
                f"read {read} joined object(s), but Get-ADSyncConnectorStatistics counts {total} (TotalConnectors): the read is incomplete "
                "(Lab assumption: TotalConnectors counts the objects the listing shows with IsConnector)",
            )
        return entries

    def _connector_space_page(self, identifier, start, joins):
        document = parse.obj_of(self.session.invoke(scripts.connector_space_page(identifier, start, joins=joins), "connector space"), "connector space")
        return parse.list_of(document.get("Objects"), "connector space")

    def _read_threshold(self, resource, unknown_on_failure=False):
        """The threshold (``None``: disabled or unknown), in a script of its own with a short
        time box: a cmdlet that prompts or hangs must not hang the whole observation."""
        saved = getattr(self.session, "script_timeout", None)
        if saved is not None:
            self.session.script_timeout = min(saved, THRESHOLD_TIMEOUT)
        try:
            document = parse.obj_of(self.session.invoke(scripts.read_threshold(self.aad_username), resource), resource)
        except ProviderError:
            if unknown_on_failure:
                return None  # unknown: the planner never raises or restores it
            raise
        finally:
            if saved is not None:
                self.session.script_timeout = saved
        return parse.deletion_threshold(document.get("DeletionThreshold"))

    def _remember(self, rules):
        """Take ``rules`` as the server's rules now; forget the operations scripted before."""
        self._rules = {r.identifier.lower(): r for r in rules}
        self._scripted = []

    def _rule_before(self, operation):
        """The rule ``operation`` will find: as last read, changed by the rule operations
        scripted since (in the order shown, as a plan's steps run); ``None`` when unknown."""
        if self._rules is None:
            return None
        if operation not in self._scripted:
            self._scripted.append(operation)
        rules = dict(self._rules)
        for earlier in self._scripted[: self._scripted.index(operation)]:
            _predict(rules, earlier)
        return rules.get(operation.rule.identifier.lower())

    def _connector_id(self, kind, resource, identifier=None):
        """The identifier of the one connector of ``kind``; or, given ``identifier``, that
        connector's, checked to be one of ``kind`` (a server with several AD connectors)."""
        if self._connectors is None:
            self.observe()
        found = [c for c in self._connectors if c.kind == kind]
        if identifier is not None:
            found = [c for c in found if c.identifier.lower() == identifier.lower()]
            if not found:
                raise ProviderError(self.name, resource, f"no {kind} connector with identifier {identifier} on the server (nothing was changed)")
        if len(found) != 1:
            raise ProviderError(self.name, resource, f"expected exactly one {kind} connector, found {len(found)}")
        return found[0].identifier

    # ------------------------------------------------------------------ scripts

    def scripts_for(self, operation):
        match operation:
            case SetScheduler(enabled):
                return scripts.set_scheduler(enabled)
            case SetRuleDisabled(identifier, _name, disabled):
                self._note(operation)
                return scripts.set_rule_disabled(identifier, disabled)
            case CreateRule(rule, copy_of):
                self._note(operation)
                return scripts.put_rule(rule, source=copy_of)
            case UpdateRule(rule):
                # Without a reading of the rule (no observation yet) the whole rule is shown.
                return scripts.update_rule(self._rule_before(operation), rule)
            case RemoveRule(identifier, _name):
                self._note(operation)
                return scripts.remove_rule(identifier)
            case RunSyncCycle(policy):
                wait = f"\n\n# Then, every {self.poll_interval:g} s until every connector has reported a run of this cycle:\n"
                return scripts.start_cycle(policy) + wait + scripts.POLL_CYCLE
            case SetContainerScope(included, excluded, connector):
                try:
                    return scripts.set_container_scope(self._connector_id("AD", "connector scope", connector), included, excluded)
                except ValueError as exc:
                    raise ProviderError(self.name, "connector scope", str(exc)) from None
            case SetExcludedAttributes(attributes):
                return scripts.set_excluded_attributes(self._connector_id("AAD", "export attribute filter"), attributes)
            case SetDeletionThreshold(threshold):
                return scripts.set_deletion_threshold(threshold, self._aad_username("export deletion threshold"))
        raise TypeError(f"unsupported operation {operation!r}")

    def _note(self, operation):
        if self._rules is not None and operation not in self._scripted:
            self._scripted.append(operation)

    def _aad_username(self, resource):
        if not self.aad_username:
            raise ProviderError(
                self.name, resource, "set aad_username in [target.entra_connect]: the ADSyncExportDeletionThreshold cmdlets name an Entra ID account (nothing was changed)"
            )
        return self.aad_username

    # ------------------------------------------------------------------ changing

    def apply(self, operation):
        if type(operation) not in self.SUPPORTS:
            raise TypeError(f"unsupported operation {operation!r}")
        resource = _resource(operation)
        if isinstance(operation, SetExcludedAttributes):
            unknown = [a for a in operation.attributes if a.lower() not in {k.lower() for k in scripts.AAD_EXPORT_ATTRIBUTES}]
            if unknown:
                raise ProviderError(self.name, resource, f"cannot filter {', '.join(unknown)}: not an attribute this tool knows the Entra ID connector to export")
        if isinstance(operation, SetDeletionThreshold):
            self._aad_username(resource)
        state = self._precheck(resource, operation.rule.identifier if isinstance(operation, UpdateRule) else None)
        if isinstance(operation, RunSyncCycle):
            return self._run_cycle(operation.policy, state)
        # The scheduler switch is allowed during a cycle (pausing does not stop the running
        # cycle; apply waits for it before the first configuration change).
        if state["SyncCycleInProgress"] and not isinstance(operation, SetScheduler):
            raise RefusedError(self.name, resource, "a sync cycle is in progress; configuration changes are refused until it finishes (nothing was changed)")
        identifiers = {str(i).lower() for i in parse.list_of(state.get("RuleIdentifiers"), "rules")}
        match operation:
            case CreateRule(rule) if rule.identifier.lower() in identifiers:
                raise ProviderError(self.name, resource, "a rule with this identifier exists already")
            case CreateRule(copy_of=copy_of) if copy_of and copy_of.lower() not in identifiers:
                raise ProviderError(self.name, resource, "the rule to copy is not on the server")
            case UpdateRule(rule) if rule.identifier.lower() not in identifiers:
                raise ProviderError(self.name, resource, "no rule with this identifier to update")
            case SetRuleDisabled(identifier=identifier) | RemoveRule(identifier=identifier) if identifier.lower() not in identifiers:
                raise ProviderError(self.name, resource, "no such rule")
        if isinstance(operation, UpdateRule):
            # Decide on the rule as it is now, not as it was predicted.
            found = parse.list_of(state.get("Rule"), resource)
            if len(found) != 1:
                raise ProviderError(self.name, resource, f"expected the rule to update in the pre-check's answer, found {len(found)}")
            current = parse.rule(found[0], 0)
            script = scripts.update_rule(current, operation.rule)
        else:
            script = self.scripts_for(operation)
        self.session.invoke(script, resource, json_output=False)
        if self._rules is not None and isinstance(operation, (SetRuleDisabled, CreateRule, UpdateRule, RemoveRule)):
            rules = dict(self._rules)
            if isinstance(operation, UpdateRule):
                rules[current.identifier.lower()] = current
            _predict(rules, operation)
            self._remember(rules.values())
        return Outcome(self._read_back(operation, resource))

    # ------------------------------------------------------------------ reading back

    def _read_back(self, operation, resource):
        """Read back, with a fresh read, what ``operation`` changed: the line the journal
        keeps for the step, or ProviderError naming what the server did not take."""
        match operation:
            case SetScheduler(enabled):
                got = parse.obj_of(self.session.invoke(scripts.READ_SCHEDULER, resource), resource).get("SyncCycleEnabled")
                if got is not enabled:
                    self._not_taken(resource, f"SyncCycleEnabled reads {got}, not {enabled}")
                return f"read back: SyncCycleEnabled = {got}"
            case SetRuleDisabled(identifier=identifier, disabled=disabled):
                rule = self._read_rule(identifier, resource)
                if rule is None:
                    self._not_taken(resource, "the rule is gone")
                if rule.disabled != disabled:
                    self._not_taken(resource, f"Disabled reads {rule.disabled}, not {disabled}")
                return f"read back: Disabled = {rule.disabled}"
            case CreateRule(rule=rule) | UpdateRule(rule=rule):
                got = self._read_rule(rule.identifier, resource)
                if got is None:
                    self._not_taken(resource, "the rule is not there")
                differ = rule_differences(got, rule)
                if differ:
                    self._not_taken(resource, f"{', '.join(differ)} not as written")
                state = "disabled" if got.disabled else "enabled"
                return f"read back: precedence {got.precedence}, {state}, {len(got.flows)} flow(s), {len(got.scope)} scope group(s), {len(got.join)} join group(s)"
            case RemoveRule(identifier=identifier):
                if self._read_rule(identifier, resource) is not None:
                    self._not_taken(resource, "the rule is still there")
                return "read back: the rule is gone"
            case SetContainerScope(included, excluded, connector):
                return self._read_back_scope(resource, included, excluded, connector)
            case SetExcludedAttributes(attributes):
                return self._read_back_attributes(resource, attributes)
            case SetDeletionThreshold(threshold):
                got = self._read_threshold(resource)
                if got != threshold:
                    self._not_taken(resource, f"the threshold reads {got if got is not None else 'disabled or unreadable'}, not {threshold if threshold is not None else 'disabled'}")
                return f"read back: {'threshold ' + str(got) if got is not None else 'disabled'}"
        return ""

    def _not_taken(self, resource, what):
        raise ProviderError(self.name, resource, f"the server did not take the change: {what} (read back after the change; the step is not done)")

    def _read_rule(self, identifier, resource):
        document = parse.obj_of(self.session.invoke(scripts.read_rule(identifier), resource), resource)
        found = parse.list_of(document.get("Rule"), resource)
        if len(found) > 1:
            raise ProviderError(self.name, resource, f"{len(found)} rules read back with identifier {identifier}")
        return parse.rule(found[0], 0) if found else None

    def _read_connector(self, kind, resource, identifier=None):
        identifier = self._connector_id(kind, resource, identifier)
        document = parse.obj_of(self.session.invoke(scripts.read_connector(identifier), resource), resource)
        return parse.obj_of(document.get("Connector"), resource)

    def _read_back_scope(self, resource, included, excluded, connector=None):
        """Both lists of every partition the step names must read as wanted, an emptied
        list included (bringing an OU back empties the exclusion list)."""
        from reconciler import dn as dns

        raw = self._read_connector("AD", resource, connector)
        partitions = {}
        for partition in parse.list_of(raw.get("Partitions"), resource):
            partition = parse.obj_of(partition, resource)
            partitions[str(partition.get("DN") or "").lower()] = partition
        named = {scripts.partition_of(c).lower() for c in (*included, *excluded)}
        for kind, key, containers in (("inclusion", "Included", included), ("exclusion", "Excluded", excluded)):
            for partition_dn in sorted(named):
                wanted = [c for c in containers if scripts.partition_of(c).lower() == partition_dn]
                partition = partitions.get(partition_dn)
                got = [str(c) for c in parse.list_of(partition.get(key), resource)] if partition is not None else []
                if not dns.same_set(got, wanted):
                    self._not_taken(resource, f"the {kind} list of partition {partition_dn} reads {sorted(got)}, not {sorted(wanted)}")
        return f"read back: {len(included)} container(s) included, {len(excluded)} excluded"

    def _read_back_attributes(self, resource, attributes):
        raw = self._read_connector("AAD", resource)
        inclusions = {str(a).lower() for a in parse.list_of(raw.get("AttributeInclusions"), resource)}
        still = [a for a in attributes if a.lower() in inclusions]
        if still:
            self._not_taken(resource, f"AttributeInclusionList still holds {', '.join(still)}")
        wanted = {a.lower() for a in attributes}
        missing = [a for a in scripts.AAD_EXPORT_ATTRIBUTES if a.lower() not in wanted and a.lower() not in inclusions]
        if missing:
            self._not_taken(resource, f"AttributeInclusionList lacks {', '.join(missing)}")
        return f"read back: AttributeInclusionList without {', '.join(attributes) or '(nothing excluded)'}"

    def _precheck(self, resource, rule_identifier=None):
        script = scripts.PRECHECK if rule_identifier is None else scripts.precheck_rule(rule_identifier)
        state = parse.obj_of(self.session.invoke(script, resource), resource)
        for key in ("SyncCycleInProgress", "StagingModeEnabled"):
            if not isinstance(state.get(key), bool):
                raise ProviderError(self.name, resource, f"{key} missing from Get-ADSyncScheduler's output")
        if state["StagingModeEnabled"] and not self.allow_staging:
            raise RefusedError(
                self.name,
                resource,
                "the server is in staging mode; refusing to change it (set allow_staging = true for this target to allow it; nothing was changed)",
            )
        return state

    def _run_cycle(self, policy, state):
        resource = "sync cycle"
        began = self._clock()
        deadline = began + self.cycle_timeout
        while state["SyncCycleInProgress"]:
            # A scheduled cycle is running: let it finish, then start ours.
            if self._clock() >= deadline:
                raise ProviderError(self.name, resource, f"a sync cycle was still running after {self.cycle_timeout:g} s; not starting another")
            self.on_progress(Progress("a running sync cycle to finish before ours", self._clock() - began))
            self._sleep(self.poll_interval)
            state = self._precheck(resource)
        answer = self._start_cycle(policy, deadline, resource)
        watermarks = {}
        for mark in parse.list_of(answer.get("Watermarks"), resource):
            mark = parse.obj_of(mark, resource)
            watermarks[str(mark.get("Connector") or "")] = parse.run_number(mark, resource)
        idle_polls = 0
        while True:
            self._sleep(self.poll_interval)
            poll = self._poll(watermarks, resource)
            # The run status goes empty between run steps (A7): idle only counts twice running.
            busy = parse.list_of(poll.get("RunStatus"), resource)
            idle_polls = 0 if busy else idle_polls + 1
            # A missing flag is not "idle": only an explicit False lets the wait end.
            in_progress = poll.get("SyncCycleInProgress")
            runs, waiting = self._cycle_runs(poll, policy, watermarks, resource)
            connectors = len(parse.list_of(poll.get("Connectors"), resource))
            self.on_progress(
                Progress(f"{policy.value} sync cycle", self._clock() - began, connectors - len(waiting), connectors, "connectors", waiting_for=", ".join(waiting))
            )
            failed = [r for r in runs if not r.ok]
            if in_progress is False and idle_polls >= 2 and (failed or not waiting):
                break
            if self._clock() >= deadline:
                names = ", ".join(waiting) if waiting else "all connectors"
                raise ProviderError(self.name, resource, f"{policy.value} cycle not finished after {self.cycle_timeout:g} s (waiting for {names})")
        if failed:
            first = failed[0]
            raise ProviderError(self.name, resource, f"{first.connector} {first.profile} ended '{first.result}'")
        ended = max((r.ended or r.started for r in runs), default=None)
        until = f" to {ended}" if ended else ""
        return Outcome(f"{policy.value} cycle {parse.timestamp(answer.get('Started'), resource)}{until}: all runs succeeded")

    def _start_cycle(self, policy, deadline, resource):
        """Start the cycle and check the start's answer. A cycle the scheduler started
        meanwhile (the race after a resume) makes the start answer busy: wait for that
        cycle, then start again."""
        while True:
            answer = parse.obj_of(self.session.invoke(scripts.start_cycle(policy), resource), resource)
            refused = answer.get("Refused")
            if not refused:
                result = answer.get("Result")
                if result != "Success":
                    raise ProviderError(self.name, resource, f"Start-ADSyncSyncCycle answered {result!r}, not 'Success'; no cycle of ours was seen starting")
                return answer
            if "busy" not in str(refused).lower():
                raise ProviderError(self.name, resource, f"Start-ADSyncSyncCycle failed: {refused}")
            while True:
                if self._clock() >= deadline:
                    raise ProviderError(self.name, resource, f"a sync cycle was still running after {self.cycle_timeout:g} s; not starting another ({refused})")
                self._sleep(self.poll_interval)
                if not self._precheck(resource)["SyncCycleInProgress"]:
                    break

    def _poll(self, watermarks, resource):
        """One poll of the cycle, with enough of each connector's run history to reach its
        watermark, however many runs (of scheduled cycles) came after the cycle's own."""
        count = scripts.POLL_RUNS
        while True:
            poll = parse.obj_of(self.session.invoke(scripts.poll_cycle(count), resource), resource)
            if count >= MAX_RUNS_READ or not _window_short(poll, watermarks, count, resource):
                return poll
            count *= 4

    @staticmethod
    def _cycle_runs(poll, policy, watermarks, resource):
        """This cycle's runs (numbered above the connector's watermark), and the
        connectors still waiting for the last step of the cycle to end (described
        as "name (profile)")."""
        runs, waiting = [], []
        for entry in parse.list_of(poll.get("Connectors"), resource):
            entry = parse.obj_of(entry, resource)
            name = str(entry.get("Name") or "")
            kind = parse.connector_kind(entry.get("Type"), name)
            if kind == "AAD":
                last_step = "Export"
            else:
                last_step = "Full Synchronization" if policy is SyncPolicy.INITIAL else "Delta Synchronization"
            mark = watermarks.get(name)
            mine = []
            for item in parse.list_of(poll.get("Runs"), resource):
                item = parse.obj_of(item, resource)
                if str(item.get("Connector") or "") != name:
                    continue
                number = parse.run_number(item, resource)
                if number is None:
                    raise ProviderError(PsrpServer.name, resource, f"a run of {name} has no RunNumber")
                if mark is None or number > mark:
                    mine.append(parse.run_result(item, resource))
            if not any(r.profile.lower() == last_step.lower() and r.ended for r in mine):
                waiting.append(f"{name} ({last_step})")
            runs += mine
        return sorted(runs, key=lambda r: (r.started, r.ended)), waiting


THRESHOLD_TIMEOUT = 60.0  # seconds for the threshold's own read
MAX_RUNS_READ = 5 * 4**6  # far beyond a week of run history (the server purges after 7 days)


def _window_short(poll, watermarks, count, resource):
    """Whether some connector's ``count`` newest runs are all above its watermark: runs
    of the cycle may lie further back."""
    numbers = {}
    for item in parse.list_of(poll.get("Runs"), resource):
        item = parse.obj_of(item, resource)
        number = parse.run_number(item, resource)
        if number is not None:
            numbers.setdefault(str(item.get("Connector") or ""), []).append(number)
    for name, mark in watermarks.items():
        seen = numbers.get(name, [])
        if mark is not None and len(seen) >= count and min(seen) > mark + 1:
            return True
    return False


def rule_differences(got, wanted):
    """The properties in which the rule read back differs from the rule written."""
    def norm(rule):
        scope = tuple(tuple(evolve(c, operator=c.operator.upper()) for c in group) for group in rule.scope)
        return evolve(rule, identifier=rule.identifier.lower(), connector=rule.connector.lower(), scope=scope, is_standard=False)

    got, wanted = norm(got), norm(wanted)
    return [f.name for f in fields(SyncRule) if getattr(got, f.name) != getattr(wanted, f.name)]


def _predict(rules, operation):
    """Change ``rules`` ({lower identifier: SyncRule}) as ``operation`` will change the server's."""
    match operation:
        case CreateRule(rule=rule) | UpdateRule(rule=rule):
            rules[rule.identifier.lower()] = rule
        case RemoveRule(identifier=identifier):
            rules.pop(identifier.lower(), None)
        case SetRuleDisabled(identifier=identifier, disabled=disabled) if identifier.lower() in rules:
            rules[identifier.lower()] = evolve(rules[identifier.lower()], disabled=disabled)


def _resource(operation):
    match operation:
        case SetScheduler():
            return "scheduler"
        case SetRuleDisabled(name=name) | RemoveRule(name=name):
            return f"rule {name!r}"
        case CreateRule(rule=rule) | UpdateRule(rule=rule):
            return f"rule {rule.name!r}"
        case RunSyncCycle():
            return "sync cycle"
        case SetContainerScope():
            return "connector scope"
        case SetExcludedAttributes():
            return "export attribute filter"
        case SetDeletionThreshold():
            return "export deletion threshold"
    return type(operation).__name__
