"""``syncprep sync FILE``: one sync cycle on demand, run the way apply runs one.

The plan asks for a full (Initial) sync where run history no longer shows when
``msExchMailboxGuid`` was cleared; on a real server there is otherwise no way to start
one without a console. The cycle is a one-step plan carried out by
:func:`reconciler.apply.apply_plan`: the same provider starts it and waits for it with
the same checks (a running cycle waited for first; the cycle found by each
connector's run-history watermark; a ``stopped-*`` run fails it), under the caller's
target lock and journal, with the same retries. Nothing else is decided after it:
licences are for ``plan`` and ``apply``.

Its journal run is a sync's (``sync Initial``), not an apply's: it pauses nothing and raises
nothing, so a sync that was killed owes nothing but its cycle, which ``sync --resume`` runs
again (the provider waits first for a cycle still running); an apply's resume is not for it.
"""

from __future__ import annotations

from attrs import evolve

from reconciler.model import SyncPolicy
from reconciler.operations import RunSyncCycle
from reconciler.state import is_sync_command
from reconciler.steps import Action, Impact, Plan, server_step


#: The one step of a sync on demand (also how a sync journalled as an apply, before runs had kinds, is known).
SYNC_STEP = "sync.on-demand"


def sync_plan(policy, desired, target_description):
    """The one-step plan of a ``policy`` cycle (a :class:`SyncPolicy`)."""
    what = "full (Initial)" if policy is SyncPolicy.INITIAL else "Delta"
    step = server_step(
        id=SYNC_STEP,
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

    policy = plan.steps[0].operation.policy
    # No licence entries: apply decides licences after a plan's last sync, a sync alone does not.
    return apply_plan(plan, evolve(desired, licenses=()), target, command=f"sync {policy.value}", **apply_options)


def is_sync_run(run):
    """True when ``run`` (a journal's :class:`~reconciler.journal.Interrupted`) was a sync on demand."""
    return is_sync_command(run.command) or run.step == SYNC_STEP


def policy_of(run):
    """The policy of the interrupted sync ``run`` (Initial where the journal does not say)."""
    name = str(run.command or "").partition(" ")[2]
    return next((p for p in SyncPolicy if p.value == name), SyncPolicy.INITIAL)
