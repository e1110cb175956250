"""A static bearer token from an environment variable, for pipelines that already hold one."""

from __future__ import annotations

import os

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
