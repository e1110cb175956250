"""Device-code sign-in that is remembered between commands.

azure-identity keeps the tokens in a persistent cache (``TokenCachePersistenceOptions``,
msal-extensions: DPAPI on Windows, the Keychain on macOS, libsecret on Linux) and finds the
account again from an :class:`~azure.identity.AuthenticationRecord` (not secret: who signed in
where), which syncprep keeps in ``$XDG_CONFIG_HOME/syncprep/graph-sign-in/`` (0600). So the
first command asks for the code, and the next ones do not until the refresh token expires.

``[target.graph] token_cache``: ``"encrypted"`` (the default) keeps the tokens only where the
OS encrypts them; where it cannot (Linux without libsecret, as on a server or over SSH) the
sign-in is not remembered and syncprep says so. ``"unencrypted"`` is the operator's opt-in to a
plain file readable only by them (``~/.IdentityService/syncprep.cae``) when encryption is not
possible, said on every run. ``"memory"`` remembers nothing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path

from reconciler.errors import ProviderError

#: "Microsoft Graph Command Line Tools", the public client device-code sign-in uses by default.
DEFAULT_PUBLIC_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"
CACHE_NAME = "syncprep"


def encryption_available(platform=None):
    """Whether msal-extensions can encrypt the token cache here (a trial write on Linux)."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        return "LOCALAPPDATA" in os.environ
    if platform.startswith("darwin"):
        return True
    if platform.startswith("linux"):
        try:
            from msal_extensions.libsecret import trial_run

            trial_run()
        except Exception:  # noqa: BLE001 - ImportError (no PyGObject), no keyring, no D-Bus session: all mean "cannot"
            return False
        return True
    return False


def cache_plan(mode, encrypted, notice):
    """(TokenCachePersistenceOptions keywords or None) for ``mode``; says what it falls back to."""
    if mode == "memory":
        return None
    if encrypted:
        return {"name": CACHE_NAME}
    if mode == "unencrypted":
        notice(
            "the Graph sign-in is kept unencrypted in ~/.IdentityService/syncprep.cae and .nocae (readable only by you), "
            'as token_cache = "unencrypted" allows: this system cannot encrypt it'
        )
        return {"name": CACHE_NAME, "allow_unencrypted_storage": True}
    notice(
        "the Graph sign-in is not remembered: this system cannot encrypt the token cache (no libsecret keyring); "
        'set token_cache = "unencrypted" in [target.graph] to keep it in a file readable only by you'
    )
    return None


def record_file(authority, tenant, client, environ=None):
    """Where the AuthenticationRecord for this authority, tenant and client is kept."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    key = hashlib.sha256(f"{authority}|{tenant}|{client}".encode()).hexdigest()[:16]
    return Path(base) / "syncprep" / "graph-sign-in" / f"{key}.json"


def device_code_credential(spec, options, prompt, notice=None, encrypted=None):
    """DeviceCodeCredential for ``spec``; remembered between commands unless ``token_cache`` says not."""
    import azure.identity as identity

    notice = notice or _stderr
    client = spec.client_id or DEFAULT_PUBLIC_CLIENT_ID
    tenant = spec.tenant_id or "organizations"
    encrypted = encryption_available() if encrypted is None else encrypted
    persistence = cache_plan(spec.token_cache or "encrypted", encrypted, notice)

    def make(record=None):
        extra = dict(options)
        if persistence is not None:
            extra["cache_persistence_options"] = identity.TokenCachePersistenceOptions(**persistence)
        if record is not None:
            # The record names the authority, tenant and client it was made with (the file's key).
            extra["authentication_record"] = record
            extra.pop("authority", None)
        return identity.DeviceCodeCredential(client_id=client, tenant_id=tenant, prompt_callback=prompt, **extra)

    if persistence is None:
        return make()
    return RememberedSignIn(make, record_file(options.get("authority"), tenant, client))


class RememberedSignIn:
    """Builds the credential on first use: from the kept record (no prompt while the cache holds
    a token or refresh token), or by asking once and keeping the record of who signed in."""

    def __init__(self, make, path):
        self._make = make
        self.path = Path(path)
        self._credential = None
        self._lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self._lock:
            if self._credential is None:
                self._credential = self._open(scopes, kwargs.get("enable_cae", False))
        return self._credential.get_token(*scopes, **kwargs)

    def _open(self, scopes, enable_cae):
        from azure.identity import AuthenticationRecord

        record = None
        try:
            record = AuthenticationRecord.deserialize(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            _stderr(f"the kept Graph sign-in {self.path} is unreadable; signing in again")
        credential = self._make(record)
        if record is None:
            # As get_token will ask (kiota asks for CAE tokens, which are cached apart): one prompt.
            record = credential.authenticate(scopes=list(scopes), enable_cae=enable_cae)
            self._keep(record)
        return credential

    def _keep(self, record):
        from reconciler.files import make_private_dir, write_private

        try:
            make_private_dir(self.path.parent)
            write_private(self.path, record.serialize())
        except OSError as exc:
            raise ProviderError("graph", "sign-in", f"cannot keep the sign-in in {self.path}: {exc.strerror or exc}") from None

    def close(self):
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    def __repr__(self):
        return f"RememberedSignIn({self.path}, token=***)"


def _stderr(text):
    sys.stderr.write(f"Note: {text}\n")
    sys.stderr.flush()
