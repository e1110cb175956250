"""Where diagnostics go, and the one redaction filter in front of every handler.

The level comes from the command line (``-v`` INFO, ``-vv`` DEBUG; the older
``--log-level LEVEL`` still works) or the environment (``SYNCPREP_LOG=debug``; the older
``SYNCPREP_LOG_LEVEL`` is still read), the most verbose of them winning. Without any,
WARNING: a library's warning is still shown, as Python would show it, but scrubbed.
Records go to stderr, or with ``--log-file FILE`` to that file (created 0600: records
name users), with warnings and worse on stderr as well.

Every handler (ours, and any a library installed before) has the same :class:`Redact`
filter in front of it, so no record leaves unscrubbed at any level: credentials
(Authorization and Cookie headers, bearer tokens, JWTs, passwords in query strings,
the values of the credential variables) are masked, and the HTTP/2 libraries' records,
which hold header blocks (encoded, where a token cannot be masked), are dropped at every
level. Python's ``warnings`` go through logging too, and so through the filter.
"""

from __future__ import annotations

import logging
import os
import sys

from reconciler.cli.options import LOG_ENV
from reconciler.cli.options import LOG_LEVEL_ENV as OLD_LOG_ENV  # the first --log-level's (issue 15); read when SYNCPREP_LOG is not set
from reconciler.errors import ReconcilerError
from reconciler.redact import quiet_header_blocks, scrub

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: The loggers whose records hold HTTP/2 header blocks (hpack, h2; their errors come as exceptions).
HEADER_BLOCK_LOGGERS = ("hpack", "h2")
_FORMAT = "%(levelname)s %(name)s: %(message)s"
_FILE_FORMAT = "%(asctime)s " + _FORMAT


def level_for(verbose=0, option=None, environ=None):
    """The logging level: the most verbose of ``-v`` (counted), ``--log-level`` and the environment."""
    environ = os.environ if environ is None else environ
    levels = [logging.WARNING]
    if verbose:
        levels.append(logging.INFO if verbose == 1 else logging.DEBUG)
    if option:
        levels.append(_parse(option, "--log-level"))
    for name in (LOG_ENV, OLD_LOG_ENV):
        if environ.get(name):
            levels.append(_parse(environ[name], name))
            break
    return min(levels)


def _parse(text, where):
    try:
        return LEVELS[text.strip().lower()]
    except KeyError:
        raise ReconcilerError(f"{where}={text!r}: choose debug, info, warning or error") from None


class Redact(logging.Filter):
    """Rewrites each record without credentials (message, arguments, traceback, stack);
    drops the HTTP/2 libraries' records."""

    def filter(self, record):
        if record.name.split(".")[0] in HEADER_BLOCK_LOGGERS:
            return False
        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class _Stderr(logging.StreamHandler):
    """Whatever sys.stderr is when a record comes (tests and wrappers replace it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


#: The handlers :func:`configure` installed (removed by the next call: one set per command).
_installed = []


def configure(level=logging.WARNING, log_file=None):
    """Send records at ``level`` to stderr, or to ``log_file`` (warnings also to stderr).
    Returns the one :class:`Redact` filter, which stands in front of every handler."""
    from reconciler.files import open_append_private

    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        if handler.stream is not sys.stderr:
            handler.close()
    _installed.clear()
    redact = Redact()
    stderr = _Stderr()
    stderr.setFormatter(logging.Formatter(_FORMAT))
    stderr.setLevel(level if log_file is None else max(level, logging.WARNING))
    _installed.append(stderr)
    if log_file is not None:
        to_file = logging.StreamHandler(open_append_private(log_file))
        to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
        to_file.setLevel(level)
        _installed.append(to_file)
    for handler in _installed:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    quiet_header_blocks()
    for handler in _every_handler():
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(redact)
    return redact


def _every_handler():
    loggers = [logging.getLogger()] + [x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)]
    return [handler for logger in loggers for handler in logger.handlers]
