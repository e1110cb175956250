"""The embedded lab: a faithful simulation of a whole hybrid environment.

:mod:`.world` is the simulation, :mod:`.scenario` builds worlds, :mod:`.store`
keeps one in a versioned file, :mod:`.provider` puts the core's provider
interfaces in front of it, and :mod:`.cli` holds the ``syncprep lab`` verbs.
The provider is imported on first use, so the command line's parser can load
:mod:`.cli` without the simulation.
"""

__all__ = ["LabServer", "LabTarget", "LabTenant", "open_lab_target"]


def __getattr__(name):
    if name in __all__:
        from providers.lab import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
