"""Workload identity federation: sign in to Graph with a token the platform issues, no secret.

``auth = "workload-identity"`` in ``[target.graph]``. The app registration (``AZURE_CLIENT_ID``
or ``client_id``) trusts an issuer with a federated credential; the assertion is either

* the file in ``AZURE_FEDERATED_TOKEN_FILE`` (AKS, or any platform that writes one), read by
  azure-identity's own :class:`~azure.identity.WorkloadIdentityCredential`; or
* in GitHub Actions (``permissions: id-token: write``), a token fetched from
  ``ACTIONS_ID_TOKEN_REQUEST_URL`` with ``ACTIONS_ID_TOKEN_REQUEST_TOKEN`` for the audience
  ``api://AzureADTokenExchange``, handed to azure-identity's
  :class:`~azure.identity.ClientAssertionCredential` (as the azure/login action does).

Both sign in at the authority's token endpoint, which the operator allows like any other
(:func:`sign_in_endpoints`); GitHub's token URL is allowed by default only on GitHub's own
hosts (``*.actions.githubusercontent.com`` over https).
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit

from providers.loopback import is_loopback
from reconciler.errors import ProviderError

AUDIENCE = "api://AzureADTokenExchange"
GITHUB_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
GITHUB_HOST_SUFFIX = ".actions.githubusercontent.com"


def _ids(spec, environ):
    return spec.tenant_id or environ.get("AZURE_TENANT_ID") or None, spec.client_id or environ.get("AZURE_CLIENT_ID") or None


def check_configured(spec, environ=None):
    """One line when workload identity cannot work here; nothing is read out or sent."""
    environ = os.environ if environ is None else environ
    tenant, client = _ids(spec, environ)
    if not tenant or not client:
        missing = "AZURE_TENANT_ID (or tenant_id)" if not tenant else "AZURE_CLIENT_ID (or client_id)"
        raise ProviderError("graph", "sign-in", f"auth = workload-identity needs {missing}: the app registration that trusts the federated token")
    if environ.get(TOKEN_FILE):
        return
    if not environ.get(GITHUB_URL) or not environ.get(GITHUB_TOKEN):
        raise ProviderError(
            "graph",
            "sign-in",
            f"auth = workload-identity needs {TOKEN_FILE}, or in GitHub Actions the job's OIDC token "
            f"({GITHUB_URL} and {GITHUB_TOKEN}: give the job permissions: id-token: write)",
        )
    github_url(environ)


def github_url(environ):
    """The GitHub OIDC token URL, or None when a token file is used; https (http only on loopback)."""
    if environ.get(TOKEN_FILE) or not environ.get(GITHUB_URL):
        return None
    url = environ[GITHUB_URL].strip()
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError:
        host = None
    if not host or parts.scheme not in ("http", "https") or (parts.scheme == "http" and not is_loopback(host)):
        raise ProviderError("graph", "sign-in", f"{GITHUB_URL} is not an https URL (plain http only on loopback)")
    return url


def is_github_host(url):
    parts = urlsplit(url)
    return parts.scheme == "https" and parts.port in (None, 443) and (parts.hostname or "").lower().endswith(GITHUB_HOST_SUFFIX)


def federated_credential(spec, options, ca_bundle=None, environ=None):
    """azure-identity's credential for the federated token this environment has."""
    import azure.identity as identity

    environ = os.environ if environ is None else environ
    check_configured(spec, environ)
    tenant, client = _ids(spec, environ)
    if environ.get(TOKEN_FILE):
        return identity.WorkloadIdentityCredential(tenant_id=tenant, client_id=client, token_file_path=environ[TOKEN_FILE], **options)
    url, request_token = github_url(environ), environ[GITHUB_TOKEN]
    return identity.ClientAssertionCredential(tenant, client, lambda: github_assertion(url, request_token, ca_bundle), **options)


def github_assertion(url, request_token, ca_bundle=None, timeout=30.0):
    """The job's OIDC token for Entra ID (GitHub mints a new one on each call; they live minutes)."""
    import ssl
    import urllib.error
    import urllib.request

    separator = "&" if urlsplit(url).query else "?"
    request = urllib.request.Request(f"{url}{separator}audience={quote(AUDIENCE, safe='')}", headers={"Authorization": f"bearer {request_token}", "Accept": "application/json"})
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:  # noqa: S310 - https, or http on loopback (checked)
            value = json.loads(answer.read().decode("utf-8")).get("value")
    except urllib.error.HTTPError as exc:
        raise ProviderError("graph", "sign-in", f"GitHub's OIDC token endpoint answered HTTP {exc.code} (does the job have permissions: id-token: write?)") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ProviderError("graph", "sign-in", f"cannot reach GitHub's OIDC token endpoint: {getattr(exc, 'reason', exc)}") from None
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str) or not value:
        raise ProviderError("graph", "sign-in", "GitHub's OIDC token endpoint answered without a token")
    return value
