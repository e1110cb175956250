"""Nothing secret in any output: scrubbing texts that came from elsewhere.

A server's error text can echo the request, Authorization header included; a log
record of a library can hold a header. :func:`scrub` takes out what looks like a
credential (an Authorization header, a Bearer/Basic/Negotiate token, a JWT) and the
values of the credential variables set in the environment.
"""

from __future__ import annotations

import base64
import logging
import os
import re

MASK = "***"
#: Variables whose values are secrets wherever they appear (the credential variables
#: a desired-state file may name are these names, or these with a suffix).
SECRET_VARIABLES = re.compile(
    r"^(?:AZURE_CLIENT_SECRET|AZURE_PASSWORD|AZURE_CLIENT_CERTIFICATE_PASSWORD|SYNCPREP_PLAN_SIGNING_KEY"
    r"|SYNCPREP_GRAPH_TOKEN(?:_\w+)?|SYNCPREP_WINRM_PASSWORD(?:_\w+)?)$"
)
#: Shorter values would mask ordinary words; such a secret is weak anyway.
MIN_SECRET_LENGTH = 6

_PATTERNS = (
    # "Authorization: Bearer abc", "authorization=Basic abc", "'Authorization': 'Bearer abc'"
    (re.compile(r"(?i)(\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|negotiate|ntlm|kerberos)\s+)?[^\s'\",;]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer|basic|negotiate|ntlm)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?i)(\b(?:client_secret|password|access_token|refresh_token)=)[^&\s]+"), r"\1" + MASK),
)


def secret_values(environ=None):
    """The values of the secret variables set in ``environ``, with their base64 forms."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if SECRET_VARIABLES.match(k) and v and len(v) >= MIN_SECRET_LENGTH}
    user = next((v for k, v in environ.items() if k.startswith("SYNCPREP_WINRM_USERNAME") and v), None)
    for value in list(values):
        values.add(base64.b64encode(value.encode()).decode())
        if user:
            values.add(base64.b64encode(f"{user}:{value}".encode()).decode())
    return sorted(values, key=len, reverse=True)


def scrub(text, environ=None):
    """``text`` without credentials: patterns first, then the environment's secret values."""
    text = str(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


class _NoHeaderBlocks(logging.Filter):
    """hpack logs HTTP/2 header blocks at DEBUG, encoded (a bearer token decodes from them,
    so they cannot be scrubbed) and decoded: those records never leave, at any log level."""

    def filter(self, record):
        return record.levelno >= logging.WARNING


def quiet_header_blocks():
    """Filter the HTTP/2 libraries' loggers at the source (a filter on a logger sees only its
    own records, hence each module's logger); called by every module that speaks HTTP/2."""
    for name in ("hpack", "hpack.hpack", "hpack.table", "h2", "h2.connection"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoHeaderBlocks) for f in logger.filters):
            logger.addFilter(_NoHeaderBlocks())
