"""``syncprep sync FILE``: one sync cycle on demand, run the way apply runs one.

The plan asks for a full (Initial) sync where run history no longer shows when
``msExchMailboxGuid`` was cleared; on a real server there is otherwise no way to start
one without a console. The cycle is a one-step plan carried out by
:func:`reconciler.apply.apply_plan`: the same provider starts it and waits for it with
the same checks (a running cycle waited for first; the cycle found by each
connector's run-history watermark; a ``stopped-*`` run fails it), under the caller's
target lock and journal, with the same retries. Nothing else is decided after it:
licences are for ``plan`` and ``apply``.
"""

from __future__ import annotations

from attrs import evolve

from reconciler.model import SyncPolicy
from reconciler.operations import RunSyncCycle
from reconciler.steps import Action, Impact, Plan, server_step


def sync_plan(policy, desired, target_description):
    """The one-step plan of a ``policy`` cycle (a :class:`SyncPolicy`)."""
    what = "full (Initial)" if policy is SyncPolicy.INITIAL else "Delta"
    step = server_step(
        id="sync.on-demand",
        resource="sync cycle",
        action=Action.RUN,
        summary=f"Run a {what} sync cycle and wait for every connector's run of it",
        operation=RunSyncCycle(policy),
        impact=Impact.COSTLY if policy is SyncPolicy.INITIAL else Impact.REVERSIBLE,
    )
    return Plan(source=desired.source, target=target_description, steps=(step,))


def run_sync(plan, desired, target, **apply_options):
    """Carry out :func:`sync_plan`'s plan; ``apply_options`` as for ``apply_plan`` (on_event,
    journal, until). Returns its :class:`~reconciler.apply.ApplyReport`."""
    from reconciler.apply import apply_plan

    # No licence entries: apply decides licences after a plan's last sync, a sync alone does not.
    return apply_plan(plan, evolve(desired, licenses=()), target, **apply_options)
