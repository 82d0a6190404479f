"""Issue 16 item 8: the webhook timeout is a total deadline, not a per-read timeout.

A real slow-drip server on 127.0.0.1 accepts the POST and then sends its answer one byte
every 0.2 s: each read succeeds well inside any per-read timeout, so only a total deadline
ends the request.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from memdiag.leaks.notify import Notifier


class DripServer:
    def __init__(self, interval: float = 0.2, drip: bytes = b"HTTP/1.1 200 OK\r\n" + b"X" * 200) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.interval = interval
        self.drip = drip
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.requests += 1
            with conn:
                conn.recv(65536)
                for i in range(len(self.drip)):
                    if self.stop.wait(self.interval):
                        break
                    try:
                        conn.sendall(self.drip[i : i + 1])
                    except OSError:
                        break

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    s = DripServer(drip=b"H" * 500)  # not even a status line: headers that never end
    yield s
    s.close()


def test_slow_drip_is_cut_at_the_total_deadline(drip: DripServer) -> None:
    n = Notifier(timeout=1.0)
    t0 = time.monotonic()
    n._post(drip.url, {"event": "new", "key": "k"})
    assert n.flush(timeout=6.0), "the notifier was still held by the drip"
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 2.5, elapsed  # the 1 s deadline, not 500 reads x 0.2 s
    assert n.stats["webhook_failed"] == 1 and n.stats["webhook_sent"] == 0
    assert "deadline" in n.stats["webhook_last_error"]


def test_drip_after_the_status_line_is_not_waited_for() -> None:
    s = DripServer(drip=b"HTTP/1.1 204 No Content\r\n" + b"X" * 300)
    try:
        n = Notifier(timeout=10.0)
        n._post(s.url, {"event": "new", "key": "k"})
        assert n.flush(timeout=15.0)
        assert n.stats["webhook_sent"] == 1 and n.stats["webhook_last_status"] == 204
    finally:
        s.close()
