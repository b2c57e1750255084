"""A run: the schedule paced against the wall clock and published through the fleet."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from edge_simulator.config import SimulationConfig
from edge_simulator.fleet import Fleet, Link
from edge_simulator.identities import logins
from edge_simulator.schedule import DropEvent, Schedule
from edge_simulator.summary import Summary

log = logging.getLogger(__name__)

# Publishing is synchronous; the sockets are written only when the loop gets control back.
_YIELD_EVERY = 256
# Early by up to this much is on time: sleeping for less costs more than it is worth.
_EARLY_MS = 1.0
_LAG_WARNING_S = 1.0
_LAG_WARNING_EVERY_S = 5.0


async def simulate(
    *, config: SimulationConfig, client_prefix: str = "edge-sim", stop: asyncio.Event | None = None
) -> Summary:
    """Publishes the configured fleet's messages; returns what was published.

    `stop` ends the run early (Ctrl-C): what was published so far is flushed and summarised.
    """
    stop = stop or asyncio.Event()
    async with Fleet(
        groups=config.connection_groups(),
        brokers=config.brokers,
        qos=config.qos,
        keepalive_s=config.keepalive_s,
        client_prefix=client_prefix,
        logins=logins(config),
        connects_in_flight=config.connects_in_flight,
    ) as fleet:
        if config.start_ts_ms is None:
            config = replace(config, start_ts_ms=int(time.time() * 1000))
        assert config.start_ts_ms is not None
        summary = Summary(
            seed=config.seed,
            start_ts_ms=config.start_ts_ms,
            qos=config.qos,
            partition=str(config.partition),
            robots=config.fleet_ids(),
            requested_readings_per_s=config.requested_readings_per_s,
            requested_messages_per_s=config.requested_messages_per_s,
        )
        schedule = Schedule(config=config, summary=summary)
        log.info(
            "%d robots on %d connections; publishing %.0f readings/s in %.0f messages/s%s",
            len(summary.robots),
            len(fleet.links),
            config.requested_readings_per_s,
            config.requested_messages_per_s,
            " flat out" if config.flat_out else "",
        )
        started = time.monotonic()
        await _drive(
            schedule=schedule, links=fleet.links, config=config, summary=summary, stop=stop
        )
    summary.elapsed_s = time.monotonic() - started
    summary.unacknowledged = fleet.unacknowledged
    summary.interrupted = stop.is_set()
    return summary


async def _drive(
    *,
    schedule: Schedule,
    links: list[Link],
    config: SimulationConfig,
    summary: Summary,
    stop: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    paced = not config.flat_out
    # At QoS 0 `outstanding` counts messages not yet written to the socket.
    window = config.window if config.qos else config.window * 10
    resume = window // 2
    drops: list[asyncio.Task[None]] = []
    t0 = loop.time()
    warned_at = -_LAG_WARNING_EVERY_S
    max_lag_ms = 0.0
    since_yield = 0
    pop = schedule.pop
    while not stop.is_set():
        item = pop()
        if item is None:
            break
        due, out = item
        if paced:
            now_ms = (loop.time() - t0) * 1000.0
            if due > now_ms + _EARLY_MS:
                await asyncio.sleep((due - now_ms) / 1000.0)
                since_yield = 0
            elif now_ms - due > max_lag_ms:
                max_lag_ms = now_ms - due
                if (
                    max_lag_ms > _LAG_WARNING_S * 1000
                    and now_ms / 1000 - warned_at > _LAG_WARNING_EVERY_S
                ):
                    warned_at = now_ms / 1000
                    log.warning(
                        "cannot keep up: %.1f s behind schedule (requested %.0f messages/s)",
                        max_lag_ms / 1000,
                        config.requested_messages_per_s,
                    )
        if isinstance(out, DropEvent):
            link = links[out.link]
            summary.drops.append(
                {"robots": link.robots, "at_s": round(due / 1000, 3), "down_s": out.down_s}
            )
            drops.append(loop.create_task(link.drop(out.down_s)))
            continue
        link = links[out.link]
        link.publish(out)
        if link.sent - link.done >= window:
            await link.wait_outstanding(resume)
            since_yield = 0
        since_yield += 1
        if since_yield >= _YIELD_EVERY:
            since_yield = 0
            await asyncio.sleep(0)
    summary.max_lag_s = max_lag_ms / 1000
    if drops:
        await asyncio.gather(*drops)
