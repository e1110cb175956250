"""One error hierarchy. The CLI prints any :class:`ReconcilerError` as one line."""

import re


def one_line(text):
    """A message as one line whatever a server put in it: line breaks and other control
    characters (a terminal's escape sequences included) become single spaces."""
    return re.sub(r"\s*[\x00-\x1f\x7f]+\s*", " ", str(text)).strip()


class ReconcilerError(Exception):
    """A failure the user can act on; shown without a traceback."""


class ConfigError(ReconcilerError, ValueError):
    """The desired-state file is invalid. Carries every problem found, one per line."""

    def __init__(self, problems):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class LabError(ReconcilerError):
    """The lab file is missing, corrupt, or of a format this version cannot read."""


class ProviderError(ReconcilerError):
    """A provider could not read or change its system.

    ``provider`` names the system, ``resource`` the thing it was acting on. The message
    often quotes the system's own error text, which may echo the request: it is scrubbed
    of credentials (:func:`reconciler.redact.scrub`) and made one line, so every place
    that shows it (a step's failure, the apply's summary, a note) shows one line.
    """

    def __init__(self, provider, resource, message):
        from reconciler.redact import scrub

        self.provider = provider
        self.resource = resource
        self.message = one_line(scrub(message))
        super().__init__(f"{provider}: {resource}: {self.message}")


class TransientError(ProviderError):
    """A failure that may pass (throttling, a dropped connection, a 503): retry after observing again."""


class RefusedError(ProviderError):
    """The system refused the change (the real system's own rule, e.g. a precedence clash)."""


class PlanError(ReconcilerError):
    """The desired state cannot be reached from what was observed."""


class ApplyError(ReconcilerError):
    """A step failed during apply; ``step_id`` names it."""

    def __init__(self, step_id, message):
        self.step_id = step_id
        super().__init__(message)
