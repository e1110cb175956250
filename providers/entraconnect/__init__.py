"""The Entra Connect server over PowerShell remoting (pypsrp).

``open_server(spec)`` turns an :class:`~reconciler.desired.EntraConnectTargetSpec`
into a :class:`PsrpServer`. Importing this package does not import pypsrp: the
session imports it when the first script runs (domain-facts E2).
"""

from __future__ import annotations

import getpass
import os
import sys

from reconciler.errors import ProviderError
from providers.entraconnect.server import PsrpServer
from providers.entraconnect.session import PsrpSession, auth_package_problem

# Certificate auth takes its PEM files from the target spec (certificate_pem,
# certificate_key_pem); these variables are only a fallback for a spec without them.
CERTIFICATE_PEM_ENV = "SYNCPREP_WINRM_CERTIFICATE_PEM"
CERTIFICATE_KEY_PEM_ENV = "SYNCPREP_WINRM_CERTIFICATE_KEY_PEM"
# Kerberos and Negotiate can use the logged-on user's ticket; the others need a password.
_NEED_PASSWORD = ("basic", "ntlm", "credssp")


def _credentials(spec, environ, interactive):
    username = environ.get(spec.username_env) or None
    password = environ.get(spec.password_env) or None
    if spec.auth in _NEED_PASSWORD or (username and not password and spec.auth != "certificate"):
        if username is None and interactive:
            username = input(f"WinRM user for {spec.host}: ").strip() or None
        if password is None and username is not None and interactive:
            password = getpass.getpass(f"Password for {username} on {spec.host}: ") or None
        if username is None or password is None:
            missing = spec.username_env if username is None else spec.password_env
            raise ProviderError(
                "entra-connect", spec.host, f"no credentials: set {missing} (or run interactively to be asked); {spec.auth} auth needs a user name and a password"
            )
    return username, password


def _certificate(spec, environ):
    """The client certificate and key files: the spec's paths (both), else the fallback variables (both)."""
    if spec.certificate_pem or spec.certificate_key_pem:
        cert, key = spec.certificate_pem, spec.certificate_key_pem
        if not cert or not key:
            missing = "certificate_key_pem" if cert else "certificate_pem"
            raise ProviderError("entra-connect", spec.host, f"certificate auth: set {missing} in [target.entra_connect] too (the certificate and its key)")
    else:
        cert, key = environ.get(CERTIFICATE_PEM_ENV) or None, environ.get(CERTIFICATE_KEY_PEM_ENV) or None
        if not cert or not key:
            raise ProviderError(
                "entra-connect",
                spec.host,
                f"certificate auth: set certificate_pem and certificate_key_pem in [target.entra_connect] to the PEM files (or {CERTIFICATE_PEM_ENV} and {CERTIFICATE_KEY_PEM_ENV})",
            )
    for key_name, path in (("certificate_pem", cert), ("certificate_key_pem", key)):
        if not os.path.isfile(path):
            raise ProviderError("entra-connect", spec.host, f"certificate auth: {key_name} {path!r} is not a file")
    return {"certificate_pem": cert, "certificate_key_pem": key}


def _require_package(spec, uses_ticket):
    problem = auth_package_problem(spec.auth, uses_ticket=uses_ticket)
    if problem:
        raise ProviderError("entra-connect", spec.host, problem)


def _spn(spec):
    """pypsrp's SPN overrides (the SPN is ``service/host``; pypsrp's default service is host)."""
    names = {"negotiate_service": spec.negotiate_service, "negotiate_hostname_override": spec.negotiate_hostname_override}
    return {key: value for key, value in names.items() if value is not None}


def open_server(spec, environ=None, interactive=None, ca_bundle=None, **options):
    """A :class:`PsrpServer` for ``spec``; connects on first use.

    Credentials come from the environment variables the spec names, or from a
    prompt when a terminal is attached; never from the desired-state file.
    Certificate auth uses the spec's ``certificate_pem`` and ``certificate_key_pem``
    (paths), falling back to the variables above. ``aad_username`` goes to the
    server for the export deletion threshold cmdlets. ``ca_bundle`` (a PEM file)
    checks the server's certificate against that CA instead of the system's. ``options`` go to
    :class:`PsrpServer` (``poll_interval``, ``cycle_timeout``).
    """
    environ = os.environ if environ is None else environ
    interactive = sys.stdin.isatty() if interactive is None else interactive
    _require_package(spec, uses_ticket=False)  # before anyone is asked for a password
    username, password = _credentials(spec, environ, interactive)
    _require_package(spec, uses_ticket=password is None)
    auth_kwargs = _certificate(spec, environ) if spec.auth == "certificate" else _spn(spec)
    session = PsrpSession(
        spec.host,
        port=spec.port,
        ssl=spec.ssl,
        auth=spec.auth,
        cert_validation=(ca_bundle or True) if spec.cert_validation else False,
        username=username,
        password=password,
        connection_timeout=spec.connection_timeout_seconds,
        operation_timeout=spec.operation_timeout_seconds,
        **auth_kwargs,
    )
    return PsrpServer(session, allow_staging=spec.allow_staging, aad_username=spec.aad_username, **options)


__all__ = ["open_server", "PsrpServer", "PsrpSession"]
