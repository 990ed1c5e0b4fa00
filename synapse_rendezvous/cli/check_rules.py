"""Findings of ``check`` that look across the whole recorded `Exchange`.

Each rule turns the record into one `Finding`, or None when it has nothing to look at.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from synapse_rendezvous.cli.check_clock import clock_rule, lifetime_rule
from synapse_rendezvous.cli.check_exchange import GUIDE, Exchange, http_date, opaque
from synapse_rendezvous.cli.check_findings import Finding
from synapse_rendezvous.cli.check_http import NetworkError

if TYPE_CHECKING:
    from collections.abc import Callable

    from synapse_rendezvous.cli.check_http import Response

__all__ = ["RULES"]

_QUOTED_ETAG = re.compile(r'^(W/)?"[^"]*"$')
_SIMPLE_METHODS = {"GET", "HEAD", "POST"}


def _labels(labels: list[str]) -> str:
    unique = list(dict.fromkeys(labels))
    if len(unique) <= 1:
        return "".join(unique)
    return ", ".join(unique[:-1]) + " and " + unique[-1]


def headers_rule(ex: Exchange) -> Finding | None:
    """ETag, Expires and Last-Modified on create, GET, 304 and PUT (Element X needs them)."""
    answers = ex.successes()
    if not answers:
        return None
    missing: dict[str, list[str]] = {}
    invalid: dict[str, list[str]] = {}
    for label, response in answers:
        for name in ("ETag", "Expires", "Last-Modified"):
            value = response.header(name)
            if value is None:
                missing.setdefault(name, []).append(label)
            elif name != "ETag" and http_date(value) is None:
                invalid.setdefault(name, []).append(label)
    checked = _labels([label for label, _ in answers])
    if not missing and not invalid:
        return Finding("headers", "OK", f"ETag, Expires and Last-Modified on {checked}")
    parts = [f"no {name} on {_labels(labels)}" for name, labels in missing.items()]
    parts += [
        f"{name} is not an HTTP date on {_labels(labels)}" for name, labels in invalid.items()
    ]
    summary = "; ".join(parts) + (
        ": Element X fails the login without all three"
        + (", and matrix-js-sdk cancels with ETagMissing" if "ETag" in missing else "")
    )
    if ex.skipped:
        summary += f" ({_labels(ex.skipped)} not checked without an ETag)"
    return Finding(
        "headers",
        "FAIL",
        summary,
        "something between clients and the server strips these headers: pass ETag, Expires and "
        f"Last-Modified through unchanged on the rendezvous paths ({GUIDE})",
    )


def etag_rule(ex: Exchange) -> Finding | None:
    """ETags strong, and unchanged by the path: one version, one ETag, wherever it is seen."""
    versions: list[list[tuple[str, Response | None]]] = [
        [("create", ex.create), ("GET", ex.read), ("304", ex.poll)],
        [("GET after PUT", ex.poll_after), ("stale PUT", ex.stale_write)],
    ]
    if ex.write is not None and ex.write.status == 202:
        versions[1].insert(0, ("PUT", ex.write))
    else:  # a refused PUT answers with the ETag of the version before it
        versions[0].append(("PUT", ex.write))
    tags: list[list[tuple[str, str]]] = [
        [(label, tag) for label, r in group if r is not None and (tag := r.header("ETag"))]
        for group in versions
    ]
    seen = [item for group in tags for item in group]
    if not seen:
        return None
    mismatches = [
        f"{group[0][0]} gave {group[0][1]} but {label} gave {tag}"
        for group in tags
        for label, tag in group[1:]
        if opaque(tag) != opaque(group[0][1])
    ]
    if mismatches:
        return Finding(
            "etag",
            "FAIL",
            "the ETag of one version changes on the way (" + "; ".join(mismatches[:2]) + "): "
            "clients then never match it, so polls never settle and writes fail with 412",
            "stop the reverse proxy or CDN from rewriting ETags on the rendezvous paths (Apache "
            "mod_deflate appends -gzip, compression rewrites them): turn compression off "
            f"({GUIDE})",
        )
    weak = [label for label, tag in seen if tag.startswith("W/")]
    if weak:
        return _weak_etag_finding(ex, weak)
    malformed = [label for label, tag in seen if not _QUOTED_ETAG.match(tag)]
    if malformed:
        return Finding(
            "etag",
            "WARN",
            f"the ETag on {_labels(malformed)} is not a quoted string",
            'serve quoted ETags ("..."); check what rewrites them on the way',
        )
    return Finding(
        "etag", "OK", "strong ETags, one per version, identical wherever that version is seen"
    )


def _weak_etag_finding(ex: Exchange, weak: list[str]) -> Finding:
    """Weak ETags: FAIL if this server refused them back, else WARN (it tolerates them)."""
    refused = []
    if ex.write is not None and ex.write.status == 412 and _weak(ex.write_if_match):
        refused.append("every write fails with 412")
    if ex.poll is not None and ex.poll.status != 304 and _weak(ex.poll_if_none_match):
        refused.append("polls never get 304")
    consequence = (
        f"this server compares it strongly, so {' and '.join(refused)}"
        if refused
        else "this server accepts it back in If-Match, but Synapse's built-in answers every "
        "such write with 412"
    )
    return Finding(
        "etag",
        "FAIL" if refused else "WARN",
        f"the ETag arrives weak (W/...) on {_labels(weak)}: something on the way weakened it, "
        f"usually by compressing the response; {consequence}",
        f"turn off compression (gzip, brotli, zstd) for the rendezvous paths ({GUIDE})",
    )


def _weak(tag: str | None) -> bool:
    return tag is not None and tag.startswith("W/")


def compression_rule(ex: Exchange) -> Finding | None:
    """No Content-Encoding on rendezvous answers, although we accept it like browsers."""
    answers = ex.answers()
    if not answers:
        return None
    encoded = [(label, r.content_encoding) for label, r in answers if r.content_encoding]
    if not encoded:
        return Finding(
            "compression",
            "OK",
            "no Content-Encoding on rendezvous answers (asked with Accept-Encoding: gzip, "
            "deflate, br, like a browser)",
        )
    codings = _labels([coding for _, coding in encoded])
    undecodable = [label for label, r in answers if r.content_encoding and r.body is None]
    return Finding(
        "compression",
        "WARN",
        f"rendezvous answers arrive compressed ({codings} on {_labels([x for x, _ in encoded])}): "
        "compression is what weakens or strips ETags on the way"
        + (f" (this check could not decode {_labels(undecodable)})" if undecodable else ""),
        "turn off compression for the rendezvous paths in the reverse proxy or CDN, and "
        f"'compress: false' on Synapse's client listener ({GUIDE})",
    )


def cache_control_rule(ex: Exchange) -> Finding | None:
    """``Cache-Control`` with ``no-store`` and ``no-transform`` on every session answer."""
    answers = ex.successes()
    if not answers:
        return None
    lacking: dict[str, list[str]] = {}
    for label, response in answers:
        directives = {d.lower().split("=")[0] for d in response.header_list("Cache-Control")}
        for directive in ("no-store", "no-transform"):
            if directive not in directives:
                lacking.setdefault(directive, []).append(label)
    if not lacking:
        checked = _labels([label for label, _ in answers])
        return Finding("cache-control", "OK", f"Cache-Control: no-store, no-transform on {checked}")
    why = {
        "no-store": "caches may answer polls with stale data",
        "no-transform": "proxies may compress answers and weaken their ETag",
    }
    return Finding(
        "cache-control",
        "WARN",
        "; ".join(
            f"Cache-Control lacks {d} on {_labels(labels)} ({why[d]})"
            for d, labels in lacking.items()
        ),
        "let the server's Cache-Control: no-store, no-transform through unchanged (no proxy "
        "'expires' or 'add_header Cache-Control' on the rendezvous paths)",
    )


def content_type_rule(ex: Exchange) -> Finding | None:
    """A GET with a payload answers exactly ``Content-Type: text/plain``."""
    answers = [
        (label, r)
        for label, r in (("GET", ex.read), ("GET after PUT", ex.poll_after))
        if r is not None and r.status == 200
    ]
    if not answers:
        return None
    wrong = [(label, r.header("Content-Type")) for label, r in answers]
    wrong = [(label, value) for label, value in wrong if value != "text/plain"]
    if not wrong:
        return Finding(
            "content-type",
            "OK",
            "GET answers exactly Content-Type: text/plain, as both SDKs expect",
        )
    label, value = wrong[0]
    shown = "no Content-Type" if value is None else f"Content-Type: {value}"
    return Finding(
        "content-type",
        "FAIL",
        f"{label} answers {shown} instead of exactly text/plain: matrix-js-sdk then ignores the "
        "payload and polls forever, matrix-rust-sdk rejects it",
        "remove what changes the type on the rendezvous paths (nginx 'charset', 'default_type', "
        "'add_header Content-Type'; a CDN adding '; charset=utf-8')",
    )


def _preflight_problems(
    label: str,
    response: Response | NetworkError | None,
    origin: str,
    methods: set[str],
    headers: set[str],
) -> list[str]:
    if response is None:
        return []
    if isinstance(response, NetworkError):
        return [f"{label}: {response}"]
    if not 200 <= response.status < 300:
        return [f"{label} answers {response.describe()}"]
    problems = _allow_origin_problems(label, response, origin)
    allowed_methods = {m.upper() for m in response.header_list("Access-Control-Allow-Methods")}
    if "*" not in allowed_methods:
        refused = sorted(methods - allowed_methods - _SIMPLE_METHODS)
        if refused:
            problems.append(f"{label} does not allow {', '.join(refused)}")
    allowed_headers = {h.lower() for h in response.header_list("Access-Control-Allow-Headers")}
    if "*" not in allowed_headers:
        refused = sorted(headers - allowed_headers)
        if refused:
            problems.append(f"{label} does not allow the header(s) {', '.join(refused)}")
    # A browser stops at the first problem of a preflight: report that one.
    return problems[:1]


def _allow_origin_problems(label: str, response: Response, origin: str) -> list[str]:
    value = response.header("Access-Control-Allow-Origin")
    if value is None:
        return [f"no Access-Control-Allow-Origin on {label}"]
    if value.strip() not in ("*", origin):
        return [f"Access-Control-Allow-Origin: {value} on {label} excludes {origin}"]
    return []


def cors_rule(ex: Exchange) -> Finding | None:
    """What a browser (Element Web) needs: preflights pass, ETag is readable."""
    if ex.create is None:
        return None
    problems = _preflight_problems(
        "the preflight on the create path",
        ex.preflight_create,
        ex.origin,
        {"POST"},
        {"content-type"},
    )
    problems += _preflight_problems(
        "the preflight on the session URL",
        ex.preflight_session,
        ex.origin,
        {"GET", "PUT", "DELETE"},
        {"content-type", "if-match", "if-none-match"},
    )
    for label, response in ex.answers():
        problems += _allow_origin_problems(label, response, ex.origin)
    unexposed = [
        label
        for label, r in ex.successes()
        if not {h.lower() for h in r.header_list("Access-Control-Expose-Headers")} & {"etag", "*"}
    ]
    if unexposed:
        problems.append(f"ETag not in Access-Control-Expose-Headers on {_labels(unexposed)}")
    if not problems:
        return Finding(
            "cors",
            "OK",
            f"browser preflights from {ex.origin} pass on the create path and the session URL; "
            "answers carry Access-Control-Allow-Origin and expose ETag",
        )
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return Finding(
        "cors",
        "FAIL",
        "Element Web (a browser) would be blocked: " + "; ".join(problems[:3]) + more,
        "keep the server's Access-Control-* headers on the rendezvous paths and let OPTIONS "
        "through to Synapse; do not replace them with the proxy's own CORS rules",
    )


#: The rules, in the order their findings are reported.
RULES: tuple[Callable[[Exchange], Finding | None], ...] = (
    headers_rule,
    etag_rule,
    compression_rule,
    cache_control_rule,
    content_type_rule,
    cors_rule,
    lifetime_rule,
    clock_rule,
)
