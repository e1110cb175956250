"""Command-line conventions (issue 17): options before or after the verb, one line per error
whatever a server sends, logging switches end to end."""

import http.server
import json
import threading

import pytest

from conftest import EXAMPLE

TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6.eyJhdWQiOiIwMDAwMDAwMy.conventions-sig"


def test_no_color_before_the_verb_works_as_after_it(cli, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # as a CI log viewer that renders colour would
    _code, coloured, _ = cli("plan", EXAMPLE)
    assert "\x1b[" in coloured
    _code, after, _ = cli("plan", EXAMPLE, "--no-color")
    _code, before, _ = cli("--no-color", "plan", EXAMPLE)
    assert "\x1b[" not in before and before == after


def test_verbose_before_and_after_the_verb_add_up(cli, monkeypatch, tmp_path):
    from reconciler.cli.command import build_parser, merge_common

    args = merge_common(build_parser().parse_args(["-v", "plan", "x.toml", "-v", "--log-file", "run.log"]))
    assert args.verbose == 2 and args.log_file == "run.log" and not args.no_color
    args = merge_common(build_parser().parse_args(["--log-file", "a.log", "--log-level", "info", "validate", "x"]))
    assert args.log_file == "a.log" and args.log_level == "INFO"


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    """Graph's answer to a malformed token: its message holds a line break."""

    def do_GET(self):
        message = "Access token validation failure.\nInvalid audience. CorrelationId: 8c1f\r\n\x1b[31mred"
        body = json.dumps({"error": {"code": "InvalidAuthenticationToken", "message": message}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def graph_401():
    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that hung up after the 401 (concurrent requests): not the test's concern

    server = Quiet(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1.0"
    server.shutdown()
    server.server_close()


def remote_desired(tmp_path, graph_url, winrm_port):
    body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
    text = (
        f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph_url}"\nauth = "token-env"\n'
        f'[target.entra_connect]\nhost = "127.0.0.1"\nport = {winrm_port}\nssl = false\nauth = "basic"\n\n[scheduler]{body}'
    )
    path = tmp_path / "remote.toml"
    path.write_text(text)
    return path


def test_a_graph_401_whose_message_holds_line_breaks_prints_as_one_line(cli, served, graph_401, monkeypatch, tmp_path):
    _lab, endpoint, _server = served()
    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", TOKEN)
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "CONTOSO\\syncadmin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "served-Pa55word!")
    path = remote_desired(tmp_path, graph_401, endpoint._server.server_address[1])
    code, out, err = cli("plan", path, "--allow-endpoint", graph_401, "--allow-endpoint", f"http://127.0.0.1:{endpoint._server.server_address[1]}")
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Access token validation failure. Invalid audience. CorrelationId: 8c1f [31mred" in lines[0]
    assert "\x1b" not in err


def test_log_file_and_verbose_end_to_end_keep_the_token_out(cli, served, graph_401, monkeypatch, tmp_path):
    """-vv --log-file through a real failing Graph call: records are written, no secret is."""
    _lab, endpoint, _server = served()
    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", TOKEN)
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "CONTOSO\\syncadmin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "served-Pa55word!")
    path = remote_desired(tmp_path, graph_401, endpoint._server.server_address[1])
    log = tmp_path / "diag.log"
    code, out, err = cli("-vv", "plan", path, "--log-file", log, "--allow-endpoint", graph_401, "--allow-endpoint", f"http://127.0.0.1:{endpoint._server.server_address[1]}")
    assert code == 1
    text = log.read_text()
    assert "DEBUG" in text and "syncprep.graph" in text
    for secret in (TOKEN, "served-Pa55word!"):
        assert secret not in text + out + err


def test_an_unknown_log_level_in_the_environment_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("SYNCPREP_LOG", "verbose")
    code, _out, err = cli("validate", EXAMPLE)
    assert code == 1
    assert err == "error: SYNCPREP_LOG='verbose': choose debug, info, warning or error\n"


def test_a_name_the_console_cannot_encode_does_not_end_in_a_traceback():
    """Windows PowerShell 5.1 redirecting to a file gives Python a cp1252 stdout."""
    import io

    from reconciler.cli.command import tolerate_encoding

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp1252")
    tolerate_encoding(stream)
    stream.write("Дмитрий@contoso.com jérôme@contoso.com\n")
    stream.flush()
    assert raw.getvalue() == "???????@contoso.com jérôme@contoso.com\n".encode("cp1252")
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    tolerate_encoding(utf8)
    assert utf8.errors == "strict"


def test_a_step_failure_holding_line_breaks_is_one_line_in_the_apply_output():
    import io

    from rich.console import Console

    from reconciler.apply import ApplyReport, Event, Status, StepResult
    from reconciler.render import ApplyRenderer

    buffer = io.StringIO()
    renderer = ApplyRenderer(Console(file=buffer, no_color=True, width=300), 1)
    message = "graph: licences: Microsoft Graph rejected the credentials (401: Access token validation failure.\nInvalid audience.)"
    renderer(Event("failed", message=message))
    renderer(Event("note", message="could not resume the sync scheduler: line one\r\nline two"))
    renderer.report(ApplyReport((StepResult("license.assign", Status.FAILED, message, (("user01@contoso.com", "a\nb"),)),)))
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert "      failed: graph: licences: Microsoft Graph rejected the credentials (401: Access token validation failure. Invalid audience.)" in lines
    assert "could not resume the sync scheduler: line one line two" in lines
    assert "  user01@contoso.com: a b (license.assign)" in lines
    assert len(lines) == 5, lines
