"""One error hierarchy. The CLI prints any :class:`ReconcilerError` as one line."""


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
    of credentials (:func:`reconciler.redact.scrub`).
    """

    def __init__(self, provider, resource, message):
        from reconciler.redact import scrub

        self.provider = provider
        self.resource = resource
        self.message = scrub(message)
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
