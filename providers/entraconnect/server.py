"""The Entra Connect server as a :class:`~reconciler.provider.ServerProvider`, over PSRP.

Each operation is one short script (see :mod:`.scripts`), run through one
:class:`~providers.entraconnect.session.PsrpSession`. Before any change a small
read checks that no sync cycle is running (A7: "When a sync cycle is running, you
can't make configuration changes") and that the server is not in staging mode
(unless the target allows it), and that the rule to change exists or not; a
refusal changes nothing.

A sync cycle is waited for on the run results of every connector since the cycle
started, not on an idle connector status, which goes idle between run steps (A7).
"""

from __future__ import annotations

import time

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
from reconciler.provider import ServerProvider
from providers.entraconnect import parse, scripts

CONFIGURATION_CHANGES = (SetScheduler, SetRuleDisabled, CreateRule, UpdateRule, RemoveRule, SetContainerScope, SetExcludedAttributes, SetDeletionThreshold)


class PsrpServer(ServerProvider):
    """``session`` is anything with ``invoke(script, resource, json_output=True) -> JSON`` and ``close()``.

    ``poll_interval`` and ``cycle_timeout`` are real seconds; ``clock`` and
    ``sleep`` are injectable for tests.
    """

    SUPPORTS = SERVER_OPERATIONS

    def __init__(self, session, allow_staging=False, poll_interval=10.0, cycle_timeout=3 * 3600.0, clock=time.monotonic, sleep=time.sleep, label=None):
        self.session = session
        self.allow_staging = allow_staging
        self.poll_interval = poll_interval
        self.cycle_timeout = cycle_timeout
        self._clock = clock
        self._sleep = sleep
        self._label = label
        self._connectors = None

    def describe(self):
        where = self._label or getattr(self.session, "where", "remote server")
        return f"Entra Connect server {where} over PowerShell remoting"

    def close(self):
        self.session.close()

    # ------------------------------------------------------------------ reading

    def observe(self):
        state = parse.server_state(self.session.invoke(scripts.OBSERVE, "observe"))
        self._connectors = state.connectors
        return state

    def _connector_id(self, kind, resource):
        if self._connectors is None:
            self.observe()
        found = [c for c in self._connectors if c.kind == kind]
        if len(found) != 1:
            raise ProviderError(self.name, resource, f"expected exactly one {kind} connector, found {len(found)}")
        return found[0].identifier

    # ------------------------------------------------------------------ scripts

    def scripts_for(self, operation):
        match operation:
            case SetScheduler(enabled):
                return scripts.set_scheduler(enabled)
            case SetRuleDisabled(identifier, _name, disabled):
                return scripts.set_rule_disabled(identifier, disabled)
            case CreateRule(rule) | UpdateRule(rule):
                return scripts.put_rule(rule)
            case RemoveRule(identifier, _name):
                return scripts.remove_rule(identifier)
            case RunSyncCycle(policy):
                wait = f"\n\n# Then, every {self.poll_interval:g} s until every connector has reported a run of this cycle:\n"
                return scripts.start_cycle(policy) + wait + scripts.POLL_CYCLE
            case SetContainerScope(included, excluded):
                try:
                    return scripts.set_container_scope(self._connector_id("AD", "connector scope"), included, excluded)
                except ValueError as exc:
                    raise ProviderError(self.name, "connector scope", str(exc)) from None
            case SetExcludedAttributes(attributes):
                return scripts.set_excluded_attributes(self._connector_id("AAD", "export attribute filter"), attributes)
            case SetDeletionThreshold(threshold):
                return scripts.set_deletion_threshold(threshold)
        raise TypeError(f"unsupported operation {operation!r}")

    # ------------------------------------------------------------------ changing

    def apply(self, operation):
        if type(operation) not in self.SUPPORTS:
            raise TypeError(f"unsupported operation {operation!r}")
        resource = _resource(operation)
        if isinstance(operation, SetExcludedAttributes):
            unknown = [a for a in operation.attributes if a.lower() not in {k.lower() for k in scripts.AAD_EXPORT_ATTRIBUTES}]
            if unknown:
                raise ProviderError(self.name, resource, f"cannot filter {', '.join(unknown)}: not an attribute this tool knows the Entra ID connector to export")
        state = self._precheck(resource)
        if isinstance(operation, RunSyncCycle):
            return self._run_cycle(operation.policy, state)
        if state["SyncCycleInProgress"]:
            raise RefusedError(self.name, resource, "a sync cycle is in progress; configuration changes are refused until it finishes (nothing was changed)")
        identifiers = {str(i).lower() for i in parse._list(state.get("RuleIdentifiers"), "rules")}
        match operation:
            case CreateRule(rule) if rule.identifier.lower() in identifiers:
                raise ProviderError(self.name, resource, "a rule with this identifier exists already")
            case UpdateRule(rule) if rule.identifier.lower() not in identifiers:
                raise ProviderError(self.name, resource, "no rule with this identifier to update")
            case SetRuleDisabled(identifier=identifier) | RemoveRule(identifier=identifier) if identifier.lower() not in identifiers:
                raise ProviderError(self.name, resource, "no such rule")
        script = self.scripts_for(operation)
        self.session.invoke(script, resource, json_output=False)
        if isinstance(operation, SetScheduler):
            return Outcome(f"SyncCycleEnabled = {operation.enabled}")
        return Outcome()

    def _precheck(self, resource):
        state = parse._obj(self.session.invoke(scripts.PRECHECK, resource), resource)
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
        deadline = self._clock() + self.cycle_timeout
        while state["SyncCycleInProgress"]:
            # A scheduled cycle is running: let it finish, then start ours.
            if self._clock() >= deadline:
                raise ProviderError(self.name, resource, f"a sync cycle was still running after {self.cycle_timeout:g} s; not starting another")
            self._sleep(self.poll_interval)
            state = self._precheck(resource)
        answer = parse._obj(self.session.invoke(scripts.start_cycle(policy), resource), resource)
        started = parse.parse_datetime(answer.get("Started"), resource).replace(microsecond=0)
        while True:
            self._sleep(self.poll_interval)
            poll = parse._obj(self.session.invoke(scripts.POLL_CYCLE, resource), resource)
            connectors = parse._strings(poll.get("Connectors"), resource)
            runs = [r for r in parse.run_results(poll.get("Runs"), resource) if parse.parse_datetime(r.started) >= started]
            waiting = [c for c in connectors if not any(r.connector == c for r in runs)]
            if not poll.get("SyncCycleInProgress") and not waiting:
                break
            if self._clock() >= deadline:
                names = ", ".join(waiting) if waiting else "all connectors"
                raise ProviderError(self.name, resource, f"{policy.value} cycle not finished after {self.cycle_timeout:g} s (no run yet from {names})")
        failed = [r for r in runs if not r.ok]
        if failed:
            first = failed[0]
            raise ProviderError(self.name, resource, f"{first.connector} {first.profile} ended '{first.result}'")
        ended = max(r.ended or r.started for r in runs)
        return Outcome(f"{policy.value} cycle {parse.timestamp(answer['Started'])} to {ended}: all runs succeeded")


def _resource(operation):
    match operation:
        case SetScheduler():
            return "scheduler"
        case SetRuleDisabled(name=name) | RemoveRule(name=name):
            return f"rule {name!r}"
        case CreateRule(rule) | UpdateRule(rule):
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
