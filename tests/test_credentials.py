"""Where credentials may go (issue 15): the operator's allowance, never the desired-state file's say.

Each attack is reproduced on loopback against a capture server that records what it
receives; each is refused in one line with nothing sent.
"""

import pytest

from capture import CaptureServer
from conftest import EXAMPLE
from reconciler.errors import ConfigError

SECRETS = {
    "SYNCPREP_GRAPH_TOKEN": "graph-token-6f1e0b",
    "SYNCPREP_WINRM_USERNAME": "winrm-admin",
    "SYNCPREP_WINRM_PASSWORD": "winrm-pass-93c2aa",
    "AZURE_CLIENT_SECRET": "azure-client-secret-41d7",
    "GITHUB_TOKEN": "ghp_repository-token-0c55",
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SYNCPREP_ALLOW_ENDPOINTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


@pytest.fixture
def captures():
    with CaptureServer() as graph, CaptureServer() as winrm:
        yield graph, winrm


def remote_file(path, graph_url, winrm_port, graph_extra="", winrm_extra="", host="127.0.0.1", ssl="false", auth="basic"):
    body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
    path.write_text(
        f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph_url}/v1.0"\nauth = "token-env"\npoll_seconds = 0.5\n{graph_extra}'
        f'[target.entra_connect]\nhost = "{host}"\nport = {winrm_port}\nssl = {ssl}\nauth = "{auth}"\npoll_seconds = 0.5\n{winrm_extra}'
        f"\n[scheduler]{body}"
    )
    return path


def nothing_sent(*captures):
    return all(not c.requests for c in captures)


def one_line(err):
    return err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------- the attacks


def test_a_desired_state_file_cannot_send_credentials_to_a_host_the_operator_did_not_allow(cli, env, captures, tmp_path):
    graph, winrm = captures
    desired = remote_file(tmp_path / "pr.toml", graph.url, winrm.port)
    for command in (("plan", desired), ("drift", desired), ("apply", desired, "--auto-approve"), ("export", "--from", desired)):
        code, out, err = cli(*command)
        assert code == 1 and one_line(err), (command, err)
        assert "is not an endpoint you allowed; nothing was sent" in err and f"--allow-endpoint {graph.url}" in err
        assert nothing_sent(graph, winrm), command
        assert not any(value in out + err for value in SECRETS.values())


def test_loopback_is_no_exception_but_the_allowance_lets_it_through(cli, env, captures, tmp_path):
    """The capture servers do record what reaches them: allowed, the credentials arrive."""
    graph, winrm = captures
    desired = remote_file(tmp_path / "lab.toml", graph.url, winrm.port)
    code, _out, err = cli("plan", desired, "--allow-endpoint", graph.url, "--allow-endpoint", f"127.0.0.1:{winrm.port}")
    assert code == 1  # the capture servers answer 401
    assert graph.received(SECRETS["SYNCPREP_GRAPH_TOKEN"]) or winrm.received(SECRETS["SYNCPREP_WINRM_PASSWORD"])


def test_allowing_one_endpoint_does_not_allow_the_other(cli, env, captures, tmp_path):
    graph, winrm = captures
    desired = remote_file(tmp_path / "pr.toml", graph.url, winrm.port)
    env.setenv("SYNCPREP_ALLOW_ENDPOINTS", f"{graph.url}/v1.0")
    code, _out, err = cli("plan", desired)
    assert code == 1 and f"WinRM at http://127.0.0.1:{winrm.port} is not an endpoint you allowed" in err
    assert nothing_sent(graph, winrm)


@pytest.mark.parametrize(
    "graph_extra, winrm_extra, key",
    [
        ('token_env = "AZURE_CLIENT_SECRET"\n', "", "target.graph.token_env"),
        ('token_env = "GITHUB_TOKEN"\n', "", "target.graph.token_env"),
        ('token_env = "SYNCPREP_PLAN_SIGNING_KEY"\n', "", "target.graph.token_env"),
        ("", 'password_env = "GITHUB_TOKEN"\n', "target.entra_connect.password_env"),
        ("", 'username_env = "AZURE_CLIENT_SECRET"\n', "target.entra_connect.username_env"),
    ],
)
def test_credentials_come_only_from_syncprep_s_own_variables(cli, env, captures, tmp_path, graph_extra, winrm_extra, key):
    graph, winrm = captures
    desired = remote_file(tmp_path / "pr.toml", graph.url, winrm.port, graph_extra, winrm_extra)
    # Even with both endpoints allowed, the file cannot pick which secret goes there.
    env.setenv("SYNCPREP_ALLOW_ENDPOINTS", f"{graph.url},{winrm.url}")
    code, _out, err = cli("plan", desired)
    assert code == 1 and one_line(err) and f"{key}: must be SYNCPREP_" in err
    assert nothing_sent(graph, winrm)
    code, _out, err = cli("validate", desired)
    assert code == 1 and key in err


def test_a_suffixed_syncprep_variable_is_accepted(tmp_path):
    from reconciler.loader import loads_desired

    text = remote_file(tmp_path / "x.toml", "https://graph.example.com", 5986, 'token_env = "SYNCPREP_GRAPH_TOKEN_PROD"\n', 'password_env = "SYNCPREP_WINRM_PASSWORD_AADC01"\n').read_text()
    desired = loads_desired(text)
    assert desired.target.graph.token_env == "SYNCPREP_GRAPH_TOKEN_PROD"


def test_cert_validation_off_for_a_real_host_needs_the_flag_and_warns_on_every_run(cli, env, tmp_path):
    desired = remote_file(tmp_path / "pr.toml", "https://graph.microsoft.com", 5986, winrm_extra="cert_validation = false\n", host="aadc01.invalid", ssl="true")
    env.setenv("SYNCPREP_ALLOW_ENDPOINTS", "aadc01.invalid")
    code, _out, err = cli("plan", desired)
    assert code == 1 and one_line(err) and "cert_validation = false" in err and "--no-cert-validation" in err and "nothing was sent" in err
    for _ in range(2):
        code, _out, err = cli("plan", desired, "--no-cert-validation")
        assert "warning: the TLS certificate of WinRM at https://aadc01.invalid:5986 is not checked" in err
        assert code == 1  # aadc01.invalid does not resolve


def test_the_national_clouds_graph_is_allowed_by_default_and_nothing_else():
    from providers.endpoints import Allowance

    allowance = Allowance()
    from providers.factory import graph_endpoint
    from reconciler.desired import GraphTargetSpec

    for cloud in ("global", "usgov", "usgov-dod", "china"):
        endpoint, default = graph_endpoint(GraphTargetSpec(cloud=cloud))
        assert default
        allowance.require(endpoint, "x.toml", default=default)
    for url in ("https://graph.microsoft.com.evil.example/v1.0", "https://graph.microsoft.com:8443/v1.0", "http://127.0.0.1:8080/v1.0"):
        endpoint, default = graph_endpoint(GraphTargetSpec(endpoint=url))
        assert not default
        with pytest.raises(ConfigError, match="not an endpoint you allowed"):
            allowance.require(endpoint, "x.toml", default=default)


def test_allowance_entries():
    from providers.endpoints import Endpoint, Entry

    winrm = Endpoint("WinRM", "https", "aadc01.contoso.com", 5986)
    assert Entry.parse("aadc01.contoso.com").matches(winrm)
    assert Entry.parse("AADC01.contoso.com.").matches(winrm)
    assert Entry.parse("aadc01.contoso.com:5986").matches(winrm)
    assert not Entry.parse("aadc01.contoso.com:5985").matches(winrm)
    assert Entry.parse("https://aadc01.contoso.com:5986/wsman").matches(winrm)
    assert not Entry.parse("http://aadc01.contoso.com:5986").matches(winrm)
    assert not Entry.parse("https://aadc01.contoso.com").matches(winrm)  # port 443
    assert not Entry.parse("contoso.com").matches(winrm)
    assert Entry.parse("[::1]:5985").matches(Endpoint("WinRM", "http", "::1", 5985))
    for bad in ("ftp://x", "https://", "user@host", "host/path"):
        with pytest.raises(ConfigError):
            Entry.parse(bad)


def test_a_confirmation_at_a_terminal_is_remembered_per_user(tmp_path):
    from providers.endpoints import Allowance, Endpoint

    endpoint = Endpoint("WinRM", "https", "aadc01.contoso.com", 5986)
    asked = []

    def confirm(question):
        asked.append(question)
        return True

    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    Allowance.from_operator(environ=environ, confirm=confirm).require(endpoint, "x.toml")
    Allowance.from_operator(environ=environ, confirm=confirm).require(endpoint, "x.toml")
    assert len(asked) == 1 and "WinRM at https://aadc01.contoso.com:5986" in asked[0]
    remembered = tmp_path / "syncprep" / "allowed-endpoints"
    assert remembered.read_text() == "https://aadc01.contoso.com:5986\n" and remembered.stat().st_mode & 0o777 == 0o600
    # Without a terminal nobody can confirm, and what was remembered does not count either.
    with pytest.raises(ConfigError):
        Allowance.from_operator(environ=environ).require(endpoint, "x.toml")
    # Refused at the terminal: nothing remembered, nothing sent.
    other = Endpoint("WinRM", "https", "other.contoso.com", 5986)
    with pytest.raises(ConfigError):
        Allowance.from_operator(environ=environ, confirm=lambda q: False).require(other, "x.toml")
    assert "other" not in remembered.read_text()


def test_ntlm_over_http_requires_message_encryption():
    from providers.entraconnect.session import PsrpSession

    session = PsrpSession("aadc01.contoso.com", ssl=False, auth="ntlm", username="u", password="p")
    seen = {}

    class FakeWSMan:
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop here")

    import pypsrp.wsman

    original = pypsrp.wsman.WSMan
    pypsrp.wsman.WSMan = FakeWSMan
    try:
        with pytest.raises(RuntimeError):
            session._open()
    finally:
        pypsrp.wsman.WSMan = original
    assert seen["encryption"] == "always"


def test_a_ca_bundle_checks_both_ends_against_the_operator_s_ca(cli, env, tmp_path):
    from providers.endpoints import Allowance
    from providers.factory import open_target
    from reconciler.loader import load_desired

    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    desired = load_desired(remote_file(tmp_path / "x.toml", "https://graph.microsoft.com", 5986, host="aadc01.contoso.com", ssl="true"))
    allowance = Allowance.from_operator(["aadc01.contoso.com"], environ={}, ca_bundle=str(bundle))
    target = open_target(desired.target, source="x.toml", allowance=allowance)
    assert target.server.session.cert_validation == str(bundle)
    assert target.tenant._tuning["ca_bundle"] == str(bundle)
    code, _out, err = cli("plan", tmp_path / "x.toml", "--ca-bundle", tmp_path / "missing.pem")
    assert code == 1 and one_line(err) and "missing.pem is not a file" in err


# A secret pasted by mistake where a variable's name belongs: the error says what is wrong
# without the value (review 2). Every ``*_env`` setting of the spec classes is tried, so a new one
# is covered too.
PASTED = ("Winter2026!Pa55", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "hunter2", "ghp_0c55repositorytoken")
STATE_BLOB = '[state]\nbackend = "azureblob"\naccount_url = "https://contosostate.blob.core.windows.net"\ncontainer = "syncprep"\n'


def _env_settings():
    import attrs

    from reconciler.desired import EntraConnectTargetSpec, GraphTargetSpec, StateSpec

    sections = (("graph", GraphTargetSpec), ("entra_connect", EntraConnectTargetSpec), ("state", StateSpec))
    return [(section, field.name) for section, cls in sections for field in attrs.fields(cls) if field.name.endswith("_env")]


def test_every_env_setting_is_checked_here():
    assert {f"{section}.{key}" for section, key in _env_settings()} == {
        "graph.token_env",
        "entra_connect.username_env",
        "entra_connect.password_env",
        "state.token_env",
    }


@pytest.mark.parametrize("section, key", _env_settings())
@pytest.mark.parametrize("pasted", PASTED)
def test_a_secret_pasted_into_an_env_setting_is_never_echoed(cli, env, tmp_path, section, key, pasted):
    line = f'{key} = "{pasted}"\n'
    extra = {"graph": (line, ""), "entra_connect": ("", line)}.get(section, ("", ""))
    desired = remote_file(tmp_path / "pasted.toml", "https://graph.example.com", 5986, *extra, host="aadc01.contoso.com", ssl="true")
    if section == "state":
        desired.write_text(desired.read_text() + STATE_BLOB + line)
    where = f"target.{section}.{key}" if section != "state" else f"state.{key}"
    for command in (("validate", desired), ("plan", desired), ("-vv", "plan", desired)):
        code, out, err = cli(*command)
        assert code == 1 and one_line(err) and f"{where}: must be SYNCPREP_" in err, (command, err)
        assert pasted not in out + err, (command, err)
    assert "not shown" in err or "not another variable" in err


@pytest.mark.parametrize("section, key", [(s, k) for s, k in _env_settings() if k != "username_env"])
def test_the_value_of_every_secret_env_setting_s_variable_is_scrubbed(section, key):
    """What a token_env or password_env names holds a secret: its value is masked wherever it
    appears (a log record, a server's error text), with a suffix too (review 2: the storage
    token's variable was not among them)."""
    import attrs

    from reconciler.desired import EntraConnectTargetSpec, GraphTargetSpec, StateSpec
    from reconciler.redact import scrub

    cls = {"graph": GraphTargetSpec, "entra_connect": EntraConnectTargetSpec, "state": StateSpec}[section]
    variable = attrs.fields_dict(cls)[key].default
    for name in (variable, f"{variable}_PROD"):
        assert scrub("sent opaque-value-7c1d9e to the endpoint", environ={name: "opaque-value-7c1d9e"}) == "sent *** to the endpoint", name
