"""`python -m mqtt_auth`: add, list and remove MQTT identities (docs/security.md).

A new identity's password is printed once, alone on stdout, so scripts can capture it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mqtt_auth.identities import ALL_ROBOTS, Identity, IdentityError, Role
from mqtt_auth.nats import write_cluster_dir
from mqtt_auth.passwords import derive_password, hash_password, new_password
from mqtt_auth.settings import MqttAuthSettings
from mqtt_auth.store import AuthFiles, IdentityStore, share_group
from telemetry.logs import configure_logging


def build_parser(defaults: MqttAuthSettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mqtt_auth", description=__doc__)
    p.add_argument(
        "--dir",
        default=defaults.mqtt_auth_dir or None,
        required=not defaults.mqtt_auth_dir,
        help="the identity directory (env MQTT_AUTH_DIR)",
    )
    p.add_argument(
        "--pid-file",
        default=defaults.mosquitto_pid_file or None,
        help="the broker's pid file, signalled after a change (env MOSQUITTO_PID_FILE)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add an identity, or give an existing one a new password")
    add.add_argument("role", choices=[str(r) for r in Role])
    add.add_argument("username", help="for a robot: its robot id")
    add.add_argument(
        "--robots",
        default="",
        help=f"a gateway's or site's robots, comma-separated ({ALL_ROBOTS!r}: all)",
    )
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    how.add_argument(
        "--secret-file",
        type=Path,
        help="derive the password from this secret (as `edge_simulator --mqtt-secret-file`)",
    )
    how.add_argument(
        "--no-password", action="store_true", help="certificate only (the TLS listener)"
    )
    rm = sub.add_parser("remove", help="remove identities; the broker disconnects them")
    rm.add_argument("usernames", nargs="+")
    sub.add_parser("list", help="identities, roles and robots (no secrets)")
    sub.add_parser("render", help="write passwd and acl from the state (before the broker starts)")
    sub.add_parser("share-group", help="print the bridges' secret share group name")
    nc = sub.add_parser(
        "nats-conf",
        help="write a NATS cluster's node configs and users from these identities (docs/nats.md)",
    )
    nc.add_argument("--out", type=Path, required=True, help="the directory to write")
    nc.add_argument("--nodes", default="nats-1,nats-2,nats-3", help="the nodes' host names")
    nc.add_argument("--replicas", type=int, default=3, help="of the MQTT session streams")
    nc.add_argument(
        "--secret-file",
        type=Path,
        help="the fleet secret: robots' and gateways' NATS passwords derive from it",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(MqttAuthSettings()).parse_args(argv)
    # Its output (a password, a list) goes to stdout; its log lines are JSON on stderr.
    configure_logging(level="INFO", process="mqtt_auth")
    files = AuthFiles(Path(args.dir), pid_file=Path(args.pid_file) if args.pid_file else None)
    store = IdentityStore(files)
    if args.command == "add":
        password: str | None
        if args.no_password:
            password = None
        elif args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif args.secret_file:
            password = derive_password(args.secret_file.read_text().strip(), args.username)
        else:
            password = new_password()
        hashed = hash_password(password) if password is not None else None
        robots = [r.strip() for r in args.robots.split(",") if r.strip()]
        try:
            role = Role(args.role)
            if role is Role.ROBOT:
                identity = Identity.robot(args.username, hashed)
            elif role is Role.GATEWAY:
                identity = Identity.gateway(args.username, hashed, robots)
            elif role is Role.SITE:
                identity = Identity.site(args.username, hashed, robots)
            else:
                identity = Identity(args.username, role, hashed)
        except IdentityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        store.put(identity)
        if password is not None and not (args.password_stdin or args.secret_file):
            print(password)
    elif args.command == "remove":
        removed = store.remove(args.usernames)
        missing = sorted(set(args.usernames) - set(removed))
        if missing:
            print(f"not found: {', '.join(missing)}", file=sys.stderr)
            return 1
    elif args.command == "list":
        for i in store.identities():
            assigned = f" {','.join(i.robots)}" if i.role in (Role.GATEWAY, Role.SITE) else ""
            auth = "password" if i.password_hash else "certificate"
            print(f"{i.username} {i.role} {auth}{assigned}")
    elif args.command == "render":
        store.render()
    elif args.command == "nats-conf":
        written = write_cluster_dir(
            args.out,
            store.identities(),
            nodes=[n.strip() for n in args.nodes.split(",") if n.strip()],
            fleet_secret=args.secret_file.read_text().strip() if args.secret_file else None,
            replicas=args.replicas,
        )
        print("\n".join(written))
    else:
        print(share_group(files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
