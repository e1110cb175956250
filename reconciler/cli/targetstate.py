"""The lock and the journal of a target, as the verbs that plan, apply and report use them:
which file each lives in, what an interrupted apply left behind, and who is owed licences."""

from __future__ import annotations

from reconciler.cli.options import escape


def backend(target):
    """The target's state backend (``[state]`` and ``--state``, opened on first use: see
    ``options.open_target``), else local files."""
    state = getattr(target, "state", None)
    if state is None and getattr(target, "open_state", None) is not None:
        state = target.state = target.open_state()
    if state is None:
        from reconciler.journal import LocalState, target_slug

        state = target.state = LocalState(target.state_dir(), target_slug(target.key))
    return state


def lock(target, command, take_over_dead=False):
    return backend(target).lock(command, take_over_dead=take_over_dead)


def purged(target, observed):
    """Users an earlier apply on this target purged and still owes their licences (its journal)."""
    from reconciler.journal import purge_owed
    from reconciler.recreated import from_record

    return from_record(purge_owed(backend(target)), observed.tenant.skus)


def interrupted_text(run):
    from reconciler.sync import is_sync_run

    verb = "sync" if is_sync_run(run) else "apply"
    paused = "; it had paused the sync scheduler, which is still off" if run.scheduler_paused else ""
    where = f" in step '{run.step}'" if run.step else ""
    how = "was interrupted" if run.killed else "stopped before the end of its plan"
    owed = f"; it had raised the export deletion threshold, which it owes back to {run.threshold_owed}" if run.threshold_owed is not None else ""
    return f"the last {verb} (run {run.run}, started {run.started}) {how}{where}{paused}{owed}"


def resume_hint(run):
    """What finishes the interrupted ``run``: its own verb's ``--resume``."""
    from reconciler.sync import is_sync_run

    if is_sync_run(run):
        return "'syncprep sync --resume' runs its cycle again (it owes nothing else)"
    return "'syncprep apply --resume' finishes the job"


def warn_interrupted(target, observed, err):
    """plan and drift say plainly when a killed apply left the scheduler paused."""
    from attrs import evolve

    from reconciler.journal import last_interrupted

    run = last_interrupted(backend(target))
    if run is None or not run.killed:
        return None
    still_paused = run.scheduler_paused and not observed.server.scheduler.sync_cycle_enabled
    text = interrupted_text(run if still_paused else evolve(run, scheduler_paused=False))
    err.print(f"[yellow]warning: {escape(text)}; {resume_hint(run)}[/yellow]")
    return text
