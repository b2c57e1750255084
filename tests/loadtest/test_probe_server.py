"""The probe's bare responder: one 200 per request it reads, wherever the chunks split."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from harness.services import ROOT, free_port, wait_for_port

_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def _answers(conn: socket.socket) -> int:
    """Responses read until the server has been silent for 0.5 s."""
    got = b""
    conn.settimeout(0.5)
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except TimeoutError:
        pass
    return got.count(b"HTTP/1.1 200 OK")


def test_one_answer_per_request_however_the_bytes_arrive() -> None:
    port = free_port()
    # As loadtest.http_wrk starts it: its own process, under uvloop.
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtest.probe_server", "--port", str(port)], cwd=ROOT
    )
    try:
        wait_for_port(port, gone=lambda: None if server.poll() is None else "it exited")
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(_REQUEST * 2)  # two at once
            assert _answers(conn) == 2
            for i in range(len(_REQUEST)):  # split at every byte: the end straddles chunks
                conn.sendall(_REQUEST[:i])
                time.sleep(0.005)
                conn.sendall(_REQUEST[i:])
            assert _answers(conn) == len(_REQUEST)
    finally:
        server.terminate()
        server.wait(timeout=10)
