"""``python -m synapse_rendezvous demo``: a real rendezvous against a real local Synapse."""

from __future__ import annotations

import http.client
import json
import signal
import sys
import threading
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from synapse_rendezvous import devserver
from synapse_rendezvous.devserver import DevServer, SynapseStartError

if TYPE_CHECKING:
    from collections.abc import Mapping

CREATE_PATH = "/" + devserver.CREATE_PATH
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class Client:
    """One device's view of the homeserver: plain HTTP/1.1 requests, like the SDKs send."""

    def __init__(self, port: int) -> None:
        self._port = port

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=TIMEOUT_SECONDS)
        try:
            sent = {name.replace("_", "-"): value for name, value in headers.items()}
            if body is not None:
                sent.setdefault("Content-Type", "text/plain")
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(
                status=response.status,
                reason=response.reason,
                headers={name.lower(): value for name, value in response.getheaders()},
                body=response.read(),
            )
        finally:
            connection.close()


def _step(number: int, what: str, request: str, reply: Reply, detail: str = "") -> None:
    print(f"\n[{number}] {what}")
    print(f"    {request}")
    print(f"    -> {reply.status} {reply.reason}" + (f"  {detail}" if detail else ""))


def _expect(reply: Reply, status: int) -> None:
    if reply.status != status:
        raise RuntimeError(
            f"expected {status}, got {reply.status} {reply.reason}: {reply.body[:200]!r}"
        )


def run_exchange(port: int) -> None:
    """Plays both devices of a QR login through the rendezvous API, printing each step."""
    new_device, existing_device = Client(port), Client(port)

    created = new_device.request("POST", CREATE_PATH, b"hello from the new device")
    _expect(created, 201)
    url = json.loads(created.body)["url"]
    path = urlsplit(url).path
    lifetime = parsedate_to_datetime(created.header("Expires")) - parsedate_to_datetime(
        created.header("Date")
    )
    _step(
        1,
        "The new device creates a session (its URL goes into the QR code)",
        f"POST {CREATE_PATH}",
        created,
        f"url={url}  ETag={created.header('ETag')}  lifetime={lifetime.total_seconds():.0f}s",
    )

    read = existing_device.request("GET", path)
    _expect(read, 200)
    _step(2, "The existing device scans the code and reads", f"GET {path}", read, repr(read.body))

    polled = new_device.request("GET", path, If_None_Match=created.header("ETag"))
    _expect(polled, 304)
    _step(
        3,
        "The new device polls for an answer; nothing new yet",
        f"GET {path}  If-None-Match: {created.header('ETag')}",
        polled,
    )

    written = existing_device.request(
        "PUT", path, b"hello from the existing device", If_Match=read.header("ETag")
    )
    _expect(written, 202)
    _step(
        4,
        "The existing device writes its answer",
        f"PUT {path}  If-Match: {read.header('ETag')}",
        written,
        f"new ETag={written.header('ETag')}",
    )

    conflict = new_device.request(
        "PUT", path, b"a write based on an old version", If_Match=created.header("ETag")
    )
    _expect(conflict, 412)
    errcode = json.loads(conflict.body).get("org.matrix.msc4108.errcode")
    _step(
        5,
        "A write based on a stale version is refused, so nothing is lost",
        f"PUT {path}  If-Match: {created.header('ETag')}",
        conflict,
        f"errcode={errcode}",
    )

    answer = new_device.request("GET", path, If_None_Match=created.header("ETag"))
    _expect(answer, 200)
    _step(
        6,
        "The new device polls again and gets the answer",
        f"GET {path}  If-None-Match: {created.header('ETag')}",
        answer,
        repr(answer.body),
    )

    deleted = new_device.request("DELETE", path)
    _expect(deleted, 204)
    _step(7, "The new device cancels the session", f"DELETE {path}", deleted)

    gone = existing_device.request("GET", path)
    _expect(gone, 404)
    _step(
        8,
        "The session is gone for everyone",
        f"GET {path}",
        gone,
        f"errcode={json.loads(gone.body).get('errcode')}",
    )


def run_demo(port: int | None, once: bool) -> int:
    """Boots Synapse with the module, runs the exchange, then serves until interrupted."""
    server = DevServer(mode="takeover", module_config={}, port=port)
    print("Starting a local Synapse with synapse_rendezvous (in-memory store)...")
    try:
        server.start()
    except SynapseStartError as error:
        print(f"Synapse did not start:\n{error}", file=sys.stderr)
        return 1
    try:
        print(f"Synapse is serving at {server.base_url} (working directory {server.workdir})")
        try:
            run_exchange(server.port)
        except (OSError, RuntimeError, ValueError) as error:
            print(f"\nThe exchange failed: {error}", file=sys.stderr)
            return 1
        print("\nRendezvous complete: create, read, conditional read, write, conflict, delete.")
        if once:
            return 0
        print(
            f"Synapse keeps serving the rendezvous API at {server.base_url}; press Ctrl-C to stop."
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                if not server.running:
                    print("Synapse exited unexpectedly.", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        print("Stopping Synapse...")
        server.stop()
