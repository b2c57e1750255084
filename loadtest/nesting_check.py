"""What the nesting-depth check costs on the decode path: `check_nesting` alone against
`PayloadDecoder.decode` (which includes it) of valid IMU messages of 1 to 1,000 readings,
measured alternately in the same run.

    python -m loadtest.nesting_check [--rounds 9]

Prints, per message shape, the median over rounds of µs per message for both and the check's
share of the decode. CPU only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import orjson

from telemetry.payload import Decoded, PayloadDecoder, TimeWindow, check_nesting

_IMU = {"accel": {"x": 0.1, "y": 0.2, "z": 9.8}, "gyro": {"x": 0.01, "y": 0.02, "z": 0.03}}


def _message(n: int, now_ms: int) -> bytes:
    readings = [{"ts": now_ms - n + i, "seq": i, "data": _IMU} for i in range(n)]
    return orjson.dumps(readings[0] if n == 1 else {"readings": readings})


def _per_message_us(decoder: PayloadDecoder, message: bytes, repeat: int) -> float:
    received_at = datetime.now(UTC)
    start = time.perf_counter()
    for _ in range(repeat):
        decoder.decode(
            robot_id="r1",
            sensor_type="imu",
            topic="robots/r1/sensors/imu",
            payload=message,
            received_at=received_at,
            into=Decoded(),
        )
    return (time.perf_counter() - start) / repeat * 1e6


def _check_us(message: bytes, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        check_nesting(message)
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    decoder = PayloadDecoder(window=TimeWindow())
    now_ms = int(time.time() * 1000)
    print(f"{'readings':>9} {'bytes':>7} {'check µs':>9} {'decode µs':>10} {'share':>7}")
    for n in (1, 10, 100, 1000):
        message = _message(n, now_ms)
        repeat = max(20, 20_000 // n)
        checks, decodes = [], []
        for _ in range(args.rounds):
            checks.append(_check_us(message, repeat))
            decodes.append(_per_message_us(decoder, message, repeat))
        c, d = statistics.median(checks), statistics.median(decodes)
        print(f"{n:>9} {len(message):>7} {c:>9.2f} {d:>10.1f} {c / d:>7.1%}")


if __name__ == "__main__":
    main()
