"""WinRM sign-in as organisations do it (issue 17): Kerberos and CredSSP as extras that say in
one line when they are missing, the SPN override and the timeouts as [target.entra_connect] keys."""

import http.server
import threading

import pytest

from capture import CaptureServer
from conftest import EXAMPLE
from providers.entraconnect import open_server
from providers.entraconnect.session import PsrpSession, auth_package_problem
from reconciler.errors import ProviderError
from reconciler.loader import load_desired

BODY = EXAMPLE.read_text().split("[scheduler]", 1)[1]


def remote_file(path, winrm_port, winrm_extra="", auth="kerberos"):
    path.write_text(
        '[target]\nkind = "remote"\n[target.graph]\nauth = "token-env"\n'
        f'[target.entra_connect]\nhost = "127.0.0.1"\nport = {winrm_port}\nssl = false\nauth = "{auth}"\n{winrm_extra}'
        f"\n[scheduler]{BODY}"
    )
    return path


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", "graph-token-x")
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "CONTOSO\\syncadmin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "winrm-pass-93c2aa")
    monkeypatch.delenv("SYNCPREP_ALLOW_ENDPOINTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


def without(monkeypatch, module):
    """Make ``import module`` fail as it does when the extra is not installed (whatever is installed here)."""
    monkeypatch.setitem(__import__("sys").modules, module, None)


@pytest.mark.parametrize("auth, module, extra", [("kerberos", "gssapi", "kerberos"), ("credssp", "requests_credssp", "credssp")])
def test_a_missing_extra_is_one_line_naming_the_pip_install_and_nothing_is_sent(cli, env, tmp_path, auth, module, extra):
    without(env, module)
    with CaptureServer() as winrm:
        desired = remote_file(tmp_path / "x.toml", winrm.port, auth=auth)
        code, out, err = cli("plan", desired, "--allow-endpoint", f"127.0.0.1:{winrm.port}", "--allow-endpoint", "graph.microsoft.com")
        assert code == 1, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"pip install 'syncprep[{extra}]'" in err and f'auth = "{auth}"' in err
        assert not winrm.requests
        assert "winrm-pass-93c2aa" not in out + err


def test_negotiate_without_a_password_needs_kerberos_with_one_does_not(env, tmp_path):
    without(env, "gssapi")
    spec = load_desired(remote_file(tmp_path / "x.toml", 5985, auth="negotiate")).target.entra_connect
    env.delenv("SYNCPREP_WINRM_PASSWORD")
    env.delenv("SYNCPREP_WINRM_USERNAME")
    with pytest.raises(ProviderError, match=r"without a password \(the Kerberos ticket\) needs the kerberos extra"):
        open_server(spec, interactive=False)
    env.setenv("SYNCPREP_WINRM_USERNAME", "CONTOSO\\syncadmin")
    env.setenv("SYNCPREP_WINRM_PASSWORD", "p")
    assert open_server(spec, interactive=False).session.auth == "negotiate"  # NTLM through Negotiate needs nothing more


def test_the_check_follows_the_platform_and_what_is_installed(monkeypatch):
    import types

    without(monkeypatch, "gssapi")
    without(monkeypatch, "requests_credssp")
    assert "syncprep[kerberos]" in auth_package_problem("kerberos", platform="linux")
    assert auth_package_problem("kerberos", platform="win32") is None  # SSPI
    assert "syncprep[credssp]" in auth_package_problem("credssp", platform="win32")
    assert auth_package_problem("negotiate", uses_ticket=False, platform="linux") is None
    for auth in ("ntlm", "basic", "certificate"):
        assert auth_package_problem(auth, uses_ticket=True, platform="linux") is None
    monkeypatch.setitem(__import__("sys").modules, "gssapi", types.ModuleType("gssapi"))
    monkeypatch.setitem(__import__("sys").modules, "requests_credssp", types.ModuleType("requests_credssp"))
    assert auth_package_problem("kerberos", platform="linux") is None
    assert auth_package_problem("credssp", platform="linux") is None


def test_an_import_error_inside_pypsrp_is_one_line_too(monkeypatch):
    """The safety net for a session made without open_server: pypsrp raises ImportError late."""
    without(monkeypatch, "requests_credssp")
    session = PsrpSession("127.0.0.1", port=1, ssl=False, auth="credssp", username="u", password="p")

    class FailingWSMan:
        def __init__(self, *args, **kwargs):
            raise ImportError("Cannot use CredSSP auth as requests-credssp is not installed")

    import pypsrp.wsman

    monkeypatch.setattr(pypsrp.wsman, "WSMan", FailingWSMan)
    with pytest.raises(ProviderError, match=r"pip install 'syncprep\[credssp\]'"):
        session.invoke("Get-Date")


# ---------------------------------------------------------------------------- SPN and timeouts


class NegotiateChallenge:
    """A WinRM stand-in that answers every request 401 ``WWW-Authenticate: Negotiate``."""

    def __enter__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("WWW-Authenticate", "Negotiate")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize(
    "extra, service, hostname",
    [("", "host", "127.0.0.1"), ('negotiate_service = "HTTP"\nnegotiate_hostname_override = "aadc01.contoso.com"\n', "HTTP", "aadc01.contoso.com")],
    ids=["default-spn", "overridden-spn"],
)
def test_the_spn_pypsrp_asks_for_follows_the_keys(env, tmp_path, monkeypatch, extra, service, hostname):
    import pypsrp.negotiate

    asked = {}

    def fake_client(username, password, hostname=None, service=None, **kwargs):
        asked.update(hostname=hostname, service=service, protocol=kwargs.get("protocol"))
        raise ValueError("stop: the SPN is what this test is after")

    monkeypatch.setattr(pypsrp.negotiate.spnego, "client", fake_client)
    with NegotiateChallenge() as server:
        spec = load_desired(remote_file(tmp_path / "x.toml", server.port, extra, auth="negotiate")).target.entra_connect
        with pytest.raises(Exception, match="stop"):
            open_server(spec, interactive=False).session._open()
    assert asked == {"hostname": hostname, "service": service, "protocol": "negotiate"}


def test_the_timeouts_reach_pypsrp(env, tmp_path, monkeypatch):
    import pypsrp.wsman

    seen = {}

    class FakeWSMan:
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(pypsrp.wsman, "WSMan", FakeWSMan)
    extra = "connection_timeout_seconds = 7.5\noperation_timeout_seconds = 120\n"
    spec = load_desired(remote_file(tmp_path / "x.toml", 5985, extra, auth="ntlm")).target.entra_connect
    with pytest.raises(RuntimeError):
        open_server(spec, interactive=False).session._open()
    assert (seen["connection_timeout"], seen["operation_timeout"], seen["read_timeout"]) == (7.5, 120, 130)


@pytest.mark.parametrize(
    "extra, auth, message",
    [
        ('negotiate_service = "HTTP"\n', "basic", "target.entra_connect.negotiate_service: applies only to auth = negotiate, kerberos, ntlm"),
        ('negotiate_hostname_override = "a b"\n', "kerberos", "is not a service or host name"),
        ("connection_timeout_seconds = 0\n", "ntlm", "target.entra_connect.connection_timeout_seconds: must be above 0"),
        ("operation_timeout_seconds = 1.5\n", "ntlm", "target.entra_connect.operation_timeout_seconds"),
        ("", "kerberoz", "unknown auth 'kerberoz'; choose one of negotiate, kerberos"),
    ],
)
def test_bad_winrm_keys_are_one_line_with_the_key_path(cli, tmp_path, extra, auth, message):
    desired = remote_file(tmp_path / "x.toml", 5985, extra, auth=auth)
    code, _out, err = cli("validate", desired)
    assert code == 1 and message in err and "Traceback" not in err, err
