"""syncprep's core: model, desired-state loading, diff, plan, apply engine.

Nothing in this package prints or imports a transport; rendering lives in
:mod:`reconciler.render` and :mod:`reconciler.cli`, transports in :mod:`providers`.
"""

__version__ = "0.1.0"
