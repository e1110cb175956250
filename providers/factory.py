"""Turn a desired state's ``[target]`` into a :class:`~reconciler.provider.Target`.

Real providers are imported here, lazily, only when a file asks for them, so
``syncprep --help`` and lab runs never load msgraph or pypsrp.
"""

from __future__ import annotations

from reconciler.desired import TargetKind
from reconciler.errors import ConfigError
from reconciler.provider import Target


def open_target(spec, lab_path=None, source="desired state"):
    """``lab_path`` (the CLI's ``--lab``) overrides the file's ``target.lab``."""
    from providers.lab import open_lab_target

    if spec.kind is TargetKind.LAB:
        return open_lab_target(lab_path or spec.lab)
    if spec.entra_connect is None or spec.graph is None:
        raise ConfigError([f"{source}: target: a remote target needs both [target.entra_connect] and [target.graph]"])
    from providers.entraconnect import open_server
    from providers.graph import open_tenant

    server = open_server(
        spec.entra_connect, poll_interval=spec.entra_connect.poll_seconds, script_timeout=spec.entra_connect.script_timeout_seconds
    )
    tenant = open_tenant(spec.graph, poll_interval=spec.graph.poll_seconds)
    return Target(server, tenant)
