"""Benchmark the Graph provider against the lab's Graph emulator.

    .venv/bin/python benchmarks/graph_observe.py            # N = 10,000 and 100,000
    .venv/bin/python benchmarks/graph_observe.py --users 5000 --apply-users 1000

For each N it prints, for one observe of the hybrid OU, the requests sent against
the minimum (ceil(listed/999) user pages + ceil(M/20) mailbox batches + one SKU
read + the deleted-items pages), the wall time and the peak memory of the client
process. Then it applies a licence to many users under a token-bucket limit and
prints the achieved rate as a fraction of the limit, and what the emulator saw:
items answered 429, requests that came inside a Retry-After it had sent, and
assignments made twice; then the same apply with a pacer that never learns the rate,
under a tight bucket (a burst of a fifth of the rate), and the ratio of the 429s
of the two (what pacing spares).

The emulator runs in a child process so that the figures are the client's own
(and the two do not share one GIL).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "benchmark-token"
TOKEN_ENV = "SYNCPREP_BENCH_GRAPH_TOKEN"


def serve(args):
    """Child process: build the lab, license every ``license_every``-th user, serve until stdin closes."""
    from providers.lab import scenario
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost

    lab = scenario.build("default", users=args.users)
    lab.skus[0].prepaid = args.users * 2
    if args.license_every:
        for n, user in enumerate(lab.active_cloud_users()):
            if n % args.license_every == 0 and user.synced and user.usage_location and not user.licenses:
                lab.assign_license(user.id, scenario.ENTERPRISEPACK_ID)
    synced = sum(1 for u in lab.active_cloud_users() if u.synced)
    emu = GraphEmulator(LabHost(lab), token=TOKEN, rate=args.rate or None, burst=args.burst or None)
    url = emu.start()
    print(url, synced, flush=True)
    sys.stdin.read()
    emu.stop()
    # What only the server can tell: requests inside a Retry-After it had answered with,
    # and assignments that found the licence already there (a change made twice).
    twice = sum(1 for route, _, what, effect in emu.writes if route == "assignLicense" and effect == "noop")
    print(json.dumps({"early": emu.counters["early"], "throttled": emu.counters["throttled"], "twice": twice}), flush=True)


def start_server(users, license_every=0, rate=0, burst=0):
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--users", str(users), "--license-every", str(license_every), "--rate", str(rate), "--burst", str(burst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    url, synced = child.stdout.readline().split()
    return child, url, int(synced)


def open_graph(url, **tuning):
    from providers.graph import open_tenant
    from reconciler.desired import GraphTargetSpec

    os.environ[TOKEN_ENV] = TOKEN
    return open_tenant(GraphTargetSpec(endpoint=url, auth="token-env", token_env=TOKEN_ENV), **tuning)


def bench_observe(users):
    from providers.lab.scenario import HYBRID_OU
    from reconciler.provider import UserSelection

    child, url, synced = start_server(users, license_every=10)
    try:
        tenant = open_graph(url)
        selection = UserSelection(frozenset(), (HYBRID_OU,))
        # First run: the wall time, cold (it includes importing msgraph and the first request).
        started = time.perf_counter()
        state = tenant.observe(selection)
        wall = time.perf_counter() - started
        sent = tenant.stats["requests"]
        # Second run, traced: the peak of what observing allocates (tracing slows it down).
        tracemalloc.start()
        tenant.observe(selection)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        probes = sum(1 for u in state.users if u.licenses)
        deleted_pages = max(1, math.ceil(len(state.deleted_users) / 999))
        minimum = math.ceil(synced / 999) + math.ceil(probes / 20) + 1 + deleted_pages
        tenant.close()
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"observe N={users:>7,}: {len(state.users):>7,} users in scope, {probes:>6,} mailbox probes; "
        f"requests {sent:>5} (minimum {minimum:>5}); wall {wall:6.2f} s; "
        f"peak traced memory {peak / 2**20:6.1f} MiB (process max RSS {rss:6.1f} MiB)"
    )


def bench_apply(users, count, rate, burst, learn=True):
    from providers.lab import scenario
    from providers.lab.graph_emulator import GraphEmulator
    from reconciler.model import UserRef
    from reconciler.operations import AssignLicense

    child, url, _ = start_server(users, rate=rate, burst=burst)
    try:
        tenant = open_graph(url)
        if not learn:
            # The pacer never learns the rate from a 429: the behaviour before pacing.
            transport = tenant._run(tenant._client())
            transport.pacers["write"].throttled = lambda now, after: None
        # Read the users first, without throttling costs counted in the apply's time.
        from reconciler.provider import UserSelection

        state = tenant.observe(UserSelection(frozenset(), (scenario.HYBRID_OU,)))
        refs = tuple(UserRef(u.id, u.upn) for u in state.users if u.usage_location and not u.has_license(scenario.EMS_ID))[:count]
        before = dict(tenant.stats)
        time.sleep(burst / rate)  # let the bucket refill after the observe
        started = time.perf_counter()
        outcome = tenant.apply(AssignLicense(scenario.EMS_ID, "EMS", refs))
        wall = time.perf_counter() - started
        throttled = tenant.stats["throttled"] - before.get("throttled", 0)
        batches = tenant.stats["batches"] - before.get("batches", 0)
        tenant.close()
    finally:
        child.stdin.close()
        server = json.loads(child.stdout.readline() or "{}")
        child.wait(timeout=30)
    achieved = len(refs) / wall
    # The fastest the bucket allows: the burst at once, the rest at the rate.
    best = max(len(refs) - burst, 0) / rate
    print(
        ("" if learn else "(never learning the rate) ")
        + f"apply  {len(refs):>6,} licence assignments under a {rate:g}/s bucket (burst {burst:g}): {outcome.detail}; "
        f"wall {wall:6.2f} s (the bucket allows {best:.2f} s); {achieved:7.1f}/s; "
        + (f"{(len(refs) - burst) / max(wall, 1e-9) / rate:5.1%} of the limit after the burst; " if len(refs) > burst else "all within the burst; ")
        + f"{batches} batches, {throttled} throttled answers"
    )
    print(
        f"       as the emulator saw it: {server.get('throttled', '?')} items answered 429; "
        f"{server.get('early', '?')} requests arrived before a Retry-After it had sent ran out "
        f"(more than {GraphEmulator.IN_FLIGHT_GRACE:g} s after the 429); {server.get('twice', '?')} assignments made twice"
    )
    return server.get("throttled")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, nargs="*", default=None)
    parser.add_argument("--license-every", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0)
    parser.add_argument("--burst", type=float, default=0)
    parser.add_argument("--apply-users", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.serve:
        args.users = args.users[0]
        return serve(args)
    sizes = args.users or [10_000, 100_000]
    for users in sizes:
        bench_observe(users)
    rate = args.rate or 500
    burst = args.burst or rate
    bench_apply(min(sizes), args.apply_users, rate, burst)
    # What pacing spares shows under a tight bucket (a burst of a fifth of the rate).
    count, tight = min(args.apply_users, 1500), rate / 5
    paced = bench_apply(min(sizes), count, rate, tight)
    unpaced = bench_apply(min(sizes), count, rate, tight, learn=False)
    if paced is not None and unpaced:
        print(f"429s with the pacer learning the rate: {paced / unpaced:.2f} of those without it (goal: at most 0.5)")


if __name__ == "__main__":
    main()
