"""The request gate: shedding, metrics and the body checks in one layer, each in its order.
The refusals' bodies through the whole app: test_sensors_ingest.py, test_http_edge.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from starlette.types import Message, Receive, Scope, Send

from api.load_shed import LoadShed
from api.metrics import REQUESTS, RequestMetrics
from api.request_gate import RequestGate

ROUTE = "/gate-test/{id}"


class App:
    """An app that names its route, records the body it reads, and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self.release: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = SimpleNamespace(path=ROUTE)
        if self.release is not None and scope["path"] != "/healthz":
            await asyncio.wait_for(self.release.wait(), 10)
        if scope["method"] != "GET":
            message = await receive()
            self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _gate(app: App, *, limit: int = 4, max_body: int = 10) -> RequestGate:
    shed = LoadShed(limit=limit, retry_after_s=3)
    return RequestGate(app, shed=shed, metrics=RequestMetrics(), max_body_bytes=max_body)


async def _request(
    gate: RequestGate,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
    path: str = "/x",
) -> list[Message]:
    pending = list(chunks or [b""])
    sent: list[Message] = []

    async def receive() -> Message:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await gate(scope, receive, send)
    return sent


def _status(sent: list[Message]) -> int:
    status: int = sent[0]["status"]
    return status


def _count(method: str, route: str, status: str) -> float:
    value: float = REQUESTS.labels(method, route, status)._value.get()
    return value


async def test_requests_are_counted_by_route_and_status() -> None:
    before = _count("GET", ROUTE, "404")
    assert _status(await _request(_gate(App(404)))) == 404
    assert _count("GET", ROUTE, "404") == before + 1


async def test_the_excess_is_shed_uncounted_and_the_count_returns_after_each_request() -> None:
    app = App()
    app.release = asyncio.Event()
    gate = _gate(app, limit=2)
    held = [asyncio.create_task(_request(gate)) for _ in range(2)]
    await asyncio.sleep(0)
    assert gate.shed.in_flight == 2
    before = _count("GET", ROUTE, "503")
    shed = await _request(gate)
    assert _status(shed) == 503
    assert (b"retry-after", b"3") in shed[0]["headers"]
    # Probes are never shed, however full the worker is.
    assert _status(await _request(gate, path="/healthz")) == 200
    app.release.set()
    served = await asyncio.wait_for(asyncio.gather(*held), 10)
    assert [_status(sent) for sent in served] == [200, 200]
    assert gate.shed.in_flight == 0
    assert _count("GET", ROUTE, "503") == before


async def test_the_count_returns_when_the_app_fails() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    gate = RequestGate(
        failing, shed=LoadShed(limit=1, retry_after_s=1), metrics=RequestMetrics(), max_body_bytes=1
    )
    before = _count("GET", "unmatched", "500")
    with pytest.raises(RuntimeError):
        await _request(gate)
    assert gate.shed.in_flight == 0
    assert _count("GET", "unmatched", "500") == before + 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"content-type", b"text/plain"), (b"content-length", b"2")], 415),
        ([(b"content-length", b"2")], 415),
        ([(b"transfer-encoding", b"chunked")], 415),
        # The type is refused before the size is looked at.
        ([(b"content-type", b"text/plain"), (b"content-length", b"99")], 415),
        ([(b"content-type", b"application/json"), (b"content-length", b"11")], 413),
        ([(b"content-type", b"application/json"), (b"content-length", b"x")], 413),
    ],
)
async def test_a_body_not_json_or_too_large_is_refused_before_the_app(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    app = App()
    before = _count("POST", "unmatched", str(status))
    assert _status(await _request(_gate(app), "POST", headers, [b"{}"])) == status
    assert app.bodies == []
    assert _count("POST", "unmatched", str(status)) == before + 1


async def test_a_body_without_a_type_or_length_goes_on_if_empty() -> None:
    app = App()
    assert _status(await _request(_gate(app), "POST", [])) == 200
    assert _status(await _request(_gate(app), "PUT", [(b"content-length", b"0")])) == 200
    assert app.bodies == [b"", b""]


async def test_a_chunked_body_is_read_to_the_limit_and_replayed_whole() -> None:
    chunked = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    app = App()
    assert _status(await _request(_gate(app), "POST", chunked, [b"[1,", b"2,", b"3]"])) == 200
    assert app.bodies == [b"[1,2,3]"]
    over = await _request(_gate(app), "POST", chunked, [b"[1,2,3,", b"4,5,6]"])
    assert _status(over) == 413
    assert app.bodies == [b"[1,2,3]"]


async def test_other_methods_with_a_body_have_its_size_checked_but_not_its_type() -> None:
    app = App()
    assert (
        _status(await _request(_gate(app), "REPORT", [(b"content-length", b"2")], [b"ab"])) == 200
    )
    too_big = await _request(_gate(app), "REPORT", [(b"content-length", b"11")], [b"a" * 11])
    assert _status(too_big) == 413
    assert app.bodies == [b"ab"]
