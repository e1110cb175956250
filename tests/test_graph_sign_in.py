"""Signing in to Microsoft Graph as organisations do it (issue 17), through azure-identity itself.

The real credentials run end to end against a loopback Entra ID (tests/token_server.py: HTTPS,
the tenant's discovery document and token endpoint, GitHub's OIDC token URL) and the lab's
Graph emulator, which accepts only the access token that Entra ID issued: a client secret or
a certificate's signed assertion (``auth = "environment"``), a client assertion from GitHub Actions OIDC or from a federated
token file (``auth = "workload-identity"``), and the Azure CLI's token (``auth = "azure-cli"``,
with a stand-in ``az`` on PATH). The token endpoint is allowed like any other endpoint.
"""

import json
import os
import stat
import sys

import pytest

from conftest import EXAMPLE
from providers.endpoints import Allowance
from providers.factory import check_remote, sign_in_endpoints
from providers.graph import open_tenant
from providers.graph.auth import ReusedToken
from providers.lab import scenario
from providers.lab.graph_emulator import GraphEmulator
from providers.lab.host import LabHost
from reconciler.desired import GraphTargetSpec
from reconciler.errors import ConfigError, ProviderError
from reconciler.loader import load_desired
from reconciler.provider import UserSelection
from token_server import TokenServer

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ACCESS = "access-token-from-entra-7c1d"
SECRET = "client-secret-value-2b9f"
ASSERTION = "eyJhbGciOiJSUzI1NiJ9.github-oidc-assertion.sig"
REQUEST_TOKEN = "actions-request-token-44aa"
HYBRID = UserSelection(frozenset(), (scenario.HYBRID_OU,))
GITHUB_VARIABLES = ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "AZURE_FEDERATED_TOKEN_FILE")


@pytest.fixture
def entra(tmp_path, monkeypatch):
    for name in (*GITHUB_VARIABLES, "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "SYNCPREP_ALLOW_ENDPOINTS", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with TokenServer(tmp_path, TENANT, CLIENT, ACCESS, secret=SECRET, assertion=ASSERTION, github_request_token=REQUEST_TOKEN) as server:
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", server.url)
        yield server


@pytest.fixture
def graph():
    with GraphEmulator(LabHost(scenario.build("default", users=4)), token=ACCESS) as emulator:
        yield emulator


def observe(spec, ca_bundle):
    tenant = open_tenant(spec, ca_bundle=ca_bundle, max_attempts=1)
    try:
        return tenant.observe(HYBRID)
    finally:
        tenant.close()


def token_requests(entra):
    return [form for method, path, _headers, form in entra.requests if method == "POST" and path.endswith("/oauth2/v2.0/token")]


# ---------------------------------------------------------------------------- the flows, end to end


def test_client_secret_signs_in_at_the_token_endpoint_and_graph_takes_the_token(entra, graph, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    observed = observe(GraphTargetSpec(endpoint=graph.base_url, auth="environment"), entra.ca_bundle)
    assert len(observed.users) > 0 and graph.counters["unauthorized"] == 0
    (form,) = token_requests(entra)
    assert form["client_secret"] == SECRET and form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://graph.microsoft.com/.default"


def test_github_actions_oidc_is_exchanged_for_a_token_with_a_client_assertion(entra, graph, monkeypatch):
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", entra.github_url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    observed = observe(GraphTargetSpec(endpoint=graph.base_url, auth="workload-identity"), entra.ca_bundle)
    assert len(observed.users) > 0 and graph.counters["unauthorized"] == 0
    github = [(path, headers) for method, path, headers, _form in entra.requests if path.startswith("/github/")]
    assert len(github) == 1 and "audience=api%3A%2F%2FAzureADTokenExchange" in github[0][0]
    assert github[0][1]["Authorization"] == f"bearer {REQUEST_TOKEN}"
    (form,) = token_requests(entra)
    assert form["client_assertion"] == ASSERTION and form["client_assertion_type"].endswith("jwt-bearer")
    assert "client_secret" not in form
    # The request token went to GitHub's URL only, never to the token endpoint.
    assert REQUEST_TOKEN not in json.dumps(form)


def test_a_federated_token_file_signs_in_through_workload_identity_credential(entra, graph, monkeypatch, tmp_path):
    token_file = tmp_path / "federated-token"
    token_file.write_text(ASSERTION)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    observed = observe(GraphTargetSpec(endpoint=graph.base_url, auth="workload-identity"), entra.ca_bundle)
    assert len(observed.users) > 0
    (form,) = token_requests(entra)
    assert form["client_assertion"] == ASSERTION
    assert not [path for _m, path, _h, _f in entra.requests if path.startswith("/github/")]


def test_a_wrong_secret_is_one_line_without_the_secret(entra, graph, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret-91")
    with pytest.raises(ProviderError) as caught:
        observe(GraphTargetSpec(endpoint=graph.base_url, auth="environment"), entra.ca_bundle)
    message = str(caught.value)
    assert "\n" not in message and "not-the-secret-91" not in message
    assert "could not get a token" in message and "AADSTS7000215" in message
    assert graph.counters["http_requests"] == 0


def test_github_refusing_the_oidc_token_says_what_the_job_lacks(entra, graph, monkeypatch):
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", entra.github_url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "a-stale-request-token")
    with pytest.raises(ProviderError, match=r"answered HTTP 403 \(does the job have permissions: id-token: write\?\)"):
        observe(GraphTargetSpec(endpoint=graph.base_url, auth="workload-identity"), entra.ca_bundle)
    assert token_requests(entra) == []


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "needs AZURE_FEDERATED_TOKEN_FILE, or in GitHub Actions the job's OIDC token"),
        ({"ACTIONS_ID_TOKEN_REQUEST_URL": "http://token.example.com/x", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}, "is not an https URL"),
        ({"AZURE_CLIENT_ID": ""}, "needs AZURE_CLIENT_ID (or client_id)"),
    ],
)
def test_workload_identity_that_cannot_work_is_one_line_before_anything_is_sent(entra, monkeypatch, environ, message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ProviderError) as caught:
        open_tenant(GraphTargetSpec(auth="workload-identity"))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert entra.requests == []


# ---------------------------------------------------------------------------- the Azure CLI


def fake_az(folder, expires_on, calls):
    """A stand-in ``az`` that answers ``az account get-access-token`` as the real one does."""
    script = folder / "az"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print(json.dumps({{'accessToken': {ACCESS!r}, 'expires_on': {expires_on}, 'tokenType': 'Bearer'}}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_azure_cli_sign_in_is_reused_and_asked_once(graph, monkeypatch, tmp_path):
    import time

    bin_dir, calls = tmp_path / "bin", tmp_path / "az-calls"
    bin_dir.mkdir()
    fake_az(bin_dir, int(time.time()) + 3600, calls)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    tenant = open_tenant(GraphTargetSpec(endpoint=graph.base_url, auth="azure-cli", tenant_id=TENANT), max_attempts=1)
    try:
        tenant.observe(HYBRID)
        tenant.observe(HYBRID)
    finally:
        tenant.close()
    assert graph.counters["unauthorized"] == 0 and graph.counters["http_requests"] > 2
    (line,) = calls.read_text().splitlines()  # one az call for every request of both observations
    assert line == f"account get-access-token --output json --resource https://graph.microsoft.com --tenant {TENANT}"


def test_azure_cli_missing_is_one_line_before_anything_is_sent(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProviderError, match=r"auth = azure-cli needs the Azure CLI \(az\) on PATH, signed in with az login"):
        open_tenant(GraphTargetSpec(auth="azure-cli"))


def test_a_reused_token_is_renewed_five_minutes_before_it_expires():
    from azure.core.credentials import AccessToken

    now = [1000.0]
    made = []

    class Credential:
        def get_token(self, *scopes, **kwargs):
            assert not kwargs  # the Azure CLI takes no claims or CAE flag from kiota
            made.append(scopes)
            return AccessToken(f"t{len(made)}", int(now[0]) + 3600)

    reused = ReusedToken(Credential(), clock=lambda: now[0])
    assert reused.get_token("s", claims=None, enable_cae=False).token == "t1"
    now[0] += 3600 - 301
    assert reused.get_token("s").token == "t1"
    now[0] += 2
    assert reused.get_token("s").token == "t2"
    assert "t2" not in repr(reused)


# ---------------------------------------------------------------------------- where credentials may go


def remote(tmp_path, auth="environment"):
    body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
    path = tmp_path / "remote.toml"
    path.write_text(
        f'[target]\nkind = "remote"\n[target.graph]\nauth = "{auth}"\n'
        f'[target.entra_connect]\nhost = "aadc01.contoso.com"\n\n[scheduler]{body}'
    )
    return load_desired(path).target


def test_a_token_endpoint_the_operator_did_not_allow_gets_nothing(entra, monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    spec = remote(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_remote(spec, "remote.toml", Allowance.from_operator(["aadc01.contoso.com"], environ={}))
    (line,) = caught.value.problems
    assert f"Entra ID sign-in at {entra.url}" in line and "nothing was sent" in line
    assert entra.requests == []
    check_remote(spec, "remote.toml", Allowance.from_operator(["aadc01.contoso.com", entra.url], environ={}))


def test_the_clouds_login_hosts_and_github_are_allowed_by_default_and_nothing_else(monkeypatch, tmp_path):
    for name in (*GITHUB_VARIABLES, "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert [(e.url, d) for e, d in sign_in_endpoints(remote(tmp_path).graph)] == [("https://login.microsoftonline.com:443", True)]
    assert sign_in_endpoints(remote(tmp_path, "azure-cli").graph) == []
    assert sign_in_endpoints(remote(tmp_path, "token-env").graph) == []
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://pipelinesghubeus2.actions.githubusercontent.com/abc/idtoken?api-version=2.0")
    found = [(e.what, e.host, d) for e, d in sign_in_endpoints(remote(tmp_path, "workload-identity").graph)]
    assert found == [("Entra ID sign-in", "login.microsoftonline.com", True), ("GitHub's OIDC token endpoint", "pipelinesghubeus2.actions.githubusercontent.com", True)]
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://actions.githubusercontent.com.evil.example/x")
    assert [d for _e, d in sign_in_endpoints(remote(tmp_path, "workload-identity").graph)] == [True, False]
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "login.microsoftonline.us")
    assert [d for _e, d in sign_in_endpoints(remote(tmp_path).graph)] == [True]
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com.evil.example")
    assert [d for _e, d in sign_in_endpoints(remote(tmp_path).graph)] == [False]
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://127.0.0.1:8080")
    with pytest.raises(ConfigError, match="AZURE_AUTHORITY_HOST: 'http://127.0.0.1:8080' is not an https URL"):
        sign_in_endpoints(remote(tmp_path).graph)


@pytest.fixture
def served_remote(served, monkeypatch, tmp_path):
    """(desired-state file, Graph emulator, the options allowing Graph and WinRM): a served lab."""
    lab, endpoint, _server = served()
    address, port = endpoint.address
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "CONTOSO\\syncadmin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "served-Pa55word!")
    with GraphEmulator(endpoint.host, token=ACCESS) as graph:
        body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
        desired = tmp_path / "remote.toml"
        desired.write_text(
            f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph.base_url}"\nauth = "environment"\n'
            f'[target.entra_connect]\nhost = "{address}"\nport = {port}\nssl = false\nauth = "basic"\npoll_seconds = 0.5\n'
            f"\n[scheduler]{body}"
        )
        yield desired, graph, ["--allow-endpoint", graph.base_url.rsplit("/", 1)[0], "--allow-endpoint", f"{address}:{port}"]


def test_a_failed_sign_in_through_the_cli_is_one_line(cli, entra, served_remote, monkeypatch):
    """azure-identity logs each failed get_token at WARNING, twice per try: not at the default level;
    and a sign-in that fails is not "the recycle bin could not be read" (it fails every read)."""
    import logging

    desired, _graph, allow = served_remote
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret-91")
    allow = [*allow, "--ca-bundle", entra.ca_bundle, "--allow-endpoint", entra.url]
    code, _out, err = cli("plan", desired, *allow)
    assert code == 1 and "AADSTS7000215" in err and "not-the-secret-91" not in err
    # One line: neither azure-identity's warnings nor a "recycle bin could not be read" first.
    assert err.count("\n") == 1 and err.startswith("error: graph: sign-in: could not get a token"), err
    # Put back after the call: the logger is as it was, and -v shows azure-identity's own lines.
    assert logging.getLogger("azure.identity").level == logging.NOTSET
    code, _out, err = cli("-v", "plan", desired, *allow)
    assert code == 1 and "azure.identity" in err and "not-the-secret-91" not in err


def test_plan_through_the_cli_signs_in_at_an_allowed_token_endpoint_only(cli, entra, served_remote, monkeypatch):
    """The whole command: the secret reaches the loopback Entra ID once it is allowed, never before."""
    desired, graph, allow = served_remote
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    allow = [*allow, "--ca-bundle", entra.ca_bundle]
    code, out, err = cli("plan", desired, *allow)
    assert code == 1 and err.count("\n") == 1 and f"--allow-endpoint {entra.url}" in err, err
    assert entra.requests == [] and graph.counters["http_requests"] == 0
    code, out, err = cli("plan", desired, *allow, "--allow-endpoint", entra.url)
    assert code == 0, err
    assert "In from AD - User Exchange" in out and SECRET not in out + err and ACCESS not in out + err
    assert [form["client_secret"] for form in token_requests(entra)] == [SECRET]
    assert graph.counters["unauthorized"] == 0


# ---------------------------------------------------------------------------- device code, remembered


@pytest.fixture
def device_code(entra, graph, monkeypatch, tmp_path, capsys):
    """``run(token_cache, encrypted) -> stderr``: one command's Graph sign-in and observation."""
    import providers.graph.devicecode as devicecode

    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def run(token_cache=None, encrypted=False):
        monkeypatch.setattr(devicecode, "encryption_available", lambda: encrypted)
        spec = GraphTargetSpec(endpoint=graph.base_url, auth="device-code", tenant_id=TENANT, client_id=CLIENT, token_cache=token_cache)
        assert len(observe(spec, entra.ca_bundle).users) > 0
        return capsys.readouterr().err

    return run


def device_codes(entra):
    return len([path for method, path, _h, _f in entra.requests if path.endswith("/devicecode")])


def test_device_code_asks_once_and_the_next_command_does_not_ask_again(device_code, entra, tmp_path):
    first = device_code("unencrypted")
    assert first.count("enter the code") == 1 and device_codes(entra) == 1
    second = device_code("unencrypted")
    assert "enter the code" not in second and device_codes(entra) == 1
    # The operator's opt-in is said on every run; the kept files are the user's alone.
    for err in (first, second):
        assert 'kept unencrypted in ~/.IdentityService/syncprep.cae and .nocae (readable only by you), as token_cache = "unencrypted"' in err
    kept = list((tmp_path / "config" / "syncprep" / "graph-sign-in").iterdir()) + list((tmp_path / "home" / ".IdentityService").iterdir())
    assert kept and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in kept)
    (record,) = (tmp_path / "config" / "syncprep" / "graph-sign-in").iterdir()
    assert "admin@contoso.onmicrosoft.com" in record.read_text() and ACCESS not in record.read_text()


def test_without_encryption_and_without_the_opt_in_nothing_is_written_and_it_says_so(device_code, entra, tmp_path):
    first = device_code()  # token_cache unset: "encrypted"
    assert "the Graph sign-in is not remembered: this system cannot encrypt the token cache" in first
    assert 'set token_cache = "unencrypted"' in first
    device_code()
    assert device_codes(entra) == 2
    assert not (tmp_path / "home" / ".IdentityService").exists()
    assert not (tmp_path / "config" / "syncprep" / "graph-sign-in").exists()


def test_token_cache_memory_remembers_nothing_and_says_nothing(device_code, entra, tmp_path):
    assert "Note:" not in device_code("memory", encrypted=True)
    device_code("memory", encrypted=True)
    assert device_codes(entra) == 2 and not (tmp_path / "config" / "syncprep" / "graph-sign-in").exists()


def test_encryption_is_available_where_the_os_protects_the_cache(monkeypatch):
    from providers.graph.devicecode import encryption_available

    monkeypatch.setitem(sys.modules, "msal_extensions.libsecret", None)  # no PyGObject/libsecret
    assert encryption_available("linux") is False
    assert encryption_available("darwin") is True  # the Keychain
    monkeypatch.setenv("LOCALAPPDATA", "C:\\Users\\admin\\AppData\\Local")
    assert encryption_available("win32") is True  # DPAPI


@pytest.mark.parametrize(
    "graph_keys, message",
    [
        ('auth = "device-code"\ntoken_cache = "disk"', "target.graph.token_cache: must be one of encrypted, unencrypted, memory"),
        ('auth = "environment"\ntoken_cache = "unencrypted"', "only device-code sign-in keeps tokens between commands"),
        ('auth = "workload_identity"', "unknown auth 'workload_identity'; choose one of environment, workload-identity, azure-cli"),
    ],
)
def test_bad_graph_sign_in_keys_are_one_line_with_the_key_path(cli, tmp_path, graph_keys, message):
    body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
    desired = tmp_path / "x.toml"
    desired.write_text(f'[target]\nkind = "remote"\n[target.graph]\n{graph_keys}\n[target.entra_connect]\nhost = "aadc01.contoso.com"\n\n[scheduler]{body}')
    code, _out, err = cli("validate", desired)
    assert code == 1 and message in err and "Traceback" not in err, err


def app_certificate(folder):
    """A self-signed RSA certificate with its key in one PEM file, as AZURE_CLIENT_CERTIFICATE_PATH takes it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncprep app")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
    cert = cert.not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    path = folder / "app.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()) + pem)
    return path, pem


def test_a_client_certificate_signs_the_assertion_the_token_endpoint_checks(graph, monkeypatch, tmp_path):
    """auth = "environment" with AZURE_CLIENT_CERTIFICATE_PATH: MSAL signs a client assertion with the key."""
    path, pem = app_certificate(tmp_path)
    for name in (*GITHUB_VARIABLES, "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with TokenServer(tmp_path, TENANT, CLIENT, ACCESS, certificate=pem) as entra:
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", entra.url)
        monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(path))
        assert len(observe(GraphTargetSpec(endpoint=graph.base_url, auth="environment"), entra.ca_bundle).users) > 0
        (form,) = token_requests(entra)
        assert form["client_assertion_type"].endswith("jwt-bearer") and "client_secret" not in form
        assert entra._signed(form["client_assertion"])
        # The same flow with another certificate's key is refused by the endpoint.
        (tmp_path / "other").mkdir()
        other, _pem = app_certificate(tmp_path / "other")
        monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(other))
        with pytest.raises(ProviderError, match="AADSTS7000215"):
            observe(GraphTargetSpec(endpoint=graph.base_url, auth="environment"), entra.ca_bundle)


# ---------------------------------------------------------------------------- nothing secret in the log


def test_no_sign_in_secret_reaches_a_debug_log(entra, graph, monkeypatch, tmp_path, capsys):
    """GitHub's request token, the assertion, the client secret, Entra ID's tokens: at DEBUG, with
    azure-identity, MSAL and azure-core logging all they log, none reaches stderr or the log file."""
    import logging

    from reconciler.cli import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    log_file = tmp_path / "debug.log"
    monkeypatch.setenv("AZURE_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", entra.github_url)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    try:
        logs.configure(logging.DEBUG, log_file=log_file)
        for auth, extra in (("environment", {}), ("workload-identity", {}), ("device-code", {"token_cache": "unencrypted", "tenant_id": TENANT})):
            observe(GraphTargetSpec(endpoint=graph.base_url, auth=auth, **extra), entra.ca_bundle)
        monkeypatch.setenv("AZURE_CLIENT_SECRET", "a-wrong-secret-0042")
        with pytest.raises(ProviderError):
            observe(GraphTargetSpec(endpoint=graph.base_url, auth="environment"), entra.ca_bundle)
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        logs._installed.clear()
        root.setLevel(level)
    written = log_file.read_text() + capsys.readouterr().err
    assert "azure.identity" in written and "msal" in written  # the libraries did log at DEBUG
    from reconciler.redact import scrub

    assert scrub(f"GET {entra.github_url} failed for {REQUEST_TOKEN}") == f"GET {entra.github_url} failed for ***"
    leaked = [s for s in (SECRET, "a-wrong-secret-0042", REQUEST_TOKEN, ASSERTION, ACCESS, "refresh-token-1", "device-code-1") if s in written]
    assert not leaked, [line for line in written.splitlines() if any(s in line for s in leaked)][:5]
