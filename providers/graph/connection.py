"""Where Graph is and how to sign in to it: clouds, endpoints and credentials.

Only the standard library is imported here; azure-identity and kiota are
imported inside :func:`build_auth_provider`, when the first request is made.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from attrs import frozen

from providers.loopback import is_loopback
from reconciler.errors import ConfigError, ProviderError


@frozen
class Cloud:
    graph_host: str
    authority_host: str


#: National clouds by name (learn.microsoft.com/graph/deployments).
CLOUDS = {
    "global": Cloud("graph.microsoft.com", "login.microsoftonline.com"),
    "usgov": Cloud("graph.microsoft.us", "login.microsoftonline.us"),
    "usgov-dod": Cloud("dod-graph.microsoft.us", "login.microsoftonline.us"),
    "china": Cloud("microsoftgraph.chinacloudapi.cn", "login.chinacloudapi.cn"),
}
AUTH_MODES = ("environment", "managed-identity", "device-code", "token-env")
#: "Microsoft Graph Command Line Tools", the public client device-code sign-in uses by default.
DEFAULT_PUBLIC_CLIENT_ID = "14d82eec-204b-4c2f-b7e8-296a70dab67e"


@frozen
class Endpoint:
    """The resolved base URL (``https://graph.microsoft.com/v1.0``) and the cloud for tokens."""

    base_url: str
    host: str
    cloud: Cloud

    @property
    def scope(self):
        # Tokens are for Graph of the cloud, also when an explicit endpoint (a proxy) fronts it.
        return f"https://{self.cloud.graph_host}/.default"


def resolve_endpoint(spec):
    """The :class:`Endpoint` for a :class:`~reconciler.desired.GraphTargetSpec`; ConfigError if invalid."""
    cloud = CLOUDS.get(spec.cloud)
    if cloud is None:
        raise ConfigError([f"target.graph.cloud: unknown cloud {spec.cloud!r}; choose one of {', '.join(CLOUDS)}"])
    if spec.auth not in AUTH_MODES:
        raise ConfigError([f"target.graph.auth: unknown auth {spec.auth!r}; choose one of {', '.join(AUTH_MODES)}"])
    if not spec.endpoint:
        return Endpoint(f"https://{cloud.graph_host}/v1.0", cloud.graph_host, cloud)
    try:
        parts = urlsplit(spec.endpoint)
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError([f"target.graph.endpoint: {spec.endpoint!r} is not a valid URL"]) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError([f"target.graph.endpoint: {spec.endpoint!r} is not an http(s) URL"])
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(["target.graph.endpoint: give only scheme, host, port and path (no credentials or query)"])
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            [f"target.graph.endpoint: plain http is allowed only to a loopback address (127.0.0.1, ::1, localhost), not {host}; use https"]
        )
    path = parts.path.rstrip("/") or "/v1.0"
    netloc = parts.netloc
    return Endpoint(f"{parts.scheme}://{netloc}{path}", host, cloud)


def check_credentials_configured(spec):
    """Fail early, in one line, when the chosen auth cannot work at all (no secret is read out)."""
    if spec.auth == "token-env" and not os.environ.get(spec.token_env):
        raise ProviderError("graph", "sign-in", f"auth = token-env but the environment variable {spec.token_env} is not set or empty")


def build_auth_provider(spec, endpoint):
    """A kiota AuthenticationProvider for ``spec.auth`` that sends tokens only to ``endpoint``."""
    from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider

    if spec.auth == "token-env":
        from providers.graph.auth import StaticTokenProvider

        return BaseBearerTokenAuthenticationProvider(StaticTokenProvider(spec.token_env, [endpoint.host]))
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider

    credential = _credential(spec, endpoint.cloud)
    return AzureIdentityAuthenticationProvider(credential, scopes=[endpoint.scope], allowed_hosts=[endpoint.host])


def _credential(spec, cloud):
    import azure.identity as identity

    authority = os.environ.get("AZURE_AUTHORITY_HOST") or cloud.authority_host
    if spec.auth == "environment":
        return identity.EnvironmentCredential(authority=authority)
    if spec.auth == "managed-identity":
        return identity.ManagedIdentityCredential(client_id=spec.client_id) if spec.client_id else identity.ManagedIdentityCredential()
    # device-code: an interactive run; the instructions go to stderr, never into an Outcome.
    return identity.DeviceCodeCredential(
        client_id=spec.client_id or DEFAULT_PUBLIC_CLIENT_ID,
        tenant_id=spec.tenant_id or "organizations",
        authority=authority,
        prompt_callback=_device_code_prompt,
    )


def _device_code_prompt(verification_uri, user_code, expires_on):
    sys.stderr.write(f"To sign in to Microsoft Graph, open {verification_uri} and enter the code {user_code}\n")
    sys.stderr.flush()
