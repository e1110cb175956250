"""``syncprep lab ...``: the verbs that manage the embedded lab, beside the lab itself.

``lab serve`` puts the lab behind a Graph and a WinRM endpoint on loopback, for the real
providers; the other verbs act on the lab file in-process.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.cli.options import ALLOW_ENV, CA_BUNDLE_ENV, EXIT_OK, Parser, env_line, escape, verb_parser
from reconciler.errors import ReconcilerError

NAME = "lab"
SCENARIOS = "default, already-prepared, empty-tenant, duplicate-upn-in-bin, escaped-comma-dn, half-done, group-licensed, two-forest or resource-forest"


LAB_EXITS = {0: "done", 1: "error"}
SERVE_ENV = {
    "SYNCPREP_GRAPH_TOKEN": "the bearer token the Graph endpoint accepts (clients send the same variable's value)",
    "SYNCPREP_WINRM_USERNAME, SYNCPREP_WINRM_PASSWORD": "the account the WinRM endpoint accepts",
}


def add_parser(commands, parents):
    lab = verb_parser(commands, NAME, parents=[parents.common], help="manage the embedded lab", exits=LAB_EXITS)
    verbs = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True, parser_class=Parser)
    own = [parents.common, parents.lab]

    def verb(name, help, environment=None):
        return verb_parser(verbs, name, parents=own, help=help, exits=LAB_EXITS, environment=environment)

    init = verb("init", "create the lab from a scenario")
    init.add_argument("--scenario", default="default", help=SCENARIOS)
    init.add_argument("--users", type=int, default=20, help="mailbox users in the synced OU (default 20)")
    init.add_argument("--force", action="store_true", help="replace an existing lab")
    show = verb("show", "show the lab")
    show.add_argument("--json", action="store_true")
    show.add_argument("--all-users", action="store_true")
    scheduler = verb("scheduler", "pause or resume the sync scheduler")
    scheduler.add_argument("state", choices=["pause", "resume"])
    sync = verb("sync", "run a sync cycle (Start-ADSyncSyncCycle)")
    sync.add_argument("--policy", choices=["Delta", "Initial"], default="Delta")
    sync.add_argument("--no-wait", action="store_true", help="start it and return; it runs as lab time passes")
    verb("upgrade", "an Entra Connect upgrade: deleted stock rules come back")
    advance = verb("advance", "let lab time pass")
    advance.add_argument("minutes", type=int)
    serve = verb("serve", "serve the lab as a Graph endpoint and a WinRM endpoint on loopback, for the real providers", SERVE_ENV)
    serve.add_argument("--graph-port", type=int, default=0, help="default: any free port")
    serve.add_argument("--winrm-port", type=int, default=0, help="default: any free port")
    serve.add_argument("--speed", type=_speed, default=60.0, help="lab minutes per real second while serving (default 60)")
    serve.add_argument(
        "--tls", action="store_true", help="serve Graph over HTTPS (HTTP/2 to clients that offer it) with a self-signed certificate it prints the CA bundle of"
    )
    return lab


def _speed(text):
    """Lab minutes per real second: a finite number above 0 (``nan`` and ``inf`` are numbers to float())."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of lab minutes per second above 0")
    return value


def run(args, out, err):
    from providers.lab import store

    path = Path(args.lab) if args.lab else store.DEFAULT_PATH
    if args.lab_command == "init":
        return _init(args, out, path)
    if args.lab_command == "serve":
        return serve(args, out, path)
    lab, created = store.load_or_create(path)
    if created:
        out.print(f"[dim]Created the default lab at {escape(str(path))}.[/dim]")
    if args.lab_command == "show":
        return _show(args, out, lab, path)
    message = _change(args, lab)
    store.save(lab, path)
    out.print(escape(message))
    return EXIT_OK


def _init(args, out, path):
    from providers.lab import scenario, store

    if path.exists() and not args.force:
        raise ReconcilerError(f"{path}: a lab exists already; pass --force to replace it")
    try:
        lab = scenario.build(args.scenario, users=args.users)
    except ValueError as exc:
        raise ReconcilerError(f"lab init: {exc}") from None
    store.save(lab, path)
    out.print(f"Created the {args.scenario} lab at {escape(str(path))} ({args.users} mailbox users).")
    return EXIT_OK


def _show(args, out, lab, path):
    from providers.lab.report import lab_summary
    from reconciler.render import print_json, render_lab

    summary = lab_summary(lab, path)
    if args.json:
        print_json(out, summary)
    else:
        render_lab(out, summary, all_users=args.all_users)
    return EXIT_OK


def _change(args, lab):
    """scheduler, sync, upgrade, advance: change the lab and say what changed."""
    from providers.lab.world import SyncPolicy

    command = args.lab_command
    if command == "scheduler":
        lab.set_scheduler(args.state == "resume")
        return f"Scheduler {'resumed' if args.state == 'resume' else 'paused'} (Set-ADSyncScheduler -SyncCycleEnabled ${str(args.state == 'resume').lower()})."
    if command == "sync":
        policy = SyncPolicy(args.policy)
        if args.no_wait:
            cycle = lab.start_cycle(policy)
            return f"{policy.value} cycle started; it runs until lab time {lab_time(cycle.ends_at)}."
        results = lab.run_cycle(policy)
        return f"{policy.value} cycle done: " + "; ".join(f"{r.connector} {r.profile} {r.result}" for r in results)
    if command == "upgrade":
        restored = lab.upgrade()
        names = ", ".join(f"'{r.name}' ({r.precedence})" for r in restored) or "none"
        return f"Upgraded Entra Connect to {lab.server.build}; stock rules re-created: {names}."
    _check_advance(lab, args.minutes)
    lab.advance(args.minutes)
    return f"Lab time is now {lab.now}."


def _check_advance(lab, minutes):
    """One line for a ``lab advance`` the lab cannot take: backwards, more than a year at a time
    (every scheduled cycle of it runs: a year is some seconds), or past the last minute a lab file holds."""
    from providers.lab.store_decode import LAST_MINUTE, LONGEST

    if minutes < 0:
        raise ReconcilerError("lab advance: minutes must not be negative")
    if minutes > LONGEST:
        raise ReconcilerError(f"lab advance: at most {LONGEST} minutes (a year) at a time")
    if lab.clock + minutes > LAST_MINUTE:
        raise ReconcilerError(f"lab advance: the lab's clock goes no further than {LAST_MINUTE - lab.clock} minutes from now")


def serve(args, out, path):
    """``lab serve``: both endpoints over one lab until Ctrl-C. Credentials come from the
    environment, the same variables the providers read; none is ever printed."""
    from reconciler.interrupts import wait_forever

    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from providers.lab.winrm_endpoint import WinRMEndpoint

    names = ("SYNCPREP_GRAPH_TOKEN", "SYNCPREP_WINRM_USERNAME", "SYNCPREP_WINRM_PASSWORD")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ReconcilerError(f"lab serve: set {', '.join(missing)} in the environment first (the clients read the same variables)")
    tls_folder, tls = _tls(args)
    host = LabHost.open(path, speed=args.speed)
    graph = GraphEmulator(host, token=os.environ["SYNCPREP_GRAPH_TOKEN"], port=args.graph_port, tls=tls)
    winrm = WinRMEndpoint(host, os.environ["SYNCPREP_WINRM_USERNAME"], os.environ["SYNCPREP_WINRM_PASSWORD"], port=args.winrm_port)
    graph_url = graph.start()
    winrm_host, winrm_port = winrm.start()
    try:
        _announce(out, path, args.speed, graph_url, winrm_host, winrm_port, tls)
        # In slices: Ctrl-C cannot interrupt a wait without a timeout on Windows.
        wait_forever()
    finally:
        graph.stop()
        winrm.stop()
        host.close()
        if tls_folder:
            import shutil

            shutil.rmtree(tls_folder, ignore_errors=True)
    return EXIT_OK


def _tls(args):
    if not args.tls:
        return None, None
    import tempfile

    from providers.lab.tls import make_certificate

    folder = tempfile.mkdtemp(prefix="syncprep-serve-")
    return folder, make_certificate(folder)


def _announce(out, path, speed, graph_url, winrm_host, winrm_port, tls):
    """Where the endpoints are, what to allow, and the [target] that reaches them."""
    out.print(f"Serving the lab {escape(str(path))} (lab time runs at {speed:g} minutes per second). Ctrl-C stops.")
    out.print(f"  Microsoft Graph: {graph_url}")
    out.print(f"  WinRM (HTTP, Basic): {winrm_host}:{winrm_port}")
    out.print("Allow its endpoints where syncprep runs (credentials go only where you allow):")
    out.print(escape(env_line(ALLOW_ENV, f"{graph_url},http://{winrm_host}:{winrm_port}")))
    if tls:
        out.print(escape(env_line(CA_BUNDLE_ENV, tls[0])))
    out.print("Put this target in a desired-state file:")
    target = [
        "[target]",
        'kind = "remote"',
        "[target.graph]",
        f'endpoint = "{graph_url}"',
        'auth = "token-env"',
        "poll_seconds = 1",
        "[target.entra_connect]",
        f'host = "{winrm_host}"',
        f"port = {winrm_port}",
        "ssl = false",
        "poll_seconds = 1",
        'auth = "basic"',
        'aad_username = "admin@contoso.onmicrosoft.com"',
    ]
    out.print(escape("\n".join(target)))


def lab_time(minute):
    from providers.lab.world import minute_to_iso

    return minute_to_iso(minute)
