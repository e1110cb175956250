"""Tokens that azure-identity does not keep: a static bearer token from an environment variable
(pipelines that already hold one), and the Azure CLI's, kept until it is about to expire."""

from __future__ import annotations

import logging
import os
import threading
import time

from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator

from reconciler.errors import ProviderError


class StaticTokenProvider(AccessTokenProvider):
    """Reads the token from ``env_var`` on each request (so a rotated token is picked up).

    The token goes only to ``allowed_hosts``; it is never logged or put in an error.
    """

    def __init__(self, env_var, allowed_hosts):
        self._env_var = env_var
        self._validator = AllowedHostsValidator(list(allowed_hosts))

    async def get_authorization_token(self, uri, additional_authentication_context={}):  # noqa: B006 - kiota's signature
        if not self._validator.is_url_host_valid(uri):
            return ""
        token = os.environ.get(self._env_var, "").strip()
        if not token:
            raise ProviderError("graph", "sign-in", f"the environment variable {self._env_var} is not set or empty")
        return token

    def get_allowed_hosts_validator(self):
        return self._validator

    def __repr__(self):
        return f"StaticTokenProvider(env_var={self._env_var!r}, token=***)"


class ReusedToken:
    """A credential that keeps the token another one made until five minutes before it expires.

    For azure-identity's AzureCliCredential, which runs ``az account get-access-token`` on
    every call and keeps nothing: kiota asks for a token on every request.
    """

    MARGIN = 300

    def __init__(self, credential, clock=time.time):
        self._credential = credential
        self._clock = clock
        self._tokens = {}
        self._lock = threading.Lock()

    def get_token(self, *scopes, **kwargs):
        with self._lock:
            token = self._tokens.get(scopes)
            if token is None or token.expires_on - self.MARGIN <= self._clock():
                # kiota passes claims/enable_cae; the Azure CLI takes neither (claims: no challenge here).
                token = self._credential.get_token(*scopes)
                self._tokens[scopes] = token
            return token

    def close(self):
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    def __repr__(self):
        return f"ReusedToken({type(self._credential).__name__}, token=***)"


class QuietFailures:
    """An azure-identity credential whose failures are said once, by the provider.

    azure-identity logs every failed get_token at WARNING, once for the credential and once for
    its wrapper on each try, and then raises; the provider turns that into one error line with
    the same reason. So at the default level its logger is set to ERROR for the call (and put
    back after it); with -v (INFO or DEBUG) its records show as they are.
    """

    LOGGER = "azure.identity"

    def __init__(self, credential):
        self._credential = credential

    def get_token(self, *scopes, **kwargs):
        if logging.getLogger().isEnabledFor(logging.INFO):
            return self._credential.get_token(*scopes, **kwargs)
        logger = logging.getLogger(self.LOGGER)
        saved = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return self._credential.get_token(*scopes, **kwargs)
        finally:
            logger.setLevel(saved)

    def close(self):
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()

    def __repr__(self):
        return f"QuietFailures({self._credential!r})"
