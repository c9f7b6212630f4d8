"""OpenDHT's side of the overlay benchmark (testnet/benches/overlay/main.rs runs it).

Starts N OpenDHT nodes (opendht.DhtRunner, Debian's python3-opendht) in this one process on
127.0.0.1, bootstraps them all from the first one, waits until they settle, then does what
the Rust side does to our overlay: --ops puts of --value-size bytes from random nodes, then
--ops gets of those keys from other random nodes, one at a time, each with a deadline; then
lets the nodes sit idle for --idle seconds and measures the process's CPU time. Prints one
JSON object on stdout; progress and errors go to stderr.

Run it with /usr/bin/python3 (the interpreter Debian's binding is built for):

    /usr/bin/python3 opendht_bench.py --nodes 64 --ops 200 --seed 1 --value-size 391

Settled means: every node is connected in OpenDHT's own sense (its IPv4 routing table holds
at least one "good" node, one that answered it recently), and every node finds a probe value
the first node put. The Rust side waits until every routing table holds min(N - 1, 20) peers
(libp2p's Kademlia k); OpenDHT fills its tables only as far as its searches need (of 8 nodes,
some still counted only 6 of the 7 others good after 3 minutes), so a table size is no
settle rule for it. Lagging nodes ping the first node again every 10 polls, as the Rust side re-runs a
Kademlia bootstrap. The JSON gives the smallest table (nodes known, good nodes) at that time.

Every node gets rate limits off (DhtConfig.setRateLimit(-1, -1)), as OpenDHT's own tests
on loopback do: all nodes share 127.0.0.1, and the default per-IP limit would throttle them.
Every wait has a deadline; the ops stop when --budget seconds are spent (the JSON then says
"truncated": true).
"""

import argparse
import itertools
import json
import os
import resource
import socket
import sys
import threading
import time

MASK = (1 << 64) - 1
POLL = 0.2
# A network id of our own: these nodes never take a message from any other OpenDHT network.
NETWORK = 0x5032


def main():
    args = parse_args()
    import opendht  # here, so that --help works without it

    baseline = rss_kib()
    runners = []
    try:
        result = run(opendht, args, baseline, runners)
    finally:
        shutdown(runners)
    print(json.dumps(result), flush=True)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--value-size", type=int, default=391)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--op-timeout", type=float, default=30.0)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for all ops")
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    return args


def run(opendht, args, baseline, runners):
    n = args.nodes
    rng = Rng(args.seed)
    started = time.monotonic()
    for _ in range(n):
        config = opendht.DhtConfig()
        config.setRateLimit(-1, -1)
        config.setNetwork(NETWORK)
        runner = opendht.DhtRunner()
        # ipv6="" with an IPv4 address binds no IPv6 socket at all.
        runner.run(port=0, ipv4="127.0.0.1", ipv6="", config=config)
        runners.append(runner)
    port = str(runners[0].getBound(socket.AF_INET).getPort())
    for runner in runners[1:]:
        runner.bootstrap("127.0.0.1", port)
    settle(opendht, runners, port, args.settle_timeout, args.op_timeout)
    settled = time.monotonic() - started
    tables = [table(runner) for runner in runners]
    rss_settled = rss_kib()
    log(f"{n} nodes started and settled in {settled:.2f} s")

    budget_end = time.monotonic() + args.budget
    truncated = False
    nonce = f"{os.getpid()}-{time.time_ns()}"
    puts, put_failed, stored = [], {}, []
    for op in range(args.ops):
        if time.monotonic() > budget_end:
            truncated = True
            break
        at = rng.below(n)
        key = opendht.InfoHash.get(f"p2psip-bench {nonce} {op}")
        data = os.urandom(args.value_size)
        took, failure = put(runners[at], opendht.Value(data), key, args.op_timeout)
        if failure:
            put_failed[failure] = put_failed.get(failure, 0) + 1
        else:
            puts.append(took)
            stored.append((at, key, data))

    gets, get_missed = [], {}
    for _ in range(args.ops if stored else 0):
        if time.monotonic() > budget_end:
            truncated = True
            break
        at, key, data = stored[rng.below(len(stored))]
        frm = (at + 1 + rng.below(n - 1)) % n
        took, failure = get(runners[frm], key, data, args.op_timeout)
        if failure:
            get_missed[failure] = get_missed.get(failure, 0) + 1
        else:
            gets.append(took)

    idle = idle_window(args.idle)
    rss_idle = rss_kib()
    return {
        "nodes": n,
        "ops": args.ops,
        "value_size": args.value_size,
        "settle_s": settled,
        "known_min": min(known for known, _ in tables),
        "good_min": min(good for _, good in tables),
        "put": summary(puts, put_failed),
        "get": summary(gets, get_missed),
        "rss_baseline_kib": baseline,
        "rss_settled_kib": rss_settled,
        "rss_idle_kib": rss_idle,
        "mem_per_node_mib": (rss_settled - baseline) / n / 1024,
        "idle": {
            "window_s": idle[0],
            "cpu_s": idle[1],
            "cpu_percent": 100 * idle[1] / idle[0],
            "mem_per_node_mib": (rss_idle - baseline) / n / 1024,
        },
        "threads": len(os.listdir("/proc/self/task")),
        "truncated": truncated,
    }


def settle(opendht, runners, port, timeout, op_timeout):
    """Waits until every node is connected and finds a probe value; raises after timeout."""
    deadline = time.monotonic() + timeout

    def left():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SystemExit(
                f"the OpenDHT nodes did not settle within {timeout} s: {status}"
            )
        return min(op_timeout, remaining)

    status = "some nodes have no good node"
    rounds = 0
    while True:
        lagging = [i for i, runner in enumerate(runners) if table(runner)[1] == 0]
        if not lagging:
            break
        status = f"nodes without a good node: {lagging[:10]}"
        left()
        rounds += 1
        if rounds % 10 == 0:
            for i in lagging:
                runners[i].bootstrap("127.0.0.1", port)
        time.sleep(POLL)

    # Each round puts a fresh probe from the first node and asks the nodes that have not
    # found one yet: OpenDHT reuses a node's search for a key it asked before, with the nodes
    # that search found then, so asking one key again could keep failing.
    waiting = list(range(1, len(runners)))
    nonce = f"{os.getpid()}-{time.time_ns()}"
    for probe in itertools.count():
        key = opendht.InfoHash.get(f"p2psip-bench probe {nonce} {probe}")
        data = f"probe {probe}".encode()
        status = "the probe put failed"
        if put(runners[0], opendht.Value(data), key, left())[1] is None:
            waiting = [i for i in waiting if get(runners[i], key, data, left())[1]]
            if not waiting:
                return
            status = f"nodes that do not find the probe value: {waiting[:10]}"
        left()
        time.sleep(POLL)


def table(runner):
    """(nodes known, nodes marked good) in the runner's IPv4 routing table."""
    nodes = [
        line
        for line in runner.getRoutingTablesLog(socket.AF_INET).splitlines()
        if line.lstrip().startswith("Node ")
    ]
    return len(nodes), sum(1 for line in nodes if "[good]" in line)


def put(runner, value, key, timeout):
    """Puts value under key: (seconds it took, None), or (None, why it failed)."""
    done = threading.Event()
    outcome = {}

    def on_done(ok, _nodes):
        outcome["ok"] = ok
        done.set()

    start = time.monotonic()
    runner.put(key, value, on_done)
    if not done.wait(timeout):
        return None, "timeout"
    if not outcome["ok"]:
        return None, "failed"
    return time.monotonic() - start, None


def get(runner, key, data, timeout):
    """Gets key: (seconds it took, None), or (None, why it failed or missed data)."""
    done = threading.Event()
    outcome = {"found": False}

    def on_value(value):
        if value.data == data:
            outcome["found"] = True
        return True

    def on_done(ok, _nodes):
        outcome["ok"] = ok
        done.set()

    start = time.monotonic()
    runner.get(key, on_value, on_done)
    if not done.wait(timeout):
        return None, "timeout"
    if not outcome["ok"]:
        return None, "failed"
    if not outcome["found"]:
        return None, "value missing"
    return time.monotonic() - start, None


def idle_window(seconds):
    """(wall seconds, CPU seconds of this process, every thread) over an idle window."""
    start, cpu = time.monotonic(), cpu_s()
    time.sleep(seconds)
    return time.monotonic() - start, cpu_s() - cpu


def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summary(samples, failed):
    """p50 and p99 (nearest rank, as the Rust side) in ms, the count, the failures by why."""
    samples = sorted(samples)

    def rank(p):
        i = max(-(-len(samples) * p // 100), 1) - 1
        return samples[i] * 1000

    return {
        "p50_ms": rank(50) if samples else None,
        "p99_ms": rank(99) if samples else None,
        "ok": len(samples),
        "failed": sum(failed.values()),
        "failures": failed,
    }


def shutdown(runners):
    """Stops every runner; gives up waiting after 10 s (the process then exits anyway)."""
    stopped = threading.Semaphore(0)
    for runner in runners:
        runner.shutdown(lambda *_: stopped.release())
    deadline = time.monotonic() + 10
    for _ in runners:
        if not stopped.acquire(timeout=max(deadline - time.monotonic(), 0)):
            log("some nodes did not shut down within 10 s")
            return
    for runner in runners:
        runner.join()


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS in /proc/self/status")


def log(line):
    print(f"opendht: {line}", file=sys.stderr, flush=True)


class Rng:
    """The Rust side's seeded splitmix64: the same seed picks the same nodes."""

    def __init__(self, seed):
        self.state = seed & MASK

    def below(self, n):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return (z ^ (z >> 31)) % n


if __name__ == "__main__":
    main()
