"""Nothing secret in diagnostics (issue 15): HTTP/2 header blocks at DEBUG, and server error
texts that echo the Authorization header."""

import base64
import http.server
import json
import logging
import threading

import pytest

from providers.lab import scenario
from reconciler.provider import UserSelection

TOKEN = "eyJ0eXAiOiJKV1Qi.diagnostics-token-5c3b9e.sig"
HYBRID = UserSelection(frozenset(), (scenario.HYBRID_OU,))


@pytest.fixture
def debug_logging(capsys):
    """syncprep's own --log-level DEBUG, on the captured stderr; conftest's autouse
    ``_logging_as_it_was`` undoes it after the test."""
    from reconciler.cli import logs

    logs.configure(logging.DEBUG)
    yield capsys


def h2_exchange(authorization):
    """A request's headers through h2 and hpack, both ways: what httpx does over HTTP/2."""
    import h2.config
    import h2.connection

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    headers = [(":method", "GET"), (":path", "/v1.0/users"), (":scheme", "https"), (":authority", "graph.microsoft.com"), ("authorization", authorization)]
    client.send_headers(1, headers, end_stream=True)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    events = server.receive_data(client.data_to_send())
    return [e for e in events if hasattr(e, "headers")]


def test_http2_header_blocks_never_reach_the_log_at_debug(debug_logging):
    import providers.graph.transport  # noqa: F401 - installs the filters, as any Graph run does

    received = h2_exchange(f"Bearer {TOKEN}")
    assert received and (b"authorization", f"Bearer {TOKEN}".encode()) in received[0].headers
    err = debug_logging.readouterr().err
    assert "hpack" not in err, "hpack's records hold the header block, encoded (the token decodes from it) or decoded"
    assert TOKEN not in err


def test_a_log_record_holding_a_credential_is_scrubbed(debug_logging, monkeypatch):
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "admin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "winrm-pass-1f2e")
    log = logging.getLogger("some.library")
    log.debug("request headers: %s", {"Authorization": f"Bearer {TOKEN}"})
    log.debug("sending Authorization: Basic %s", base64.b64encode(b"admin:winrm-pass-1f2e").decode())
    log.debug("password is %s", "winrm-pass-1f2e")
    try:
        raise ValueError(f"failed with {TOKEN}")
    except ValueError:
        log.debug("and a traceback", exc_info=True)
    err = debug_logging.readouterr().err
    assert err.count("DEBUG some.library") == 4
    for secret in (TOKEN, "winrm-pass-1f2e", base64.b64encode(b"admin:winrm-pass-1f2e").decode()):
        assert secret not in err


class _Echo(http.server.BaseHTTPRequestHandler):
    """A server (or a proxy) whose error text echoes the request, Authorization included."""

    def do_GET(self):
        body = json.dumps({"error": {"code": "BadRequest", "message": f"Invalid request; headers: Authorization: {self.headers['Authorization']}"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_graph_error_text_echoing_the_authorization_header_is_scrubbed(monkeypatch):
    from providers.graph import open_tenant
    from reconciler.desired import GraphTargetSpec
    from reconciler.errors import ProviderError

    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", TOKEN)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    tenant = open_tenant(GraphTargetSpec(endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1.0", auth="token-env"), backoff=0.005, max_attempts=2)
    try:
        with pytest.raises(ProviderError) as caught:
            tenant.observe(HYBRID)
    finally:
        tenant.close()
        server.shutdown()
        server.server_close()
    text = str(caught.value)
    assert "Invalid request; headers: Authorization: ***" in text and TOKEN not in text
    assert "diagnostics-token" not in text


def test_a_winrm_fault_echoing_the_authorization_header_is_scrubbed():
    from pypsrp.exceptions import WSManFaultError

    from providers.entraconnect.session import PsrpSession

    basic = base64.b64encode(b"admin:winrm-pass-1f2e").decode()
    session = PsrpSession("127.0.0.1", ssl=False, auth="basic", username="admin", password="winrm-pass-1f2e")
    fault = WSManFaultError(400, "w:InvalidHeader", f"The header Authorization: Basic {basic} is invalid", "provider", "path", "fault")
    error = session._map(fault, "observe")
    assert basic not in str(error) and "Authorization: ***" in str(error)
