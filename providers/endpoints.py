"""Where credentials may go: the operator decides, never the desired-state file.

A desired-state file comes from a repository, and a pull request can change it; the
credentials come from the environment of whoever runs syncprep. So before anything
is sent, every endpoint a remote target names must be allowed by the operator:

* Microsoft Graph of the national clouds (``graph.microsoft.com`` and the others in
  :data:`providers.graph.connection.CLOUDS`, over https) is allowed by default;
* any other Graph endpoint, and every WinRM host, only when listed in
  ``--allow-endpoint`` or in the environment variable ``SYNCPREP_ALLOW_ENDPOINTS``
  (comma-separated URLs or hosts), or, at a terminal, confirmed by the operator,
  who is then not asked again for it (remembered per user, as SSH remembers hosts).

Loopback is no exception: a served lab is allowed like any other host. The
in-process lab sends nothing and needs no allowance. Only the standard library is
imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.classes import frozen
from reconciler.errors import ConfigError

ALLOW_ENV = "SYNCPREP_ALLOW_ENDPOINTS"
DEFAULT_PORTS = {"http": 80, "https": 443}


@frozen
class Endpoint:
    """Where a provider sends credentials: ``what`` is "Microsoft Graph" or "WinRM"."""

    what: str
    scheme: str
    host: str
    port: int

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@frozen
class Entry:
    """One allowed endpoint: a URL (scheme, host and port must match) or a host (any port, or the one given)."""

    host: str
    scheme: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text):
        text = text.strip()
        if not text:
            return None
        if "://" in text:
            parts = _split(text)
            if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                raise ConfigError([f"{ALLOW_ENV} / --allow-endpoint: {text!r} is not an http(s) URL or a host"])
            return cls(_norm(parts.hostname), parts.scheme, _port(parts, text) or DEFAULT_PORTS[parts.scheme])
        parts = _split(f"//{text}", text)
        if not parts.hostname or parts.path or parts.username:
            raise ConfigError([f"{ALLOW_ENV} / --allow-endpoint: {text!r} is not an http(s) URL or a host"])
        return cls(_norm(parts.hostname), None, _port(parts, text))

    def matches(self, endpoint):
        return (
            self.host == _norm(endpoint.host)
            and (self.scheme is None or self.scheme == endpoint.scheme)
            and (self.port is None or self.port == endpoint.port)
        )


def _split(url, text=None):
    """``urlsplit``, with a malformed URL (``http://[::1``) as one line instead of a traceback."""
    try:
        return urlsplit(url)
    except ValueError:
        raise ConfigError([f"{ALLOW_ENV} / --allow-endpoint: {text or url!r} is not an http(s) URL or a host"]) from None


def _norm(host):
    return host.strip("[]").rstrip(".").lower()


def _port(parts, text):
    try:
        return parts.port
    except ValueError:
        raise ConfigError([f"{ALLOW_ENV} / --allow-endpoint: {text!r} has an invalid port"]) from None


def known_endpoints_file(environ=None):
    """The operator's remembered confirmations: ``$XDG_CONFIG_HOME/syncprep/allowed-endpoints``."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "syncprep" / "allowed-endpoints"


class Allowance:
    """The endpoints the operator allows, and the warnings to show on every run.

    ``confirm(question) -> bool`` asks the operator at a terminal (None: never ask);
    confirmations are remembered in ``known_file`` and consulted only at a terminal,
    where the operator could be asked anyway. ``insecure_tls`` is the command-line
    flag that accepts ``cert_validation = false`` for a host that is not loopback.
    """

    def __init__(self, entries=(), confirm=None, known_file=None, insecure_tls=False, ca_bundle=None):
        self.entries = [e for e in entries if e is not None]
        self.confirm = confirm
        self.known_file = Path(known_file) if known_file else None
        self.insecure_tls = insecure_tls
        self.ca_bundle = ca_bundle
        self.warnings = []

    @classmethod
    def from_operator(cls, flags=(), environ=None, confirm=None, insecure_tls=False, ca_bundle=None):
        """From ``--allow-endpoint`` values and ``SYNCPREP_ALLOW_ENDPOINTS``."""
        environ = os.environ if environ is None else environ
        texts = [*flags, *environ.get(ALLOW_ENV, "").split(",")]
        entries = [Entry.parse(t) for text in texts for t in text.split(",")]
        known = known_endpoints_file(environ) if confirm is not None else None
        return cls(entries, confirm=confirm, known_file=known, insecure_tls=insecure_tls, ca_bundle=ca_bundle)

    def allowed(self, endpoint, default=False):
        return default or any(entry.matches(endpoint) for entry in self.entries) or endpoint.url in self._remembered()

    def require(self, endpoint, source, default=False):
        """Return if ``endpoint`` is allowed (or the operator allows it now); else one line, nothing sent."""
        if self.allowed(endpoint, default):
            return
        if self.confirm is not None:
            question = f"{source} sends credentials to {endpoint.what} at {endpoint.url}. Allow it (remembered for this user)?"
            if self.confirm(question):
                self._remember(endpoint.url)
                return
        raise ConfigError(
            [
                f"{source}: {endpoint.what} at {endpoint.url} is not an endpoint you allowed; nothing was sent. "
                f"If it is yours: --allow-endpoint {endpoint.url} or {ALLOW_ENV}={endpoint.url}"
            ]
        )

    def _remembered(self):
        if self.known_file is None:
            return set()
        try:
            return {line.strip() for line in self.known_file.read_text(encoding="utf-8").splitlines() if line.strip()}
        except OSError:
            return set()

    def _remember(self, url):
        from reconciler.files import make_private_dir, open_append_private

        make_private_dir(self.known_file.parent)
        with open_append_private(self.known_file) as fh:
            fh.write(url + "\n")
