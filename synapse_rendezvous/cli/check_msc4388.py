"""The MSC4388 (2025 rendezvous) part of ``check``: is it served, and does it work.

No released client speaks MSC4388 yet; matrix-rust-sdk's branch asks discovery first and
uses MSC4388 only when it says ``create_available``, else falls back to MSC4108. So "not
served" is fine (OK), a 401 from discovery is what breaks that fallback (WARN), and when
creates are available the check plays a short exchange: create, read, write, the idempotent
retry with a token never issued, a stale write (409), delete, and a read that must be 404.
The session is deleted in any case, time permitting.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import TYPE_CHECKING, NoReturn

from synapse_rendezvous.cli.check_exchange import network_fix
from synapse_rendezvous.cli.check_http import NetworkError

if TYPE_CHECKING:
    from synapse_rendezvous.cli.check_findings import Report
    from synapse_rendezvous.cli.check_http import HttpClient, Response

PATH = "_matrix/client/unstable/io.element.msc4388/rendezvous"
CONFLICT = "IO_ELEMENT_MSC4388_CONCURRENT_WRITE"
FIX = (
    "serve MSC4388 with synapse-rendezvous (experimental_features.msc4388_mode: open or "
    "authenticated), or turn msc4388_mode off so that clients use MSC4108"
)


class _Stop(Exception):
    """A step failed (and said so); the rest cannot run."""


class _Msc4388:
    def __init__(self, report: Report, http: HttpClient, base_url: str, origin: str) -> None:
        self.report = report
        self.http = http
        self.root = base_url + PATH
        self.origin = origin

    def send(self, method: str, url: str, body: object = None) -> Response:
        headers = [("Origin", self.origin), ("Accept", "application/json")]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.append(("Content-Type", "application/json"))
        try:
            return self.http.request(method, url, body=data, headers=headers)
        except NetworkError as error:
            self.report.fail("msc4388", f"MSC4388: {method} {url}: {error}", network_fix(error))
            raise _Stop from None

    def fail(self, what: str, response: Response) -> NoReturn:
        self.report.fail("msc4388", f"MSC4388: {what} answered {response.describe()}", FIX)
        raise _Stop

    def discover(self) -> bool:
        """Whether creates are available to a signed-out device; reports what it sees."""
        response = self.send("GET", self.root)
        value = response.json()
        if response.status == 404:
            self.report.ok(
                "msc4388", "MSC4388 (2025 rendezvous) is not served: clients use MSC4108"
            )
            return False
        if response.status == 401:
            self.report.warn(
                "msc4388",
                "MSC4388 discovery answers 401 without an access token: a signed-out device "
                "(matrix-rust-sdk) then fails instead of falling back to MSC4108",
                'synapse-rendezvous answers 200 {"create_available": false} there; or turn '
                "experimental_features.msc4388_mode off",
            )
            return False
        if response.status != 200 or not isinstance(value, dict):
            self.fail("discovery", response)
        if value.get("create_available") is not True:
            self.report.ok(
                "msc4388",
                "MSC4388 is served; creating a session needs a signed-in device (authenticated)",
            )
            return False
        return True

    def exchange(self) -> None:
        created = self.send("POST", self.root, {"data": "check-1"})
        value = created.json()
        if created.status != 200 or not isinstance(value, dict):
            self.fail("create", created)
        ident, token = value.get("id"), value.get("sequence_token")
        if not isinstance(ident, str) or not isinstance(token, str):
            self.fail("create (no id or sequence_token)", created)
        url = f"{self.root}/{ident}"
        try:
            self._steps(url, token)
        finally:
            if self.http.deadline.left() > 0:
                with contextlib.suppress(NetworkError):
                    self.http.request("DELETE", url, headers=[("Origin", self.origin)])

    def _steps(self, url: str, token: str) -> None:
        read = self.send("GET", url)
        if read.status != 200 or _field(read, "sequence_token") != token:
            self.fail("a read of the new session", read)
        written = self.send("PUT", url, {"sequence_token": token, "data": "check-2"})
        new = _field(written, "sequence_token")
        if written.status != 200 or not isinstance(new, str) or new == token:
            self.fail("a write with the current token", written)
        retry = self.send(
            "PUT", url, {"sequence_token": secrets.token_urlsafe(12), "data": "check-2"}
        )
        if retry.status != 200 or _field(retry, "sequence_token") != new:
            self.report.warn(
                "msc4388-retry",
                f"MSC4388: a repeated write with an unknown token answered {retry.describe()}; "
                "the MSC wants 200 with the current token (a client retrying after a lost "
                "answer then fails)",
                FIX,
            )
        stale = self.send("PUT", url, {"sequence_token": token, "data": "check-3"})
        if stale.status != 409 or stale.errcode() not in (CONFLICT, "M_CONCURRENT_WRITE"):
            self.fail(f"a stale write (expected 409 {CONFLICT})", stale)
        deleted = self.send("DELETE", url)
        if deleted.status != 200:
            self.fail("DELETE", deleted)
        gone = self.send("GET", url)
        if gone.status != 404:
            self.fail("a read after DELETE", gone)
        self.report.ok(
            "msc4388",
            "MSC4388 is served and works: create, read, write, stale write (409), delete",
        )


def _field(response: Response, name: str) -> object:
    value = response.json()
    return value.get(name) if isinstance(value, dict) else None


def check_msc4388(report: Report, http: HttpClient, base_url: str, origin: str) -> None:
    """Adds the ``msc4388`` findings (and ``msc4388-retry`` when the retry rule fails)."""
    run = _Msc4388(report, http, base_url, origin)
    try:
        if run.discover():
            run.exchange()
    except (_Stop, TimeoutError):
        # A time limit reached here was reported by the MSC4108 part, or leaves MSC4388
        # unjudged: the report says nothing about it rather than something wrong.
        pass
