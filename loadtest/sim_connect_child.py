"""One partition of loadtest.sim_connect: connects its slice of the fleet with the simulator's
`Fleet`, prints when it started and finished as JSON, disconnects. With --restart it then
waits for a line on stdin (the broker is about to go), sees every link go down and come back
on the fleet's own reconnects, and prints when. Imports only the simulator (and the fleet's
definition), from whichever tree is first on PYTHONPATH."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import uvloop

from edge_simulator.config import Partition
from edge_simulator.fleet import Fleet
from edge_simulator.identities import logins
from harness.waiting import eventually
from loadtest.wire_publisher import fleet_config


async def connect(args: argparse.Namespace) -> None:
    config = fleet_config(
        robots=args.robots,
        prefix=args.prefix,
        secret=args.secret,
        partition=Partition(*map(int, args.partition.split("/"))),
    )
    options: dict[str, Any] = {}
    if args.connects_in_flight:  # a tree before the option has no such parameter
        options["connects_in_flight"] = args.connects_in_flight
    fleet = Fleet(
        groups=config.connection_groups(),
        brokers=[("127.0.0.1", args.port)],
        qos=1,
        keepalive_s=120,
        client_prefix=f"{args.prefix}-{args.partition.replace('/', 'of')}",
        logins=logins(config),
        **options,
    )
    started = time.time()
    async with fleet:
        connected = time.time()
        print(
            json.dumps({"started": started, "connected": connected, "links": len(fleet.links)}),
            flush=True,
        )
        if args.restart:
            await asyncio.to_thread(sys.stdin.readline)

            # A link is down from the broker's exit to its reconnect, at least 0.5 s (the
            # fleet's reconnect delay): polled every 0.1 s, every link is seen down once,
            # though they need not all be down at the same moment.
            seen_down: set[int] = set()

            async def links_seen_down() -> int:
                seen_down.update(i for i, link in enumerate(fleet.links) if not link.up)
                return len(seen_down)

            async def links_up() -> int:
                return sum(link.up for link in fleet.links)

            await eventually(links_seen_down, len(fleet.links), timeout=60)
            await eventually(links_up, len(fleet.links), timeout=600)
            print(json.dumps({"all_up": time.time()}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--robots", type=int, required=True)
    p.add_argument("--partition", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connects-in-flight", type=int, default=0)
    p.add_argument("--restart", action="store_true")
    uvloop.run(connect(p.parse_args()))


if __name__ == "__main__":
    main()
