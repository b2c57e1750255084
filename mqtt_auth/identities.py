"""Who may connect to the broker and what each may do: the one place that decides the ACLs.

Robots are covered by one line, `pattern write robots/%u/#`, not a block each: Mosquitto 2.0
parses a `user` block in time linear in the blocks before it, so 10,000 robot blocks made each
reload stall the broker for about a second (BENCHMARKS.md), while the password file alone
reloads in ~0.1 s. A pattern applies to every user, so every other identity's block starts by
denying its own `robots/<name>/#` (a user's denials are checked before any pattern); robot
ids and other usernames share one namespace, so no robot is shut out by that. Nobody reads
`$SYS`; the only read a robot has is the bridges' presence markers (`robosense/bridges/+`).

A site (docs/edge.md) is a site broker's bridge connection to the cloud broker: a gateway for
the site's robots that also keeps the site's status topic (its Last Will).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from telemetry.live import FLEET_FILTER
from telemetry.topics import (
    BRIDGE_PRESENCE_FILTER,
    READINGS_FILTER,
    SITE_STATUS_FILTER,
    SITES_FILTER,
    STATUS_FILTER,
    bridge_presence_topic,
    is_valid_robot_id,
    is_valid_site_id,
    site_topics,
)

# Usernames end up in the password file (`user:hash`), in ACL lines and, with
# `use_username_as_clientid`, as client ids: no separators, no wildcards, no blanks.
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A gateway may be assigned what the simulator's malformed messages use (`x.bad`), but never a
# wildcard or a level separator: one entry is one topic level.
_TOPIC_LEVEL = re.compile(r"^[^/+#\s]{1,80}$")
ALL_ROBOTS = "+"


class Role(StrEnum):
    ROBOT = "robot"  # publishes its own readings and status
    GATEWAY = "gateway"  # one connection publishing for the robots assigned to it
    SITE = "site"  # a site broker's bridge: a gateway for its robots, plus the site's status
    BRIDGE = "bridge"  # reads readings (shared or not) and statuses
    OPERATOR = "operator"  # reads robot and fleet topics, never publishes
    LIVE = "live"  # the live service: publishes fleet/# (summaries, alerts), reads site statuses
    API = "api"  # the API's live-stream subscriber: reads the fleet topics only


class IdentityError(ValueError):
    pass


def check_username(username: str) -> str:
    if not _USERNAME.fullmatch(username):
        raise IdentityError(f"a username is 1-64 of [A-Za-z0-9_.-], not {username!r}")
    return username


@dataclass(frozen=True, slots=True)
class Identity:
    username: str
    role: Role
    # None: no password; the identity can only connect with a client certificate whose
    # common name is the username (the TLS listener, docs/security.md).
    password_hash: str | None
    robots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_username(self.username)
        if self.role is Role.ROBOT and (
            self.robots != (self.username,) or not is_valid_robot_id(self.username)
        ):
            raise IdentityError(f"a robot identity is its robot id: {self.username!r}")
        if self.role is Role.SITE and not is_valid_site_id(self.username):
            raise IdentityError(f"a site id is 1-64 of [A-Za-z0-9_-], not {self.username!r}")
        if self.role in (Role.GATEWAY, Role.SITE):
            if not self.robots:
                raise IdentityError(f"gateway {self.username!r} has no robots assigned")
            for robot in self.robots:
                if robot != ALL_ROBOTS and not _TOPIC_LEVEL.fullmatch(robot):
                    raise IdentityError(f"not a robot id: {robot!r}")
        if self.role in (Role.BRIDGE, Role.OPERATOR, Role.LIVE, Role.API) and self.robots:
            raise IdentityError(f"a {self.role} is not assigned robots")

    @classmethod
    def robot(cls, robot_id: str, password_hash: str | None) -> Identity:
        return cls(robot_id, Role.ROBOT, password_hash, (robot_id,))

    @classmethod
    def gateway(cls, username: str, password_hash: str | None, robots: Iterable[str]) -> Identity:
        return cls(username, Role.GATEWAY, password_hash, tuple(dict.fromkeys(robots)))

    @classmethod
    def site(cls, site_id: str, password_hash: str | None, robots: Iterable[str]) -> Identity:
        return cls(site_id, Role.SITE, password_hash, tuple(dict.fromkeys(robots)))

    def acl_lines(self) -> list[str]:
        """This identity's block of the ACL file (none for a robot: ROBOT_PATTERN covers it)."""
        if self.role is Role.ROBOT:
            return []
        lines = [f"user {self.username}"]
        if self.username not in self.robots:
            # The robots' pattern would let it publish under its own name; a gateway named
            # after one of its robots (the simulator's, with malformed messages) keeps that.
            lines.append(f"topic deny robots/{self.username}/#")
        if self.role in (Role.GATEWAY, Role.SITE):
            # The broker checks reads when it delivers, not when a client subscribes
            # (docs/security.md): no read line means nothing is ever delivered to a gateway
            # (a site reads the bridges' presence markers through PRESENCE_PATTERN).
            lines += [f"topic write robots/{robot}/#" for robot in self.robots]
            if self.role is Role.SITE:
                # Its bridge's notifications ("1" on connect, "0" as its Last Will: Mosquitto
                # refuses a CONNECT whose Will the ACL does not allow) and its broker's
                # counters, all under sites/<site>/.
                lines.append(f"topic write {site_topics(self.username)}")
        elif self.role is Role.BRIDGE:
            # A delivery is checked against the message's topic, so these cover the shared
            # subscription ($share/<group>/robots/+/sensors/+) and a plain one alike.
            lines += [f"topic read {READINGS_FILTER}", f"topic read {STATUS_FILTER}"]
            lines.append(f"topic read {SITE_STATUS_FILTER}")
            # Its presence marker, under its username (the broker's client id for it).
            lines.append(f"topic write {bridge_presence_topic(self.username)}")
        elif self.role is Role.LIVE:
            # Summaries and alerts only: a leaked live password cannot forge readings. It
            # reads the sites' statuses (a site unreachable, docs/live.md), nothing else.
            lines.append(f"topic write {FLEET_FILTER}")
            lines.append(f"topic read {SITE_STATUS_FILTER}")
        elif self.role is Role.API:
            # Decimated summaries and alerts only: the raw readings are no business of a
            # browser's stream, and the API publishes nothing.
            lines.append(f"topic read {FLEET_FILTER}")
        else:
            lines += [
                "topic read robots/#",
                f"topic read {FLEET_FILTER}",
                f"topic read {SITES_FILTER}",
            ]
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "role": str(self.role),
            "password_hash": self.password_hash,
            "robots": list(self.robots),
        }

    @classmethod
    def from_json(cls, username: str, data: dict[str, object]) -> Identity:
        robots = data.get("robots") or []
        assert isinstance(robots, list)
        hashed = data.get("password_hash")
        return cls(
            username,
            Role(str(data["role"])),
            str(hashed) if hashed is not None else None,
            tuple(str(r) for r in robots),
        )


def robot_sites(identities: Iterable[Identity]) -> dict[str, str]:
    """Each robot's site: the site identity that may publish for it (its site broker's bridge,
    docs/edge.md). A robot listed by several sites goes with the first by name; a site
    assigned every robot (`+`) names none."""
    sites: dict[str, str] = {}
    for identity in sorted(identities, key=lambda i: i.username):
        if identity.role is Role.SITE:
            for robot in identity.robots:
                if robot != ALL_ROBOTS:
                    sites.setdefault(robot, identity.username)
    return sites


def render_password_file(identities: Sequence[Identity]) -> str:
    return "".join(f"{i.username}:{i.password_hash}\n" for i in identities if i.password_hash)


ROBOT_PATTERN = "pattern write robots/%u/#"
# Whether a bridge is connected is no secret: every client may read the bridges' presence
# markers, so a publisher can tell when nothing would store its readings.
PRESENCE_PATTERN = f"pattern read {BRIDGE_PRESENCE_FILTER}"


def render_acl_file(identities: Sequence[Identity]) -> str:
    blocks = [
        "# Written by mqtt_auth (python -m mqtt_auth); edits here are overwritten.\n",
        "# Every robot (username = robot id) publishes under its own id, and nowhere else.\n"
        f"{ROBOT_PATTERN}\n",
        f"# Every client may read which bridges are connected.\n{PRESENCE_PATTERN}\n",
    ]
    blocks += ["\n".join(lines) + "\n" for i in identities if (lines := i.acl_lines())]
    return "\n".join(blocks)
