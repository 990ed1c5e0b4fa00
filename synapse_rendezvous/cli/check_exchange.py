"""The rendezvous exchange of ``check``: each step as the SDKs play it, and its record.

`Steps` plays one device or the other, reports the finding of each step as soon as it is
known, and records every answer in an `Exchange` for the rules of `check_rules`. A network
error, or a step the rest cannot do without, reports a FAIL and raises `Abort`.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import secrets
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from synapse_rendezvous.cli.check_http import NetworkError, redirect_target, url_origin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from synapse_rendezvous.cli.check_findings import Report
    from synapse_rendezvous.cli.check_http import HttpClient, Response

CREATE_PATH = "_matrix/client/unstable/org.matrix.msc4108/rendezvous"
#: What browsers send: a compressing proxy only shows itself to clients that accept it.
ACCEPT_ENCODING = "gzip, deflate, br"
#: Redirects followed at most (of the create; of discovery).
MAX_REDIRECTS = 5
#: Where fixes point to for reverse-proxy recipes.
GUIDE = "docs/admin-guide.md"
ENABLE_FIX = (
    "enable MSC4108: experimental_features.msc4108_enabled: true (with synapse-rendezvous: "
    "takeover mode) or msc4108_delegation_endpoint (delegation mode), plus "
    "matrix_authentication_service, then restart Synapse"
)
WORKERS_FIX = (
    "route both rendezvous paths to the process that created the session "
    "(docs/integration.md#workers) or use a store shared by all processes; check public_baseurl"
)
_URL_FIX = (
    "set public_baseurl to the public https URL clients use (and msc4108_delegation_endpoint "
    "to public_baseurl + _synapse/client/rendezvous)"
)
_OTHER_ORIGIN_FIX = (
    "if this server really serves its sessions there (a separate rendezvous host, or Synapse "
    "checked directly while its public_baseurl is the proxy's URL), rerun with "
    "--allow-other-origin; otherwise set public_baseurl to the public https URL clients use"
)
_REDIRECT_FIX = (
    "serve the create on the homeserver's base URL, or redirect it once with 307 to "
    "msc4108_delegation_endpoint (https when the homeserver is https)"
)
_CACHE_FIX = (
    "turn off caching on the rendezvous paths (proxy_cache, CDN cache rules) and let "
    f"Cache-Control: no-store through ({GUIDE})"
)


def opaque(etag: str) -> str:
    """The ETag without a weakness prefix: ``W/"x"`` and ``"x"`` name the same version."""
    return etag[2:] if etag.startswith("W/") else etag


def http_date(value: str | None) -> float | None:
    """An HTTP date as a POSIX timestamp, or None if absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def network_fix(error: NetworkError) -> str:
    """The fix to suggest for a network error."""
    return {
        "dns": "check the host name and its DNS records",
        "refused": "check that the homeserver or its reverse proxy listens on that address "
        "and port, and that no firewall is in the way",
        "tls": "serve a valid certificate for this host name (clients refuse invalid ones) "
        "and speak TLS on the https port",
        "timeout": "check firewalls and the reverse proxy's upstream; raise --timeout (the "
        "time limit of the whole check) if the server is only slow",
        "size": "find what answers this path with such a body (rendezvous answers are a few "
        "KiB): an error page of the reverse proxy, or another server than Synapse",
        "redirect": "serve this path directly, or redirect only within the same origin and "
        "never from https to http",
    }.get(error.kind, "look at the reverse proxy's and Synapse's logs for this request")


class Abort(Exception):
    """The exchange cannot go on; the finding that says why has been reported."""


@dataclass
class Exchange:
    """Every answer of one rendezvous exchange."""

    origin: str
    redirects: list[Response] = field(default_factory=list)
    create: Response | None = None
    session_url: str | None = None
    preflight_create: Response | NetworkError | None = None
    preflight_session: Response | NetworkError | None = None
    read: Response | None = None
    poll: Response | None = None
    poll_if_none_match: str | None = None
    write: Response | None = None
    write_if_match: str | None = None
    poll_after: Response | None = None
    stale_write: Response | None = None
    deleted: bool = False
    #: Steps that could not be played (no ETag to make them conditional).
    skipped: list[str] = field(default_factory=list)

    def successes(self) -> list[tuple[str, Response]]:
        """The successful answers, which must carry the session headers, labelled."""
        items: list[tuple[str, Response | None, int]] = [
            ("create", self.create, 201),
            ("GET", self.read, 200),
            ("304", self.poll, 304),
            ("PUT", self.write, 202),
            ("GET after PUT", self.poll_after, 200),
        ]
        return [(label, r) for label, r, status in items if r is not None and r.status == status]

    def answers(self) -> list[tuple[str, Response]]:
        """Every answer on the rendezvous paths except preflights, labelled."""
        items: list[tuple[str, Response | None]] = [
            *((f"{r.status} redirect", r) for r in self.redirects),
            ("create", self.create),
            ("GET", self.read),
            ("conditional GET", self.poll),
            ("PUT", self.write),
            ("GET after PUT", self.poll_after),
            ("stale PUT", self.stale_write),
        ]
        return [(label, r) for label, r in items if r is not None]


def _payload() -> bytes:
    """About 1 KiB of base64 text, like the SDKs' messages and big enough to get compressed."""
    return base64.b64encode(secrets.token_bytes(768))


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Steps:
    """The steps of the exchange, in the order `check` calls them."""

    def __init__(
        self, report: Report, http: HttpClient, ex: Exchange, *, allow_other_origin: bool = False
    ) -> None:
        self.report = report
        self.http = http
        self.ex = ex
        #: Send the session requests to a session URL on an origin the create did not go to.
        self.allow_other_origin = allow_other_origin
        self.payloads = [_payload(), _payload(), _payload()]

    # -- plumbing -------------------------------------------------------------------------

    def _send(
        self,
        finding_id: str,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """A rendezvous request with what a browser adds; network errors FAIL and abort."""
        sent = [("Origin", self.ex.origin), ("Accept-Encoding", ACCEPT_ENCODING), *headers]
        if body is not None:
            sent.append(("Content-Type", "text/plain"))
        try:
            return self.http.request(method, url, body=body, headers=sent)
        except NetworkError as error:
            self.report.fail(finding_id, f"{method} {url}: {error}", network_fix(error))
            raise Abort from None

    def _unexpected(self, finding_id: str, what: str, response: Response, fix: str) -> None:
        """FAIL for an unexpected status, explaining 429 and 5xx the same way everywhere."""
        summary = f"{what} answered {response.describe()}"
        if response.status == 429:
            retry = response.header("Retry-After")
            self.report.fail(
                finding_id,
                f"{summary}: rate limited"
                + (f" (retry after {retry} s)" if retry else "")
                + "; matrix-rust-sdk aborts the whole login on any 4xx",
                "rerun later; if real users hit it, raise the rate limits, or set x_forwarded on "
                "Synapse's listener so that clients are not all counted as the proxy's address",
            )
        elif response.status >= 500:
            self.report.fail(finding_id, summary, "look at Synapse's and the proxy's logs")
        else:
            self.report.fail(finding_id, summary, fix)

    # -- steps ----------------------------------------------------------------------------

    def preflight(self, url: str, method: str, headers: str) -> Response | NetworkError:
        """A browser's CORS preflight; the ``cors`` rule judges it."""
        try:
            return self.http.request(
                "OPTIONS",
                url,
                headers=[
                    ("Origin", self.ex.origin),
                    ("Access-Control-Request-Method", method),
                    ("Access-Control-Request-Headers", headers),
                ],
            )
        except NetworkError as error:
            return error

    def create(self, base_url: str) -> None:
        """POST the first message, following 307/308 with the same body and headers.

        Of at most `MAX_REDIRECTS` redirects, one may lead to another origin (delegation
        mode's, to ``msc4108_delegation_endpoint``), none from https to http. The session URL
        must then be on one of the origins the create went to (unless ``allow_other_origin``):
        a homeserver could otherwise make the check send requests to any host.
        """
        ex = self.ex
        url = base_url + CREATE_PATH
        origins = [url_origin(url)]
        for hops in range(MAX_REDIRECTS + 1):
            response = self._send("create", "POST", url, self.payloads[0])
            location = response.header("Location")
            if response.status not in (307, 308) or not location:
                break
            target, refusal = redirect_target(url, location, other_origin=len(origins) == 1)
            if refusal is None and hops == MAX_REDIRECTS:
                refusal = f"one redirect too many (after {MAX_REDIRECTS}, to {target})"
            if refusal is not None:
                self.report.fail(
                    "create", f"POST {url} answered {response.status}: {refusal}", _REDIRECT_FIX
                )
                raise Abort
            ex.redirects.append(response)
            if url_origin(target) not in origins:
                origins.append(url_origin(target))
            url = target
        what = f"POST {url}"
        if 300 <= response.status < 400:
            self.report.fail(
                "create",
                f"{what} answered {response.describe()}"
                + ("" if response.status in (307, 308) else ": clients turn the POST into a GET"),
                "redirect the create with 307 and a Location (as msc4108_delegation_endpoint "
                "does), or serve it directly",
            )
            raise Abort
        if response.status != 201:
            if response.status in (404, 405) or response.errcode() == "M_UNRECOGNIZED":
                fix = f"{ENABLE_FIX}; route ^/{CREATE_PATH} to Synapse's main process"
            else:
                fix = (
                    "let the body, Content-Type and Content-Length through unchanged, and allow "
                    "payloads of 4096 bytes"
                )
            self._unexpected("create", what, response, fix)
            raise Abort
        value = response.json()
        session_url = value.get("url") if isinstance(value, dict) else None
        if not isinstance(session_url, str):
            self.report.fail(
                "create",
                f'{what} answered 201 without a JSON body {{"url": ...}}',
                "let the create answer through unchanged",
            )
            raise Abort
        ex.create = response
        self.report.session_url = session_url
        via = f" (via {ex.redirects[-1].status} to {url})" if ex.redirects else ""
        self.report.ok("create", f"POST /{CREATE_PATH} answers 201 with a session URL{via}")
        self._judge_origin(session_url, [o for o in origins if o is not None])
        ex.session_url = session_url

    def _judge_origin(self, url: str, origins: list[str]) -> None:
        """FAIL and abort, before anything is sent there, for a session URL that is not an
        absolute http(s) URL, or (unless allowed) not on an origin the create went to."""
        origin = url_origin(url)
        if origin is None:
            self.report.fail(
                "session-url", f"the session URL {url!r} is not an absolute http(s) URL", _URL_FIX
            )
            raise Abort
        if origin in origins or self.allow_other_origin:
            return
        self.report.fail(
            "session-url",
            f"the session URL {url} is on another origin ({origin}) than the create "
            f"({' and '.join(origins)}): the check sends nothing there unless run with "
            "--allow-other-origin",
            _OTHER_ORIGIN_FIX,
        )
        raise Abort

    def read(self, base_url: str) -> None:
        """The scanning device's first GET, which also judges the session URL."""
        url = self.ex.session_url
        assert url is not None
        parts, base = urlsplit(url), urlsplit(base_url)
        problem = None  # both only with --allow-other-origin: another origin otherwise
        if base.scheme == "https" and parts.scheme != "https":
            problem = (
                f"the session URL {url} is http:// although the homeserver is https://: "
                "browsers block it and it travels in clear"
            )
        elif _is_loopback(parts.hostname) and not _is_loopback(base.hostname):
            problem = f"the session URL {url} points at a loopback address: phones cannot reach it"
        try:
            response = self.http.request(
                "GET",
                url,
                headers=[("Origin", self.ex.origin), ("Accept-Encoding", ACCEPT_ENCODING)],
            )
        except NetworkError as error:
            self.report.fail(
                "session-url",
                f"the session URL {url} is not reachable from here: {error}",
                f"{_URL_FIX}; route ^/_synapse/client/rendezvous to Synapse",
            )
            raise Abort from None
        if response.status == 404:
            self.report.fail(
                "session-url",
                f"the new session is 404 at its URL {url}: the GET reached a process that does "
                "not hold it, or the URL points at another server",
                WORKERS_FIX,
            )
            raise Abort
        if response.status != 200:
            self._unexpected("session-url", f"GET {url}", response, _URL_FIX)
            raise Abort
        self.ex.read = response
        if problem is not None:
            self.report.fail("session-url", problem, _URL_FIX)
        elif response.body is not None and response.body != self.payloads[0]:
            self.report.fail(
                "session-url",
                f"GET {url} answered 200 but not with the payload just created",
                "send the session paths to Synapse, uncached",
            )
        else:
            self.report.ok("session-url", f"the session URL {url} answers 200 with the payload")

    def conditional_get(self) -> None:
        """The creating device polls with the ETag of its create: 304."""
        ex = self.ex
        assert ex.session_url is not None
        etag = _etag(ex.create) or _etag(ex.read)
        if etag is None:
            ex.skipped.append("the conditional GET")
            return
        response = self._send(
            "conditional-get", "GET", ex.session_url, headers=[("If-None-Match", etag)]
        )
        ex.poll, ex.poll_if_none_match = response, etag
        if response.status == 304:
            self.report.ok("conditional-get", "GET with If-None-Match answers 304 Not Modified")
        elif response.status == 200:
            weak = " (the ETag arrived weak, W/..., and this server compares it strongly)"
            self.report.fail(
                "conditional-get",
                f"GET with If-None-Match: {etag} answers 200, not 304"
                + (weak if etag.startswith("W/") else "")
                + ": polling devices take back their own message as the other device's answer",
                "pass If-None-Match and ETag through unchanged; turn off compression and "
                f"caching on the rendezvous paths ({GUIDE})",
            )
        else:
            self._unexpected(
                "conditional-get",
                "GET with If-None-Match",
                response,
                "pass If-None-Match through unchanged",
            )

    def put(self) -> None:
        """The scanning device answers, with If-Match: the ETag of its read."""
        ex = self.ex
        assert ex.session_url is not None
        etag = _etag(ex.read) or _etag(ex.create)
        if etag is None:
            ex.skipped.append("the conditional PUT")
            return
        response = self._send("put", "PUT", ex.session_url, self.payloads[1], [("If-Match", etag)])
        ex.write, ex.write_if_match = response, etag
        what = f"PUT with If-Match: {etag}"
        new = _etag(response)
        if response.status == 202 and new is not None and opaque(new) == opaque(etag):
            self.report.fail(
                "put",
                f"{what} answered 202 but kept the same ETag: a polling device never sees the "
                "write",
                "let the ETag through unchanged; the server must issue a new one per write",
            )
        elif response.status == 202:
            weak = " (the weak If-Match was accepted)" if etag.startswith("W/") else ""
            self.report.ok("put", f"PUT with the current ETag answers 202 with a new ETag{weak}")
        elif response.status == 412:
            self.report.fail(
                "put",
                self._explain_412(what, etag),
                "turn off compression (gzip, brotli, zstd) for the rendezvous paths and pass "
                f"ETag and If-Match through unchanged ({GUIDE})",
            )
        elif response.status == 404:
            self.report.fail(
                "put", f"{what} answered 404: the session vanished after the GET", WORKERS_FIX
            )
        else:
            self._unexpected(
                "put", what, response, "pass If-Match and Content-Type through unchanged"
            )

    def _explain_412(self, what: str, etag: str) -> str:
        start = f"{what} (the current ETag) answered 412 M_CONCURRENT_WRITE: every write fails"
        if etag.startswith("W/"):
            return (
                f"{start}, because the ETag arrived weak (W/...), weakened on the way (usually "
                "by compression), and this server compares If-Match strongly"
            )
        tags = [t for t in (_etag(self.ex.create), _etag(self.ex.read)) if t is not None]
        if len({opaque(t) for t in tags}) > 1:
            return f"{start}, because the ETag is rewritten on the way ({' vs '.join(tags)})"
        return f"{start}: If-Match is altered on the way, or another client wrote meanwhile"

    def poll_after_write(self) -> None:
        """The creating device polls again with its old ETag: now it gets the answer."""
        ex = self.ex
        if ex.write is None or ex.write.status != 202 or ex.poll_if_none_match is None:
            return
        assert ex.session_url is not None
        response = self._send(
            "poll-after-write",
            "GET",
            ex.session_url,
            headers=[("If-None-Match", ex.poll_if_none_match)],
        )
        ex.poll_after = response
        if response.status == 200 and response.body == self.payloads[0]:
            self.report.fail(
                "poll-after-write",
                "a poll after the write still gets the old payload: a cache answers polls, so "
                "the other device never sees the update",
                _CACHE_FIX,
            )
        elif response.status == 200:
            self.report.ok("poll-after-write", "a poll with the previous ETag gets the new payload")
        elif response.status == 304:
            self.report.fail(
                "poll-after-write",
                "a poll with the previous ETag still answers 304 after the write: the other "
                "device never sees the update and polls forever",
                _CACHE_FIX,
            )
        else:
            self._unexpected("poll-after-write", "GET after the PUT", response, _CACHE_FIX)

    def stale_put(self) -> None:
        """A write based on the version before the PUT: 412."""
        ex = self.ex
        if ex.write is None or ex.write.status != 202 or ex.write_if_match is None:
            return
        assert ex.session_url is not None
        response = self._send(
            "stale-put", "PUT", ex.session_url, self.payloads[2], [("If-Match", ex.write_if_match)]
        )
        ex.stale_write = response
        if response.status == 412:
            value = response.json()
            code = value.get("org.matrix.msc4108.errcode") if isinstance(value, dict) else None
            self.report.ok(
                "stale-put", f"PUT with a stale ETag is refused with 412 ({code or 'no errcode'})"
            )
        elif response.status == 202:
            self.report.fail(
                "stale-put",
                "PUT with a stale ETag was accepted: the two devices can overwrite each other",
                "pass If-Match through unchanged; the server must compare it with the current ETag",
            )
        else:
            self._unexpected(
                "stale-put", "PUT with a stale ETag", response, "pass If-Match through unchanged"
            )

    def delete(self) -> None:
        """DELETE, then GET: 404."""
        ex = self.ex
        assert ex.session_url is not None
        response = self._send("delete", "DELETE", ex.session_url)
        if response.status != 204:
            self._unexpected(
                "delete",
                f"DELETE {ex.session_url}",
                response,
                "let DELETE through to Synapse on the rendezvous paths",
            )
            return
        ex.deleted = True
        gone = self._send("delete", "GET", ex.session_url)
        if gone.status == 404:
            self.report.ok("delete", "DELETE answers 204 and the session is gone (GET: 404)")
        else:
            self.report.fail(
                "delete",
                f"GET after DELETE answered {gone.describe()} instead of 404: a cache answers, "
                "or the DELETE reached a process that does not hold the session",
                f"turn off caching on the rendezvous paths; {WORKERS_FIX}",
            )

    def cleanup(self) -> None:
        """Best-effort DELETE when the exchange stopped before its own."""
        if self.ex.session_url is None or self.ex.deleted:
            return
        with contextlib.suppress(NetworkError):
            self.http.request("DELETE", self.ex.session_url, headers=[("Origin", self.ex.origin)])


def _etag(response: Response | None) -> str | None:
    return None if response is None else response.header("ETag")
