"""The embedded lab: a faithful simulation of a whole hybrid environment.

:mod:`.world` is the simulation, :mod:`.scenario` builds worlds, :mod:`.store`
keeps one in a versioned file, :mod:`.provider` puts the core's provider
interfaces in front of it (``open_lab_target``), and :mod:`.cli` holds the
``syncprep lab`` verbs. This file imports none of them: the command line's
parser loads :mod:`.cli` without the simulation, and a module importing a
sibling through the package makes no circle.
"""
