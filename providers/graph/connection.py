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
from reconciler.desired import GRAPH_AUTHS as AUTH_MODES
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
#: The auths that send a credential (a secret, a certificate's assertion, a federated token,
#: a device code) to the authority's token endpoint, which the operator must allow.
AUTHORITY_AUTHS = ("environment", "workload-identity", "device-code")


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


def authority_url(cloud, environ=None):
    """The authority's base URL: ``AZURE_AUTHORITY_HOST`` (azure-identity's own variable) or the cloud's."""
    environ = os.environ if environ is None else environ
    host = (environ.get("AZURE_AUTHORITY_HOST") or "").strip().rstrip("/")
    if not host:
        return f"https://{cloud.authority_host}"
    url = host if "://" in host else f"https://{host}"
    try:
        parts = urlsplit(url)
        valid = parts.scheme == "https" and bool(parts.hostname) and parts.port != 0 and not parts.username
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError([f"AZURE_AUTHORITY_HOST: {host!r} is not an https URL or host (azure-identity signs in only over https)"])
    return url


def sign_in_endpoints(spec, environ=None):
    """``(what, url, allowed by default)`` for each place the sign-in sends a credential.

    The authority's token endpoint (for the auths that send one there): a national cloud's own
    login host over https is allowed by default, any other (``AZURE_AUTHORITY_HOST``) only when
    the operator allows it. For workload identity in GitHub Actions, GitHub's OIDC token URL too
    (it is sent the job's request token). Managed identity asks the platform's local endpoint and
    the Azure CLI signs in where ``az login`` did: neither is in the file's or the variables' say.
    """
    environ = os.environ if environ is None else environ
    found = []
    if spec.auth in AUTHORITY_AUTHS:
        url = authority_url(CLOUDS[spec.cloud], environ)
        found.append(("Entra ID sign-in", url, is_cloud_authority(url)))
    if spec.auth == "workload-identity":
        from providers.graph.federation import github_url, is_github_host

        url = github_url(environ)
        if url:
            found.append(("GitHub's OIDC token endpoint", url, is_github_host(url)))
    return found


def is_cloud_authority(url):
    """True for a national cloud's own login host over https on 443 (allowed by default)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "https" and (port in (None, 443)) and (parts.hostname or "").lower() in {c.authority_host for c in CLOUDS.values()}


def check_credentials_configured(spec, environ=None):
    """Fail early, in one line, when the chosen auth cannot work at all (no secret is read out)."""
    environ = os.environ if environ is None else environ
    if spec.auth == "token-env" and not environ.get(spec.token_env):
        raise ProviderError("graph", "sign-in", f"auth = token-env but the environment variable {spec.token_env} is not set or empty")
    if spec.auth == "workload-identity":
        from providers.graph.federation import check_configured

        check_configured(spec, environ)
    if spec.auth == "azure-cli":
        import shutil

        names = ("az.cmd", "az") if sys.platform.startswith("win") else ("az",)
        if not any(shutil.which(name, path=environ.get("PATH")) for name in names):
            raise ProviderError("graph", "sign-in", "auth = azure-cli needs the Azure CLI (az) on PATH, signed in with az login")


def build_auth_provider(spec, endpoint, ca_bundle=None):
    """A kiota AuthenticationProvider for ``spec.auth`` that sends tokens only to ``endpoint``.

    ``ca_bundle`` (the operator's PEM) checks the token endpoint's certificate too.
    """
    from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider

    if spec.auth == "token-env":
        from providers.graph.auth import StaticTokenProvider

        return BaseBearerTokenAuthenticationProvider(StaticTokenProvider(spec.token_env, [endpoint.host]))
    from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider

    from providers.graph.auth import QuietFailures

    credential = QuietFailures(_credential(spec, endpoint.cloud, ca_bundle))
    return AzureIdentityAuthenticationProvider(credential, scopes=[endpoint.scope], allowed_hosts=[endpoint.host])


def _credential(spec, cloud, ca_bundle=None):
    import azure.identity as identity

    authority = authority_url(cloud)
    # azure-identity's own options: where the token endpoint is, and how its certificate is checked.
    # A host that is not a cloud's own has no instance discovery (it would ask login.microsoftonline.com).
    options = {"authority": authority}
    if ca_bundle:
        options["connection_verify"] = ca_bundle
    if not is_cloud_authority(authority):
        options["disable_instance_discovery"] = True
    if spec.auth == "environment":
        return identity.EnvironmentCredential(**options)
    if spec.auth == "workload-identity":
        from providers.graph.federation import federated_credential

        return federated_credential(spec, options, ca_bundle)
    if spec.auth == "azure-cli":
        from providers.graph.auth import ReusedToken

        # The Azure CLI signs in where `az login` did; azure-identity does not keep its tokens.
        return ReusedToken(identity.AzureCliCredential(tenant_id=spec.tenant_id or ""))
    if spec.auth == "managed-identity":
        return identity.ManagedIdentityCredential(client_id=spec.client_id) if spec.client_id else identity.ManagedIdentityCredential()
    from providers.graph.devicecode import device_code_credential

    return device_code_credential(spec, options, prompt=_device_code_prompt)


def _device_code_prompt(verification_uri, user_code, expires_on):
    sys.stderr.write(f"To sign in to Microsoft Graph, open {verification_uri} and enter the code {user_code}\n")
    sys.stderr.flush()
