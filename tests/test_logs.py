"""Diagnostics (issue 17): levels from -v, --log-level and the environment; stderr or a file;
and no secret in any log at any level, through any handler."""

import base64
import io
import logging
import warnings

import pytest

from reconciler.cli import logs
from reconciler.errors import ReconcilerError

TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2dyYXBo.c2lnbmF0dXJl"
PASSWORD = "winrm-pass-9d8c7b"
CLIENT_SECRET = "client-secret-Q~7f6e5d"
COOKIE = "fpc=AkSession123xyz"
BASIC = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, PASSWORD, CLIENT_SECRET, COOKIE, BASIC, "AkSession123xyz", "opaque-token-not-a-jwt-5f4e")


@pytest.fixture
def secret_environment(monkeypatch):
    monkeypatch.setenv("SYNCPREP_WINRM_USERNAME", "admin")
    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", PASSWORD)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SYNCPREP_GRAPH_TOKEN", "opaque-token-not-a-jwt-5f4e")


def emit_secrets(level):
    """Every way a credential has been seen reaching a log, at ``level``."""
    lib = logging.getLogger("some.http.library")
    lib.log(level, "request headers: %s", {"Authorization": f"Bearer {TOKEN}", "Cookie": COOKIE})
    lib.log(level, "send_request_headers: [(b'authorization', b'Bearer %s'), (b'cookie', b'%s')]", TOKEN, COOKIE)
    lib.log(level, "response headers: [(b'Set-Cookie', b'%s; path=/; secure')]", COOKIE)
    lib.log(level, "Authorization: Basic %s", BASIC)
    lib.log(level, "Authorization: Negotiate %s", "TlRMTVNTUAADAAAAGAAYAHIAAAAYABgAigAAAA==")
    lib.log(level, "POST /oauth2/v2.0/token body=client_id=x&client_secret=%s&grant_type=client_credentials", CLIENT_SECRET)
    lib.log(level, "token endpoint answered %s", {"access_token": TOKEN, "token_type": "Bearer"})
    lib.log(level, "the password is %s and the token %s", PASSWORD, "opaque-token-not-a-jwt-5f4e")
    try:
        raise ValueError(f"connect failed with Authorization: Bearer {TOKEN}")
    except ValueError:
        lib.log(level, "with a traceback", exc_info=True)
    lib.log(level, "a stack", stack_info=True, extra={})
    # HTTP/2 header blocks: hpack logs them encoded (Huffman: no mask can find the token) and decoded.
    logging.getLogger("hpack.hpack").log(level, "Encoding %s", base64.b64encode(TOKEN.encode()))
    logging.getLogger("hpack.hpack").log(level, "Decoded %s", (b"authorization", f"Bearer {TOKEN}".encode()))
    logging.getLogger("h2.connection").log(level, "headers frame %s", TOKEN)
    logging.getLogger("syncprep.graph").log(level, "marker: record at level %d was logged", level)


ALL_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


@pytest.mark.parametrize("configured", ["debug", "info", "warning", "error"])
def test_no_secret_reaches_stderr_or_the_log_file_at_any_level(configured, secret_environment, capsys, tmp_path):
    log_file = tmp_path / "syncprep.log"
    logs.configure(logs.LEVELS[configured], log_file=log_file)
    for level in ALL_LEVELS:
        emit_secrets(level)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # As in a command's own process: warnings go to logging (pytest's own capture, or an
        # earlier test's, may stand in between).
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.warn(f"retrying with Authorization: Bearer {TOKEN} and password {PASSWORD}")
    written = log_file.read_text() + capsys.readouterr().err
    leaked = [secret for secret in SECRETS if secret in written]
    assert not leaked, f"secrets in the log at {configured}: {leaked}"
    # The records themselves got through (a filter that drops everything would pass the above).
    shown = [level for level in ALL_LEVELS if f"marker: record at level {level} was logged" in written]
    assert shown == [level for level in ALL_LEVELS if level >= logs.LEVELS[configured]]
    assert "Bearer ***" in written or "Authorization: ***" in written
    if logs.LEVELS[configured] <= logging.WARNING:
        assert "UserWarning: retrying with Authorization: ***" in written
    if configured == "debug":
        assert "hpack" not in written and "h2.connection" not in written


def test_a_handler_a_library_installed_itself_is_scrubbed_too(secret_environment):
    own = io.StringIO()
    library = logging.getLogger("library.with.own.handler")
    handler = logging.StreamHandler(own)
    library.addHandler(handler)
    try:
        logs.configure(logging.DEBUG)
        library.debug("Authorization: Bearer %s password=%s", TOKEN, PASSWORD)
    finally:
        library.removeHandler(handler)
    assert TOKEN not in own.getvalue() and PASSWORD not in own.getvalue()
    assert "Authorization: ***" in own.getvalue()


def test_without_any_switch_warnings_still_show_and_are_scrubbed(secret_environment, capsys):
    logs.configure(logs.level_for())
    logging.getLogger("azure.identity").info("not shown")
    logging.getLogger("azure.identity").warning("token %s refused", TOKEN)
    err = capsys.readouterr().err
    assert err == "WARNING azure.identity: token *** refused\n"


def test_the_log_file_takes_the_level_and_stderr_keeps_the_warnings(capsys, tmp_path):
    log_file = tmp_path / "run.log"
    logs.configure(logging.DEBUG, log_file=log_file)
    logging.getLogger("syncprep.apply").debug("step started")
    logging.getLogger("syncprep.apply").warning("scheduler left off")
    assert capsys.readouterr().err == "WARNING syncprep.apply: scheduler left off\n"
    text = log_file.read_text()
    assert "DEBUG syncprep.apply: step started" in text and "WARNING syncprep.apply: scheduler left off" in text
    assert log_file.stat().st_mode & 0o777 == 0o600


def test_configuring_again_replaces_the_handlers(capsys):
    logs.configure(logging.INFO)
    logs.configure(logging.INFO)
    logging.getLogger("syncprep").info("once")
    assert capsys.readouterr().err == "INFO syncprep: once\n"


@pytest.mark.parametrize(
    "verbose, option, environ, level",
    [
        (0, None, {}, logging.WARNING),
        (1, None, {}, logging.INFO),
        (2, None, {}, logging.DEBUG),
        (3, None, {}, logging.DEBUG),
        (0, "DEBUG", {}, logging.DEBUG),
        (0, None, {"SYNCPREP_LOG": "debug"}, logging.DEBUG),
        (0, None, {"SYNCPREP_LOG": "Info"}, logging.INFO),
        (0, None, {"SYNCPREP_LOG_LEVEL": "DEBUG"}, logging.DEBUG),
        (0, None, {"SYNCPREP_LOG": "error", "SYNCPREP_LOG_LEVEL": "DEBUG"}, logging.WARNING),
        (2, None, {"SYNCPREP_LOG": "error"}, logging.DEBUG),
        (1, "ERROR", {}, logging.INFO),
    ],
)
def test_the_most_verbose_request_wins(verbose, option, environ, level):
    assert logs.level_for(verbose, option, environ) == level


def test_an_unknown_level_is_one_line():
    with pytest.raises(ReconcilerError, match=r"^SYNCPREP_LOG='loud': choose debug, info, warning or error$"):
        logs.level_for(environ={"SYNCPREP_LOG": "loud"})


@pytest.mark.parametrize("where", ["", "some.http.library", "hpack", "h2", "py.warnings"])
def test_a_handler_added_after_configure_sees_only_scrubbed_records(where, secret_environment):
    """A library that installs its handler later (pypsrp's PYPSRP_LOG_CFG runs dictConfig when
    the WinRM provider imports it) gets no record unscrubbed (review 2, finding 5)."""
    logs.configure(logging.WARNING)
    own = io.StringIO()
    handler = logging.StreamHandler(own)
    logger = logging.getLogger(where or None)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        for each in ALL_LEVELS:
            emit_secrets(each)
            logging.getLogger("hpack.huffman").log(each, "Decoded %s", (b"authorization", f"Bearer {TOKEN}".encode()))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.captureWarnings(False)
            logging.captureWarnings(True)
            warnings.warn(f"retrying with Authorization: Bearer {TOKEN} and password {PASSWORD}")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    written = own.getvalue()
    leaked = [secret for secret in SECRETS if secret in written]
    assert not leaked, f"secrets through a handler on {where or 'the root'} added after configure: {leaked}"
    if where in ("", "some.http.library"):
        assert "the password is *** and the token ***" in written  # the records did get through
    if where == "py.warnings":
        assert "UserWarning: retrying with Authorization: ***" in written


def test_pypsrp_s_own_log_configuration_is_scrubbed_too(tmp_path):
    """The review's reproduction, in a process of its own: PYPSRP_LOG_CFG makes pypsrp install a
    DEBUG handler when it is imported, after syncprep configured logging."""
    import json
    import os
    import subprocess
    import sys

    config = tmp_path / "logcfg.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
                "loggers": {"pypsrp": {"level": "DEBUG", "handlers": ["console"]}},
            }
        )
    )
    script = (
        "import logging\nfrom reconciler.cli import logs\nlogs.configure(logging.WARNING)\nimport pypsrp.wsman\n"
        f"logging.getLogger('pypsrp.wsman').debug('auth password=%s header Authorization: Basic %s', {PASSWORD!r}, {BASIC!r})\n"
    )
    environ = dict(os.environ, PYPSRP_LOG_CFG=str(config), SYNCPREP_WINRM_USERNAME="admin", SYNCPREP_WINRM_PASSWORD=PASSWORD)
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    assert "auth password=*** header Authorization: ***" in done.stderr
    assert PASSWORD not in done.stderr and BASIC not in done.stderr


def test_the_scrubbing_record_factory_keeps_one_installed_before_and_is_installed_once(secret_environment):
    made = logging.getLogRecordFactory()
    seen = []

    def tracing(*args, **kwargs):
        record = made(*args, **kwargs)
        record.trace_id = "t-1"  # as an OpenTelemetry-style factory adds
        seen.append(record)
        return record

    logging.setLogRecordFactory(tracing)
    try:
        logs.configure(logging.WARNING)
        logs.configure(logging.WARNING)
        logging.getLogger("some.http.library").warning("password=%s", PASSWORD)
        assert seen[-1].trace_id == "t-1" and seen[-1].getMessage() == "password=***"
        assert logging.getLogRecordFactory().make is tracing, "wrapped once, around the factory that was there"
    finally:
        logging.setLogRecordFactory(made)
