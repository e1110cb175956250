import os
from collections import Counter

import pytest

from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.cli.command import main
from reconciler.loader import load_desired
from reconciler.plan import build_plan

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The tests' temporary folders (pytest's pytest-of-USER/pytest-N) in memory where the machine has
#: a tmpfs at /dev/shm: the journal and the lab file are fsynced at every step, which on a disk
#: shared with other work made the fault and served-lab tests wait (issue 19; those waits were
#: about a third of their wall time). Same code and assertions: a killed process loses nothing
#: of what it wrote on either (fsync only matters when the machine itself goes down). Not when the
#: run names its own place (--basetemp, or PYTEST_DEBUG_TEMPROOT, pytest's variable for this), nor
#: where the tmpfs is small (a container's default /dev/shm is 64 MiB; a run writes about 45 MB).
SHM_NEEDS = 1 << 30


def roomy_tmpfs(path="/dev/shm", needs=SHM_NEEDS):
    """``path`` when it is a writable folder with ``needs`` bytes free, else None."""
    if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
        return None
    stats = os.statvfs(path)
    return path if stats.f_bavail * stats.f_frsize >= needs else None


if "PYTEST_DEBUG_TEMPROOT" not in os.environ and roomy_tmpfs():
    os.environ["PYTEST_DEBUG_TEMPROOT"] = roomy_tmpfs()
EXAMPLE = ROOT / "desired-state" / "example.toml"
UPGRADE_SAFE = ROOT / "desired-state" / "upgrade-safe.toml"


def pytest_addoption(parser, pluginmanager):
    """Without pytest-xdist (a virtualenv made before it joined the test extras), the config's
    ``-n auto --dist worksteal`` are taken and ignored: the suite runs in one process, as before.
    ``pip install -e '.[test]'`` brings it."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist", "pytest-xdist is not installed")
        group._addoption("-n", dest="numprocesses", default=None, help="ignored without pytest-xdist")  # as xdist adds it
        group.addoption("--dist", dest="dist", default=None, help="ignored without pytest-xdist")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the config's): two workers a core for the suite or a folder of it, none when
    only test files or tests are named (``pytest tests/test_x.py -x``): starting the workers
    would cost more than it gains. ``-n 2`` on the command line still distributes those."""
    if config.args and all("::" in arg or arg.endswith(".py") for arg in config.args):
        return 0
    # Two workers a core (at most four more than the cores): most of a served-lab or fault test's
    # wall time is waiting (polls, lab minutes, leases, the README rehearsal's ten-second polls),
    # and a second worker on each core runs while the first waits (issue 19: figures in the commit).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2 * cores, cores + 4)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """pytest keeps each test module with its assertions rewritten in ``tests/__pycache__``
    (checked against the source's hash), but writes nothing when Python is told not to write
    bytecode (PYTHONDONTWRITEBYTECODE): then every worker of every run parsed, rewrote and
    compiled all 90 test modules again, about 1.4 s of CPU a worker (issue 19). Written while
    collecting only (``__pycache__`` is in .gitignore; the README's test command compiles
    reconciler and providers the same way); what is run is the same code either way."""
    import sys

    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = before


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Each ``main()`` configures logging for its process (handlers, level, warnings captured);
    in the test process that would leak into the next test. Put it back after each test."""
    import logging

    from reconciler.cli import logs

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    logs._installed.clear()
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def lab():
    return scenario.build("default", users=20)


@pytest.fixture
def target(lab):
    return LabTarget(lab)


def end_state(lab):
    """What a user would compare between two labs: users, licences, mailboxes, rules, recycle bin, scheduler."""
    users = sorted(
        (u.upn, tuple(sorted(lic.sku_id for lic in u.licenses)), lab.mailbox_state(u), u.mailbox_guid, u.usage_location)
        for u in lab.active_cloud_users()
    )
    rules = sorted((r.name, r.precedence, r.disabled, r.flows, r.is_standard) for r in lab.server.rules)
    deleted = sorted(u.upn for u in lab.cloud_users if u.deleted_at is not None)
    return users, rules, deleted, lab.server.sync_cycle_enabled


def plan_for(desired, target):
    if not hasattr(desired, "rules"):
        desired = load_desired(desired)
    return build_plan(desired, observe(target, desired), target.description)


def plan_and_apply(desired, target):
    if not hasattr(desired, "rules"):
        desired = load_desired(desired)
    plan = plan_for(desired, target)
    return plan, apply_plan(plan, desired, target)


@pytest.fixture
def served():
    """``make(lab=None, users=8) -> (lab, endpoint, server)``: the real PSRP provider talking
    to a lab behind a running WinRM endpoint (what ``lab serve`` runs), one lab minute per script."""
    import itertools

    from providers.entraconnect import PsrpServer, PsrpSession
    from providers.lab.host import LabHost
    from providers.lab.winrm_endpoint import WinRMEndpoint

    user, password = "CONTOSO\\syncadmin", "served-Pa55word!"
    made = []

    def make(lab=None, users=8):
        lab = lab or scenario.build("default", users=users)
        steps = itertools.count()
        endpoint = WinRMEndpoint(LabHost(lab, speed=1.0, monotonic=lambda: float(next(steps))), user, password)
        address, port = endpoint.start()
        session = PsrpSession(address, port=port, ssl=False, auth="basic", username=user, password=password)
        server = PsrpServer(session, poll_interval=0.0, cycle_timeout=30.0, aad_username="sync-admin@contoso.onmicrosoft.com")
        made.append((endpoint, server))
        return lab, endpoint, server

    yield make
    for endpoint, server in made:
        server.close()
        endpoint.stop()


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run syncprep in-process in an empty working directory: returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


#: Modules whose tests wait longest (`lab serve`, Azurite's 15 s lease, scheduled sync cycles,
#: an apply killed at every step): they run first, so that under pytest-xdist their waits overlap
#: the rest of the suite instead of leaving one worker running them alone at the end. Order only.
LONGEST_FIRST = ("test_serve_default_speed", "test_state_azureblob", "test_faults", "test_serve", "test_state_server_e2e", "test_two_forests", "test_licence_entries", "test_lock_takeover", "test_lab_strict")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


#: Figures the fault-injection suite reports at the end of the run.
FIGURES = Counter()


def pytest_sessionfinish(session):
    """Under pytest-xdist each worker counts its own figures: hand them to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["syncprep_figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller adds up the figures of each worker that finished."""
    FIGURES.update(getattr(node, "workeroutput", {}).get("syncprep_figures", {}))


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        FIGURES.setdefault("data lost", 0)  # every converged run checked it; a loss fails the test instead
        terminalreporter.section("syncprep fault-injection figures")
        for name in ("faults injected", "runs resumed", "runs converged", "concurrent applies", "bad inputs refused", "secret scans (clean)", "data lost"):
            if name in FIGURES:
                terminalreporter.write_line(f"{name}: {FIGURES[name]}")
