"""Where diagnostics go, and the one redaction filter in front of every handler.

The level comes from the command line (``-v`` INFO, ``-vv`` DEBUG; the older
``--log-level LEVEL`` still works) or the environment (``SYNCPREP_LOG=debug``; the older
``SYNCPREP_LOG_LEVEL`` is still read), the most verbose of them winning. Without any,
WARNING: a library's warning is still shown, as Python would show it, but scrubbed.
Records go to stderr, or with ``--log-file FILE`` to that file (created 0600: records
name users), with warnings and worse on stderr as well.

Every record is scrubbed as it is made (a wrapped record factory, and its ``extra=`` fields
as ``Logger.makeRecord`` copies them in after the factory), so no handler, also one a library
adds later with a formatter that shows them, sees it unscrubbed, at any level; and every handler that exists when
logging is configured has the same :class:`Redact` filter in front of it (for records made
another way, e.g. ``logging.makeLogRecord``): credentials
(Authorization and Cookie headers, bearer tokens, JWTs, passwords in query strings,
the values of the credential variables) are masked, and the HTTP/2 libraries' records,
which hold header blocks (encoded, where a token cannot be masked), are dropped at every
level (a handler added later sees only that one was made, not its text). Python's ``warnings`` go through logging too, and so through the filter.
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


#: What a record of the HTTP/2 libraries says instead when a handler sees it at all.
HEADER_BLOCK_TEXT = "(an HTTP/2 library record: not shown, it may hold a header block)"


def scrub_record(record):
    """Rewrite ``record`` in place without credentials (message, arguments, traceback, stack).
    An HTTP/2 library's record loses all its text; False for it (a filter drops it)."""
    if str(record.name or "").split(".")[0] in HEADER_BLOCK_LOGGERS:  # makeLogRecord makes one with no name first
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = HEADER_BLOCK_TEXT, None, None, None, None
        return False
    record.msg = scrub(_message(record))
    record.args = None
    if record.exc_info:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
    scrub_extra(record)
    return True


#: The attributes every record has (scrubbed by :func:`scrub_record` one by one, or harmless).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def scrub_extra(record):
    """Rewrite the record's other attributes (``extra=`` fields, a factory's) without credentials:
    a text scrubbed, a number kept, anything else kept as it is (a handler may want the object,
    as rich's does a highlighter) unless its text, what a formatter shows, holds a credential:
    then that text, scrubbed."""
    fields = vars(record)
    for key, value in fields.items():
        if key in _STANDARD or value is None or isinstance(value, (int, float)):
            continue
        text = value if isinstance(value, str) else str(value)
        scrubbed = scrub(text)
        if scrubbed != text or isinstance(value, str):
            fields[key] = scrubbed


def _message(record):
    try:
        return record.getMessage()
    except Exception:  # a record whose arguments do not fit its format: a handler would say so, the caller must not see it
        return f"{record.msg!s} (arguments that did not fit the format: {record.args!r})"


class Redact(logging.Filter):
    """Rewrites each record without credentials; drops the HTTP/2 libraries' records."""

    def filter(self, record):
        return scrub_record(record)


class _ScrubbedRecords:
    """The record factory, wrapped: each record is scrubbed as it is made, before any logger
    filter or handler sees it, so a handler a library adds after :func:`configure` (pypsrp's
    ``PYPSRP_LOG_CFG``, spnego's ``PYSPNEGO_LOG_CFG``, a ``basicConfig``) gets only scrubbed
    records too. Handler filters cannot do that: they sit only on the handlers that exist when
    they are added."""

    def __init__(self, make):
        self.make = make

    def __call__(self, *args, **kwargs):
        record = self.make(*args, **kwargs)
        scrub_record(record)
        return record


def _scrub_records_as_they_are_made():
    if not isinstance(logging.getLogRecordFactory(), _ScrubbedRecords):
        logging.setLogRecordFactory(_ScrubbedRecords(logging.getLogRecordFactory()))
    if not getattr(logging.Logger.makeRecord, "scrubs_extra", False):
        logging.Logger.makeRecord = _scrubbing_make_record(logging.Logger.makeRecord)


def _scrubbing_make_record(make):
    """``Logger.makeRecord`` wrapped: it copies ``extra=`` into the record after the factory made
    it, so the factory cannot scrub those fields; this does, before any filter or handler."""

    def makeRecord(self, name, level, fn, lno, msg, args, exc_info, func=None, extra=None, sinfo=None):
        record = make(self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
        if extra:
            scrub_extra(record)
        return record

    makeRecord.scrubs_extra = True
    return makeRecord


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
    _scrub_records_as_they_are_made()
    for handler in _every_handler():
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(redact)
    return redact


def _every_handler():
    loggers = [logging.getLogger()] + [x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)]
    return [handler for logger in loggers for handler in logger.handlers]
