"""Open a target's state backend (:mod:`reconciler.state`) from ``[state]`` and ``--state``.

``local`` is the lab's default and ``server`` a real target's: a real target's lock
then lives where every apply on it goes anyway, the Entra Connect server. The
transports (the server's PowerShell session, the blob client) are imported here
only when a backend needs them.
"""

from __future__ import annotations

from reconciler.desired import StateBackendKind, StateSpec, TargetKind
from reconciler.errors import ConfigError
from reconciler.journal import LocalState, target_slug


def backend_kind(spec, target_kind, override=None):
    """The backend: ``--state``, else ``[state] backend``, else the target kind's default."""
    if override:
        return StateBackendKind(override)
    if spec.backend is not None:
        return spec.backend
    return StateBackendKind.LOCAL if target_kind is TargetKind.LAB else StateBackendKind.SERVER


def check(spec, target_kind, override=None, source="desired state"):
    """Refuse, before anything is read or sent, a backend this target cannot have."""
    spec = spec or StateSpec()
    kind = backend_kind(spec, target_kind, override)
    if kind is StateBackendKind.SERVER and target_kind is TargetKind.LAB:
        raise ConfigError([f"{source}: state.backend: \"server\" keeps the lock on the Entra Connect server through PowerShell remoting; this target has none (use local)"])
    if kind is StateBackendKind.AZUREBLOB and (not spec.account_url or not spec.container):
        raise ConfigError([f"{source}: state: the azureblob backend needs account_url and container in [state]"])
    return kind


def open_state(spec, target, target_kind, override=None, allowance=None, source="desired state"):
    """The backend for ``target`` (``spec``: the file's ``[state]``; ``override``: ``--state``),
    refused as :func:`check` refuses it."""
    kind = check(spec, target_kind, override, source)
    spec = spec or StateSpec()
    slug = target_slug(target.key)
    if kind is StateBackendKind.LOCAL:
        from pathlib import Path

        return LocalState(Path(spec.folder) if spec.folder else target.state_dir(), slug)
    if kind is StateBackendKind.SERVER:
        from providers.entraconnect.statefiles import ServerState

        # A remote target's server is reached through its PowerShell session (check: never a lab).
        return ServerState(target.server.session, slug, spec.folder)
    from providers.azureblob import BlobState, check_endpoint

    check_endpoint(spec, allowance, source)
    return BlobState.open(spec, slug, ca_bundle=getattr(allowance, "ca_bundle", None))
