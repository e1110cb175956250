"""The one place that talks PSRP: :meth:`PsrpSession.invoke`.

pypsrp is imported here, lazily, when the first script runs. Every failure the
user must act on leaves as one :class:`~reconciler.errors.ProviderError` line:
a dropped connection, a timeout, a WinRM 5xx or a shell the server no longer knows
(WinRM restarted) as a :class:`~reconciler.errors.TransientError`, after dropping the
runspace pool so that the next call opens a new one;
a wrong password, a host that cannot be reached, a pipeline that failed (a
terminating error) and a pipeline that "succeeded" with records in its error
stream (a non-terminating ``Write-Error``, which pypsrp does not count as
``had_errors``; domain-facts C3).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import time

from providers.loopback import is_loopback
from reconciler.desired import WINRM_AUTHS as AUTHS
from reconciler.errors import ProviderError, TransientError

PROVIDER = "entra-connect"
# ERROR_WSMAN_INVALID_SELECTORS: the shell named is not (or no longer) there, e.g. after WinRM restarted.
SHELL_NOT_FOUND = 2150858843
#: A WinRM user name in a shape a password practically never has: DOMAIN\\name (``.\\name`` for a
#: local account) or name@dns.domain (a UPN); the name's characters those an account name may have.
_ACCOUNT = re.compile(
    r"(?:\.|[A-Za-z0-9][A-Za-z0-9.-]{0,14})\\[^\s\"/\\\[\]:;|=,+*?<>@]{1,64}"
    r"|[^\s\"/\\\[\]:;|=,+*?<>@]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}"
)


def shown_user(username, password=None):
    """The WinRM user for a message: its name if it is written as an account (see ``_ACCOUNT``),
    else not: a bare word may be the password, its variable swapped with the user's (and only
    the password's variable's value is masked). Neither value is shown when they look swapped."""
    if not username:
        return "the logged-on user"
    if _ACCOUNT.fullmatch(username):
        return f"user {username!r}"
    if password and _ACCOUNT.fullmatch(password):
        return "the WinRM user (not shown: the user name and the password look swapped)"
    return "the WinRM user (not shown: written neither DOMAIN\\user nor user@domain, it could be a password)"


#: The optional packages an auth needs (pyproject's extras), and what installing them takes.
EXTRAS = {
    "kerberos": ("gssapi", "it builds against the system's Kerberos libraries: libkrb5-dev and gcc on Debian/Ubuntu, krb5-devel on RHEL"),
    "credssp": ("requests_credssp", "pure Python"),
}


def auth_package_problem(auth, uses_ticket=False, platform=None):
    """None when ``auth`` can work with what is installed, else one line saying what to install.

    CredSSP needs requests-credssp everywhere. Kerberos (and Negotiate signing in with the
    logged-on user's ticket, without a password) needs gssapi except on Windows, where
    pyspnego uses SSPI.
    """
    platform = sys.platform if platform is None else platform
    if auth == "credssp":
        extra = "credssp"
    elif (auth == "kerberos" or (auth == "negotiate" and uses_ticket)) and not platform.startswith("win"):
        extra = "kerberos"
    else:
        return None
    module, note = EXTRAS[extra]
    try:
        importlib.import_module(module)
    except ImportError:
        why = f'auth = "{auth}"' + (" without a password (the Kerberos ticket)" if auth == "negotiate" else "")
        return f"{why} needs the {extra} extra, which is not installed: pip install 'syncprep[{extra}]' ({note})"
    return None


def one_line(text, limit=400):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(record):
    """The message of one pypsrp error record (ErrorRecord or a pipeline state's error)."""
    exception = getattr(record, "exception", None)
    for source in (exception, record):
        if source is None:
            continue
        for attribute in ("adapted_properties", "extended_properties", "property_sets"):
            props = getattr(source, attribute, None)
            if isinstance(props, dict) and props.get("Message"):
                return str(props["Message"])
        message = getattr(source, "message", None)
        if isinstance(message, str) and message:
            return message
    for attribute in ("details_message", "message", "fq_error"):
        value = getattr(record, attribute, None)
        if value:
            return str(value)
    return str(record)


def _proxies_once_per_url(session):
    """requests works out the environment's proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY)
    anew for every request a session sends, about 0.15 ms of CPU each, and a script takes several
    WS-Man requests (issue 19). pypsrp sends every request of its session to one URL: ask requests
    once per URL, with its own function and the session's own settings, and give each send that
    answer as its ``proxies``. The proxy used is the one requests would have picked (a proxy
    from the environment is still honoured; ``no_proxy`` for a loopback host still wins); only an
    environment changed while the session is open is not looked at again. A send that names its
    proxies (a redirect) is left to requests as it was."""
    if session is None or getattr(session.send, "proxies_once", False):
        return
    from requests.utils import resolve_proxies

    send, known = session.send, {}

    def send_once_resolved(request, **kwargs):
        if "proxies" not in kwargs:
            key = (request.url, session.trust_env, tuple(sorted(session.proxies.items())))
            if key not in known:
                known[key] = resolve_proxies(request, session.proxies, session.trust_env)
            kwargs["proxies"] = dict(known[key])
        return send(request, **kwargs)

    send_once_resolved.proxies_once = True
    session.send = send_once_resolved


class PsrpSession:
    """A runspace pool on one Entra Connect server, opened on first use."""

    def __init__(self, host, port=None, ssl=True, auth="negotiate", cert_validation=True, username=None, password=None,
                 connection_timeout=30, operation_timeout=60, script_timeout=15 * 60.0, clock=time.monotonic, **auth_kwargs):
        if auth not in AUTHS:
            raise ProviderError(PROVIDER, host, f"unknown auth {auth!r}; use one of {', '.join(AUTHS)}")
        if auth == "basic" and not ssl and not is_loopback(host):
            raise ProviderError(PROVIDER, host, "basic auth over plain http would send the password in clear text; use ssl or another auth")
        if auth == "certificate" and not ssl:
            raise ProviderError(PROVIDER, host, "certificate auth needs ssl")
        self.host = host
        self.port = port or (5986 if ssl else 5985)
        self.ssl = ssl
        self.auth = auth
        self.cert_validation = cert_validation
        self.username = username
        self._password = password
        self.connection_timeout = connection_timeout
        self.operation_timeout = operation_timeout
        # pypsrp's invoke() polls for ever while WS-Man answers TimedOut: each script
        # gets this long (seconds), then it is stopped and its outcome is unknown.
        self.script_timeout = script_timeout
        self._clock = clock
        self.auth_kwargs = auth_kwargs
        self._wsman = None
        self._pool = None

    @property
    def where(self):
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.host}:{self.port}/wsman"

    def __repr__(self):  # never the password
        return f"PsrpSession({self.where}, auth={self.auth}, {shown_user(self.username)})"

    def _open(self):
        if self._pool is not None:
            return self._pool
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        # Message encryption over http exists only for the SPNEGO/CredSSP family (C2): required
        # there over http (basic over http is refused above except on loopback).
        encryption = "auto" if self.ssl else ("never" if self.auth == "basic" else "always")
        self._wsman = WSMan(
            self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            ssl=self.ssl,
            auth=self.auth,
            cert_validation=self.cert_validation,
            encryption=encryption,
            connection_timeout=self.connection_timeout,
            read_timeout=self.operation_timeout + 10,
            operation_timeout=self.operation_timeout,
            no_proxy=is_loopback(self.host),
            **self.auth_kwargs,
        )
        pool = RunspacePool(self._wsman)
        pool.open()
        _proxies_once_per_url(self._wsman.transport.session)
        self._pool = pool
        return pool

    def invoke(self, script, resource="script", json_output=True):
        """Run ``script``; return its JSON output parsed (``None`` when it writes none).

        With ``json_output=False`` (a change, whose cmdlets write objects of their
        own, e.g. the rule Add-ADSyncRule saved) the output is returned as it came.
        Raises ProviderError with one line when the pipeline failed or wrote to the
        error stream, when the output is not JSON, or when the transport failed.
        """
        from pypsrp.powershell import PowerShell

        with self._transport_errors("connect"):
            pool = self._open()
        with self._transport_errors(resource):
            ps = PowerShell(pool)
            ps.add_script(script)
            output = self._run(ps, resource)
            errors = list(ps.streams.error)
            failed = ps.had_errors
            try:
                ps.close()
            except Exception:  # noqa: BLE001 - closing is cleanup; the answer is already here
                pass
        if failed or errors:
            message = error_text(errors[0]) if errors else "the script failed without an error record"
            more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
            kind = "failed" if failed else "reported an error"
            raise ProviderError(PROVIDER, resource, one_line(f"{kind}: {message}{more}"))
        if not json_output:
            return output
        texts = [o for o in output if isinstance(o, str) and o.strip()]
        if not texts:
            return None
        try:
            return json.loads(texts[-1])
        except json.JSONDecodeError as exc:
            raise ProviderError(PROVIDER, resource, f"the script's output is not JSON ({exc.msg} at {exc.pos})") from None

    def _run(self, ps, resource):
        """``ps.invoke()`` against a deadline: stop the pipeline when it passes."""
        from pypsrp.powershell import PSInvocationState

        deadline = self._clock() + self.script_timeout
        ps.begin_invoke()
        while ps.state == PSInvocationState.RUNNING:
            left = deadline - self._clock()
            if left <= 0:
                try:
                    ps.stop()
                except Exception:  # noqa: BLE001 - the error below says what matters
                    pass
                raise ProviderError(
                    PROVIDER,
                    resource,
                    f"the script did not finish within {self.script_timeout:g} s and was stopped; its outcome is unknown (observe again before retrying)",
                )
            # One WS-Man Receive waits at most this long (it answers TimedOut, then we look at the clock).
            ps.poll_invoke(timeout=max(1, min(self.operation_timeout, int(left) + 1)))
        return ps.output

    def _drop(self):
        """Forget the pool and the connection without talking to the server (it may be
        gone, or have forgotten the shell): the next call opens new ones."""
        self._pool = None
        wsman, self._wsman = self._wsman, None
        if wsman is not None:
            try:
                wsman.close()
            except Exception:  # noqa: BLE001 - closing the local HTTP session only
                pass

    def close(self):
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                pool.close()
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        if self._wsman is not None:
            self._wsman.close()
            self._wsman = None

    def _transport_errors(self, resource):
        session = self

        class _Guard:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, exc, tb):
                if exc is None or isinstance(exc, ProviderError):
                    return False
                mapped = session._map(exc, resource)
                if mapped is None:
                    return False
                if isinstance(mapped, TransientError):
                    session._drop()
                raise mapped from None

        return _Guard()

    def _map(self, exc, resource):
        import requests
        from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError

        where = self.where
        if isinstance(exc, ImportError):
            # An auth whose package is missing (open_server checks first; this is the safety net).
            return ProviderError(PROVIDER, where, auth_package_problem(self.auth, uses_ticket=self._password is None) or one_line(exc))
        if isinstance(exc, AuthenticationError):
            return ProviderError(PROVIDER, where, f"authentication failed for {shown_user(self.username, self._password)} with {self.auth}: check the user name and password")
        if isinstance(exc, requests.exceptions.SSLError):
            return ProviderError(PROVIDER, where, "TLS certificate not trusted (set cert_validation = false only for a lab)")
        # Transient: the engine observes again before it retries, so a script that may
        # have run before the connection dropped is not run twice blindly.
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return TransientError(PROVIDER, where, "cannot reach the server: connection timed out")
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused" if "refused" in str(exc).lower() else "connection failed"
            return TransientError(PROVIDER, where, f"cannot reach the server: {reason}")
        if isinstance(exc, requests.exceptions.Timeout):
            return TransientError(PROVIDER, where, f"{resource}: no answer within {self.operation_timeout + 10} s")
        if isinstance(exc, WSManFaultError):
            message = one_line(f"WinRM fault: {exc.reason or exc.code}")
            if exc.code == SHELL_NOT_FOUND or "shell was not found" in str(exc.reason or "").lower():
                return TransientError(PROVIDER, where, one_line(f"the server no longer knows the PowerShell session (WinRM restarted?): {exc.reason or exc.code}"))
            return ProviderError(PROVIDER, where, message)
        if isinstance(exc, WinRMTransportError):
            if isinstance(exc.code, int) and exc.code >= 500:
                return TransientError(PROVIDER, where, f"WinRM answered HTTP {exc.code}")
            return ProviderError(PROVIDER, where, f"WinRM answered HTTP {exc.code}")
        if isinstance(exc, WinRMError):
            return ProviderError(PROVIDER, where, one_line(str(exc)))
        return None
