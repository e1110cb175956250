"""The embedded lab: a faithful simulation of a whole hybrid environment.

:mod:`.world` is the simulation, :mod:`.scenario` builds worlds, :mod:`.store`
keeps one in a versioned file, and :mod:`.provider` puts the core's provider
interfaces in front of it.
"""

from providers.lab.provider import LabServer, LabTarget, LabTenant, open_lab_target

__all__ = ["LabServer", "LabTarget", "LabTenant", "open_lab_target"]
