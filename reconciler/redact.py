"""Nothing secret in any output: scrubbing texts that came from elsewhere.

A server's error text can echo the request, Authorization header included; a log
record of a library can hold a header. :func:`scrub` takes out what looks like a
credential (an Authorization or Cookie header, also as a logged header pair, a
Bearer/Basic/Negotiate token, a JWT, a secret in a form or query string) and the
values of the credential variables set in the environment. Logging applies it to every
record as it is made, whichever handler gets it (:mod:`reconciler.cli.logs`).

The patterns are compiled when first used: a command that scrubs nothing (a plan with no
error and no log record) does not pay for them (issue 19).
"""

from __future__ import annotations

import functools
import logging
import os
import re

MASK = "***"
#: Variables whose values are secrets wherever they appear (the credential variables
#: a desired-state file may name, ``token_env``, ``password_env`` and ``[state] token_env``,
#: are these names, or these with a suffix).
_SECRET_VARIABLES = (
    r"^(?:AZURE_CLIENT_SECRET|AZURE_PASSWORD|AZURE_CLIENT_CERTIFICATE_PASSWORD|SYNCPREP_PLAN_SIGNING_KEY|ACTIONS_ID_TOKEN_REQUEST_TOKEN"
    r"|SYNCPREP_GRAPH_TOKEN(?:_\w+)?|SYNCPREP_WINRM_PASSWORD(?:_\w+)?|SYNCPREP_STORAGE_TOKEN(?:_\w+)?)$"
)
#: Shorter values would mask ordinary words; such a secret is weak anyway.
MIN_SECRET_LENGTH = 6

_PATTERNS = (
    # "Authorization: Bearer abc", "authorization=Basic abc", "'Authorization': 'Bearer abc'"
    (r"(?i)(\b(?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|negotiate|ntlm|kerberos)\s+)?[^\s'\",;]+", r"\1" + MASK),
    (r"(?i)\b(bearer|basic|negotiate|ntlm)\s+[A-Za-z0-9._~+/=-]{8,}", r"\1 " + MASK),
    (r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", MASK),
    (r"(?i)(\b(?:client_secret|client_assertion|password|access_token|refresh_token|id_token|device_code|code_verifier)=)[^&\s]+", r"\1" + MASK),
    # "Cookie: a=b; c=d", "Set-Cookie: ...", "'cookie': '...'" (to the end of the line or the quote)
    (r"(?i)(\b(?:set-)?cookie['\"]?\s*[:=]\s*['\"]?)[^\r\n'\"]+", r"\1" + MASK),
    # A header as a pair, as HTTP libraries log them: (b'authorization', b'...'), ('Cookie', '...')
    (r"(?i)(['\"](?:proxy-authorization|authorization|cookie|set-cookie)['\"]\s*,\s*b?['\"])[^'\"]*", r"\1" + MASK),
)


def secret_values(environ=None):
    """The values of the secret variables set in ``environ``, with their base64 forms."""
    import base64

    environ = os.environ if environ is None else environ
    secret = _compiled().secret_variables
    values = {v for k, v in environ.items() if secret.match(k) and v and len(v) >= MIN_SECRET_LENGTH}
    user = next((v for k, v in environ.items() if k.startswith("SYNCPREP_WINRM_USERNAME") and v), None)
    for value in list(values):
        values.add(base64.b64encode(value.encode()).decode())
        if user:
            values.add(base64.b64encode(f"{user}:{value}".encode()).decode())
    return sorted(values, key=len, reverse=True)


#: A secret as a JSON or dict member, as MSAL logs a token request at DEBUG
#: (``"device_code": "..."``, with the same value again under ``"code"``).
_MEMBER = (
    r"(?i)['\"](?:client_secret|client_assertion|password|access_token|refresh_token|id_token|device_code|code_verifier)['\"]\s*:\s*['\"]([^'\"]+)['\"]"
)


def scrub(text, environ=None):
    """``text`` without credentials: patterns first, then the environment's secret values, then
    every other place a value named as a secret member (``"device_code": "..."``) appears."""
    text = str(text)
    compiled = _compiled()
    members = {m.group(1) for m in compiled.member.finditer(text) if len(m.group(1)) >= MIN_SECRET_LENGTH and m.group(1) != MASK}
    for pattern, replacement in compiled.patterns:
        text = pattern.sub(replacement, text)
    for value in [*secret_values(environ), *sorted(members, key=len, reverse=True)]:
        text = text.replace(value, MASK)
    return text


class _Compiled:
    def __init__(self):
        self.secret_variables = re.compile(_SECRET_VARIABLES)
        self.patterns = tuple((re.compile(pattern), replacement) for pattern, replacement in _PATTERNS)
        self.member = re.compile(_MEMBER)


@functools.cache
def _compiled():
    """The patterns above, compiled (once, when first used)."""
    return _Compiled()


class _NoHeaderBlocks(logging.Filter):
    """hpack logs HTTP/2 header blocks at DEBUG, encoded (a bearer token decodes from them,
    so they cannot be scrubbed) and decoded: the HTTP/2 libraries' records never leave,
    at any level (their errors come as exceptions). :class:`reconciler.logs.Redact` drops
    them at every handler too; this filter stops them at the source, before any handler."""

    def filter(self, record):
        return False


def quiet_header_blocks():
    """Filter the HTTP/2 libraries' loggers at the source (a filter on a logger sees only its
    own records, hence each module's logger); called by every module that speaks HTTP/2."""
    for name in ("hpack", "hpack.hpack", "hpack.table", "h2", "h2.connection"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoHeaderBlocks) for f in logger.filters):
            logger.addFilter(_NoHeaderBlocks())
