"""Reading the Prometheus /metrics page of one of our processes (bridge, API), for tests and
benchmarks; prometheus_client's parser reads the text format."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def samples(port: int, name: str, *, timeout: float = 10) -> list[float]:
    """The value of each series of the sample `name` (one per label set) on 127.0.0.1:`port`;
    `name` may name one series as the page writes it: `bridge_rejected_total{reason="x"}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if name in (s.name, _series(s.name, s.labels))
    ]


def _series(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def metric_total(port: int, name: str, *, timeout: float = 10) -> float:
    """The sum of every series of `name` (all label values); 0 when it has none yet."""
    return sum(samples(port, name, timeout=timeout))
