"""Turn a desired state's ``[target]`` into a :class:`~reconciler.provider.Target`.

Real providers are imported here, lazily, only when a file asks for them, so
``syncprep --help`` and lab runs never load msgraph or pypsrp. Before a real
provider is made, every endpoint the file names must be one the operator allowed
(:mod:`providers.endpoints`): nothing is read from the environment, asked or sent
before that.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from providers.endpoints import Allowance, Endpoint
from providers.loopback import is_loopback
from reconciler.desired import TargetKind, credential_variable_problem
from reconciler.errors import ConfigError
from reconciler.provider import Target


def open_target(spec, lab_path=None, source="desired state", allowance=None):
    """``lab_path`` (the CLI's ``--lab``) overrides the file's ``target.lab``.

    ``allowance`` (:class:`~providers.endpoints.Allowance`) says where credentials
    may go; without one, only the national clouds' Graph is allowed.
    """
    from providers.lab.provider import open_lab_target

    if spec.kind is TargetKind.LAB:
        return open_lab_target(lab_path or spec.lab, allow_staging=spec.allow_staging)
    if spec.entra_connect is None or spec.graph is None:
        raise ConfigError([f"{source}: target: a remote target needs both [target.entra_connect] and [target.graph]"])
    allowance = allowance if allowance is not None else Allowance()
    check_remote(spec, source, allowance)
    from providers.entraconnect import open_server
    from providers.graph import open_tenant

    server = open_server(
        spec.entra_connect,
        poll_interval=spec.entra_connect.poll_seconds,
        script_timeout=spec.entra_connect.script_timeout_seconds,
        ca_bundle=allowance.ca_bundle,
    )
    tenant = open_tenant(spec.graph, poll_interval=spec.graph.poll_seconds, ca_bundle=allowance.ca_bundle)
    return Target(server, tenant)


def check_remote(spec, source, allowance):
    """Credential variables, endpoints and certificate checking of a remote target; ConfigError, nothing sent."""
    problems = [
        f"{source}: target.{section}.{key}: {problem}"
        for section, part in (("graph", spec.graph), ("entra_connect", spec.entra_connect))
        for key in ("token_env", "username_env", "password_env")
        if hasattr(part, key) and (problem := credential_variable_problem(key, getattr(part, key)))
    ]
    if problems:
        raise ConfigError(problems)
    graph, default = graph_endpoint(spec.graph)
    allowance.require(graph, source, default=default)
    for sign_in, default in sign_in_endpoints(spec.graph):
        allowance.require(sign_in, source, default=default)
    winrm = winrm_endpoint(spec.entra_connect)
    allowance.require(winrm, source)
    if not spec.entra_connect.cert_validation and not is_loopback(winrm.host):
        if not allowance.insecure_tls:
            raise ConfigError(
                [
                    f"{source}: target.entra_connect.cert_validation = false: the TLS certificate of {winrm.host} would not be checked, "
                    "so the credentials could go to whoever answers; pass --no-cert-validation to accept that, or trust the "
                    "server's CA with --ca-bundle; nothing was sent"
                ]
            )
        allowance.warnings.append(f"the TLS certificate of WinRM at {winrm.url} is not checked (--no-cert-validation)")


def graph_endpoint(spec):
    """(Endpoint, allowed by default): the national clouds' own Graph hosts over https are."""
    from providers.graph.connection import CLOUDS, resolve_endpoint

    resolved = resolve_endpoint(spec)
    parts = urlsplit(resolved.base_url)
    endpoint = Endpoint("Microsoft Graph", parts.scheme, resolved.host, parts.port or (443 if parts.scheme == "https" else 80))
    default = endpoint.scheme == "https" and endpoint.port == 443 and endpoint.host.lower() in {c.graph_host for c in CLOUDS.values()}
    return endpoint, default


def sign_in_endpoints(spec):
    """[(Endpoint, allowed by default)]: where the Graph sign-in sends credentials (the token endpoint)."""
    from providers.graph.connection import sign_in_endpoints as places

    return [(url_endpoint(what, url), default) for what, url, default in places(spec)]


def url_endpoint(what, url):
    parts = urlsplit(url)
    return Endpoint(what, parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def winrm_endpoint(spec):
    scheme = "https" if spec.ssl else "http"
    return Endpoint("WinRM", scheme, spec.host, spec.port or (5986 if spec.ssl else 5985))
