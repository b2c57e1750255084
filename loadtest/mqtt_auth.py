"""What MQTT identities cost: connects, publishing and reloads with 0 vs 10,000 robots provisioned.

    python -m loadtest.mqtt_auth                   # no auth, 0 and 10,000 robots, 3 rounds
    python -m loadtest.mqtt_auth --robots open,0,10000 --rounds 3 --readings 200000

Each round starts a fresh broker with our mosquitto.conf on a free port (127.0.0.1 only) whose
identity files hold N robots (plus the benchmark's own publishers); `open` is the baseline
before identities: the same config with `allow_anonymous true` and no password or ACL file
(the change measurement is skipped there). Each round measures:
- connect: CONNECT to CONNACK of a provisioned robot, sequentially, p50 and p99 (the broker
  hashes the password with PBKDF2 on every CONNECT and looks up the ACL block);
- publish: readings/s of two wire-level publishers (gateways), flat out, QoS 1, 10 readings
  per message, nobody subscribed: every PUBLISH passes the ACL check;
- change: one robot added through mqtt_auth (files rewritten + SIGHUP) until the broker accepts
  it, i.e. how long a provisioning change takes to apply; and the file rewrite alone.
Medians over the rounds are printed. It is short on purpose: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from harness.services import Mosquitto
from loadtest.wire_publisher import publisher_identities, robot_ids, run_publishers
from mqtt_auth.identities import Identity
from mqtt_auth.passwords import hash_password, new_password
from mqtt_auth.probe import connack, wait_accepted


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _open_conf(conf: str) -> str:
    lines = [
        "allow_anonymous true" if line.startswith("allow_anonymous") else line
        for line in conf.splitlines()
        if not line.startswith(("password_file", "acl_file"))
    ]
    return "\n".join(lines) + "\n"


async def one_round(
    *, robots: int | None, connects: int, readings: int, workdir: Path
) -> dict[str, float]:
    """robots None: the open baseline (an open broker ignores the credentials sent)."""
    broker = Mosquitto(workdir=Path(tempfile.mkdtemp(dir=workdir, prefix="mq-auth-")))
    open_broker = robots is None
    if open_broker:
        broker.conf.write_text(_open_conf(broker.conf.read_text()))
    robots = robots or 0
    # One hash for all the filler robots: hashing 10,000 times would only slow the setup.
    filler_hash = hash_password(new_password())
    broker.identities.put(*(Identity.robot(f"fill-{i:05d}", filler_hash) for i in range(robots)))
    groups = robot_ids(publishers=2, robots_per_publisher=5)
    logins = [(i.username, broker.add(i)) for i in publisher_identities(groups)]
    probe_password = broker.add_robot("probe-robot")
    with broker:
        times = []
        for _ in range(connects):
            t0 = time.perf_counter()
            assert connack("127.0.0.1", broker.port, "probe-robot", probe_password) == 0
            times.append((time.perf_counter() - t0) * 1000)
        pubs = await run_publishers(
            port=broker.port,
            logins=logins,
            robots=groups,
            readings=readings,
            per_message=10,
            qos=1,
            rate=0,
        )
        started = min(p.started_at for p in pubs)
        done = max(p.done_at for p in pubs)
        published = sum(p.readings for p in pubs)
        result = {
            "connect_p50_ms": statistics.median(times),
            "connect_p99_ms": _percentile(times, 0.99),
            "publish_readings_per_s": published / (done - started),
            "change_write_ms": float("nan"),
            "change_applied_ms": float("nan"),
        }
        if open_broker:
            return result
        t0 = time.perf_counter()
        password = new_password()
        broker.identities.put(Identity.robot("new-robot", hash_password(password)))
        written = time.perf_counter() - t0
        wait_accepted("127.0.0.1", broker.port, "new-robot", password)
        applied = time.perf_counter() - t0
    result["change_write_ms"] = written * 1000
    result["change_applied_ms"] = applied * 1000
    return result


async def main_async(args: argparse.Namespace) -> None:
    sizes: list[int | None] = [None if s == "open" else int(s) for s in args.robots.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-auth-") as tmp:
        rounds: dict[int | None, list[dict[str, float]]] = {n: [] for n in sizes}
        for r in range(args.rounds):
            for n in sizes:  # interleaved, so load from other work hits both sizes alike
                result = await one_round(
                    robots=n, connects=args.connects, readings=args.readings, workdir=Path(tmp)
                )
                rounds[n].append(result)
                print(
                    f"round {r + 1} robots={n}: "
                    + ", ".join(f"{k} {v:,.1f}" for k, v in result.items())
                )
    print("\nmedians over rounds")
    keys = list(rounds[sizes[0]][0])
    print("| robots provisioned | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for n in sizes:
        meds = [statistics.median(x[k] for x in rounds[n]) for k in keys]
        label = "open (no identities)" if n is None else f"{n:,}"
        print(f"| {label} | " + " | ".join(f"{m:,.1f}" for m in meds) + " |")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.mqtt_auth", description=__doc__)
    p.add_argument(
        "--robots", default="open,0,10000", help="robot identities provisioned, per size"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connects", type=int, default=300, help="sequential connects per round")
    p.add_argument("--readings", type=int, default=200_000, help="readings published per round")
    uvloop.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
