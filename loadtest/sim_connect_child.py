"""One partition of loadtest.sim_connect: connects its slice of the fleet with the simulator's
`Fleet`, prints when it started and finished as JSON, disconnects. Imports only the simulator
(and the fleet's definition), from whichever tree is first on PYTHONPATH."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvloop

from edge_simulator.config import Partition
from edge_simulator.fleet import Fleet
from edge_simulator.identities import logins
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
        print(json.dumps({"started": started, "connected": connected, "links": len(fleet.links)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--robots", type=int, required=True)
    p.add_argument("--partition", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connects-in-flight", type=int, default=0)
    uvloop.run(connect(p.parse_args()))


if __name__ == "__main__":
    main()
