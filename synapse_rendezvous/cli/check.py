"""``python -m synapse_rendezvous check``: test a homeserver's QR-login rendezvous from outside.

Plays one real MSC4108 rendezvous exchange against any homeserver (Synapse's built-in
implementation or ours, directly or through reverse proxies) the way matrix-js-sdk (Element
Web) and matrix-rust-sdk (Element X) do, and reports each finding as OK, WARN or FAIL with a
one-line explanation and the fix. Standard library only.

The run: discovery (for a bare server name), ``/versions``, a browser preflight and the create
POST (following a delegation 307), a preflight on the session URL, a read as the scanning
device, a conditional poll (304), a conditional write (202), a poll that must see it, a write
with a stale ETag (412), the rules of `check_rules` over everything recorded, then DELETE and
a read that must be 404. The session is deleted in any case, time permitting: nothing is left
behind. After a whole exchange, MSC4388, the 2025 API (`check_msc4388`): whether it is served,
and if creates are open, a short exchange.

What a homeserver answers decides where the check sends requests, so it is restricted: the
session URL must be on an origin the create went to (unless ``allow_other_origin``), redirects
are never followed from https to http, nor to another origin except the create's delegation
307, and the whole run ends within ``timeout`` seconds however slowly the server answers.

Modules: `check_http` (the HTTP client), `check_exchange` (the steps), `check_rules` (findings
across the exchange), `check_findings` (the report).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from synapse_rendezvous.cli.check_exchange import (
    CREATE_PATH,
    ENABLE_FIX,
    MAX_REDIRECTS,
    Abort,
    Exchange,
    Steps,
    network_fix,
)
from synapse_rendezvous.cli.check_findings import Report, format_finding, format_totals
from synapse_rendezvous.cli.check_http import HttpClient, NetworkError, redirect_target
from synapse_rendezvous.cli.check_msc4388 import check_msc4388
from synapse_rendezvous.cli.check_rules import RULES

if TYPE_CHECKING:
    from collections.abc import Callable

    from synapse_rendezvous.cli.check_findings import Finding
    from synapse_rendezvous.cli.check_http import Response

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_TIMEOUT",
    "Target",
    "TargetError",
    "parse_target",
    "run_check",
    "run_check_command",
]

VERSIONS_PATH = "_matrix/client/versions"
WELL_KNOWN_PATH = ".well-known/matrix/client"
DEFAULT_ORIGIN = "https://app.element.io"
#: Seconds for the whole run (about a dozen requests; a healthy server needs one or two).
DEFAULT_TIMEOUT = 30.0
USER_AGENT = "synapse-rendezvous-check (MSC4108)"

_SERVER_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class TargetError(ValueError):
    """The command-line target is neither an http(s) URL nor a server name."""


@dataclass(frozen=True)
class Target:
    """What to check: a base URL, or a server name to discover the base URL from."""

    text: str
    base_url: str | None = None
    server_name: str | None = None


def parse_target(text: str) -> Target:
    """``https://matrix.example.org`` (a base URL) or ``example.org[:port]`` (a server name)."""
    text = text.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TargetError(f"{text!r} is not an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise TargetError(f"{text!r}: give the base URL without '?' or '#'")
        try:
            parts.port  # noqa: B018 (raises for an invalid port)
        except ValueError:
            raise TargetError(f"{text!r} has an invalid port") from None
        return Target(text, base_url=_with_slash(text))
    name = text.rstrip("/")
    if not _SERVER_NAME.match(name):
        raise TargetError(
            f"{text!r} is neither a base URL (https://matrix.example.org) nor a server name "
            "(example.org)"
        )
    return Target(text, server_name=name)


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _discover(report: Report, http: HttpClient, server_name: str, scheme: str) -> str | None:
    """The base URL from ``.well-known/matrix/client``, as clients find it from a server name."""
    url = f"{scheme}://{server_name}/{WELL_KNOWN_PATH}"
    fallback = f"{scheme}://{server_name}/"
    fix = (
        f'serve {url} with {{"m.homeserver": {{"base_url": "https://..."}}}}, or run the '
        "check with the homeserver's base URL"
    )
    try:
        response = _get_following_redirects(http, url)
    except NetworkError as error:
        report.fail("discovery", f"GET {url}: {error}", fix)
        return None
    if response.status == 404:
        report.ok("discovery", f"no {url} (404): clients fall back to {fallback}")
        return fallback
    if response.status != 200:
        report.fail("discovery", f"GET {url} answered {response.describe()}", fix)
        return None
    value = response.json()
    homeserver = value.get("m.homeserver") if isinstance(value, dict) else None
    base_url = homeserver.get("base_url") if isinstance(homeserver, dict) else None
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https"):
        report.fail(
            "discovery", f"{url} has no valid m.homeserver.base_url: clients refuse it", fix
        )
        return None
    base_url = _with_slash(base_url)
    report.ok("discovery", f"{url} points at {base_url}")
    return base_url


def _get_following_redirects(http: HttpClient, url: str) -> Response:
    """GET, following at most `MAX_REDIRECTS` redirects within the origin, none to http.

    Raises `NetworkError` (``redirect``) for a redirect not followed.
    """
    for hops in range(MAX_REDIRECTS + 1):
        response = http.request("GET", url, headers=[("Accept", "application/json")])
        location = response.header("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        target, refusal = redirect_target(url, location, other_origin=False)
        if refusal is None and hops == MAX_REDIRECTS:
            refusal = f"one redirect too many (after {MAX_REDIRECTS}, to {target})"
        if refusal is not None:
            raise NetworkError("redirect", f"answered {response.status}: {refusal}")
        url = target
    raise AssertionError("unreachable")


def _versions(report: Report, http: HttpClient, base_url: str) -> None:
    """``/versions`` must advertise ``org.matrix.msc4108``, or clients do not even try."""
    url = base_url + VERSIONS_PATH
    try:
        response = http.request("GET", url, headers=[("Accept", "application/json")])
    except NetworkError as error:
        what = f"GET {url}" if error.kind == "size" else f"cannot reach {base_url}"
        report.fail("versions", f"{what}: {error}", network_fix(error))
        raise Abort from None
    value = response.json() if response.status == 200 else None
    if not isinstance(value, dict):
        report.fail(
            "versions",
            f"GET /{VERSIONS_PATH} answered {response.describe()}"
            + (" without a JSON object" if response.status == 200 else "")
            + f": {base_url} is not a Matrix client API",
            "give the homeserver's base URL (m.homeserver.base_url in "
            ".well-known/matrix/client), e.g. https://matrix.example.org",
        )
        raise Abort
    features = value.get("unstable_features")
    if isinstance(features, dict) and features.get("org.matrix.msc4108") is True:
        report.ok("versions", f"/{VERSIONS_PATH} advertises org.matrix.msc4108")
    else:
        report.fail(
            "versions",
            f"/{VERSIONS_PATH} does not advertise org.matrix.msc4108: Element X says 'Your "
            "account provider doesn't support signing in with a QR code' and Element Web "
            "offers no QR login",
            ENABLE_FIX,
        )


def _exchange(
    report: Report, http: HttpClient, base_url: str, origin: str, allow_other_origin: bool
) -> None:
    """The rendezvous exchange, the rules over it, and the cleanup."""
    ex = Exchange(origin=origin)
    steps = Steps(report, http, ex, allow_other_origin=allow_other_origin)
    try:
        ex.preflight_create = steps.preflight(base_url + CREATE_PATH, "POST", "content-type")
        steps.create(base_url)
        assert ex.session_url is not None
        ex.preflight_session = steps.preflight(
            ex.session_url, "PUT", "content-type,if-match,if-none-match"
        )
        steps.read(base_url)
        steps.conditional_get()
        steps.put()
        steps.poll_after_write()
        steps.stale_put()
        for rule in RULES:
            finding = rule(ex)
            if finding is not None:
                report.add(finding)
        steps.delete()
    finally:
        steps.cleanup()


def run_check(
    target: Target,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    origin: str = DEFAULT_ORIGIN,
    on_finding: Callable[[Finding], None] | None = None,
    discovery_scheme: str = "https",
    allow_other_origin: bool = False,
) -> Report:
    """Run the whole check and return its report; network trouble becomes FAIL findings.

    ``timeout`` bounds the whole run, from this call on. ``allow_other_origin`` lets the
    check follow a session URL to an origin the create did not go to. ``discovery_scheme``
    exists for tests on loopback; clients always discover over https.
    """
    report = Report(target=target.text, on_finding=on_finding)
    http = HttpClient(timeout=timeout, user_agent=USER_AGENT)  # the deadline starts here
    base_url = target.base_url
    if base_url is None:
        assert target.server_name is not None
        base_url = _discover(report, http, target.server_name, discovery_scheme)
        if base_url is None:
            return report
    report.base_url = base_url
    try:
        _versions(report, http, base_url)
        _exchange(report, http, base_url, origin, allow_other_origin)
    except Abort:
        return report
    # Only after a whole MSC4108 exchange: what stopped it would stop this too, and no
    # client uses MSC4388 where MSC4108 does not work.
    check_msc4388(report, http, base_url, origin)
    return report


def run_check_command(
    target: Target,
    *,
    json_output: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    origin: str = DEFAULT_ORIGIN,
    allow_other_origin: bool = False,
    out: TextIO | None = None,
) -> int:
    """The ``check`` command: one line per finding as it goes (or one JSON report at the end),
    then the exit status (0: nothing failed, 1: something failed)."""
    stream = out if out is not None else sys.stdout

    def show(finding: Finding) -> None:
        print(format_finding(finding), file=stream, flush=True)

    if not json_output:
        print(
            f"Checking the MSC4108 rendezvous of {target.text} as Element Web and Element X "
            f"would (time limit {timeout:g} s for the whole check)",
            file=stream,
            flush=True,
        )
    report = run_check(
        target,
        timeout=timeout,
        origin=origin,
        on_finding=None if json_output else show,
        allow_other_origin=allow_other_origin,
    )
    if json_output:
        print(json.dumps(report.to_json(), indent=2), file=stream)
    else:
        print(format_totals(report), file=stream)
    return report.exit_code
