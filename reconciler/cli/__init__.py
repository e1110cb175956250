"""The ``syncprep`` command: one module per verb, :mod:`.options` for what they share,
:mod:`.command` for the parser and ``main`` (the entry point, ``reconciler.cli.command:main``).

Exit codes: 0 success (for ``plan --detailed-exitcode``: no changes), 1 error,
2 changes present (``plan --detailed-exitcode``), 4 ``apply`` done but a targeted
user did not end as desired (no licence, or no mailbox), 130 interrupted, 141 the output
was closed early (:mod:`.consoles`).
Known errors are one line each on stderr, never a traceback.

Heavy imports (the planner's deepdiff, the real providers' SDKs) happen inside
the verbs that need them, so ``syncprep --help`` stays fast. The lab's verbs live
beside the lab, in :mod:`providers.lab.cli`. This file imports nothing: a verb that
imports a sibling (``from reconciler.cli import targetstate``) runs it first, and an
import here would make a circle with every verb.
"""
