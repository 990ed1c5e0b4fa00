"""The ``lifetime`` and ``clock`` findings of ``check``: how long a session really lasts.

matrix-js-sdk arms its expiry timer from the absolute ``Expires`` of the create against the
device's own clock: a device whose clock runs S seconds ahead of the server's gets the
session's lifetime minus S. matrix-rust-sdk ignores ``Expires``.
"""

from __future__ import annotations

import statistics

from synapse_rendezvous.cli.check_exchange import Exchange, http_date
from synapse_rendezvous.cli.check_findings import Finding

__all__ = [
    "MIN_LIFETIME_S",
    "MIN_USABLE_LIFETIME_S",
    "SKEW_TOLERANCE_S",
    "clock_rule",
    "clock_skew_seconds",
    "lifetime_rule",
    "lifetime_seconds",
]

#: Below this usable lifetime (seconds) a login is at risk: WARN.
MIN_USABLE_LIFETIME_S = 60.0
#: Below this lifetime nobody can scan a code and confirm in time: FAIL.
MIN_LIFETIME_S = 30.0
#: ``Date`` has a resolution of one second: smaller differences are not skew.
SKEW_TOLERANCE_S = 2.0


def lifetime_seconds(ex: Exchange) -> float | None:
    """Session lifetime: ``Expires`` minus ``Last-Modified`` (else ``Date``) of the create.

    Both come from the rendezvous server's clock when the session is created, so this is the
    server's TTL whatever the clocks on the way say.
    """
    if ex.create is None:
        return None
    expires = http_date(ex.create.header("Expires"))
    start = http_date(ex.create.header("Last-Modified")) or http_date(ex.create.header("Date"))
    if expires is None or start is None:
        return None
    return expires - start


def lifetime_rule(ex: Exchange) -> Finding | None:
    lifetime = lifetime_seconds(ex)
    if lifetime is None:
        return None
    fix = (
        "raise the session lifetime to 120 s or more: synapse-rendezvous's 'ttl' (default "
        "120 s); Synapse's built-in is fixed at 60 s"
    )
    if lifetime < MIN_LIFETIME_S:
        return Finding(
            "lifetime",
            "FAIL",
            f"sessions live {lifetime:.0f} s (Expires - Last-Modified on create): too short to "
            "scan a code and confirm on the other device",
            fix,
        )
    if lifetime <= MIN_USABLE_LIFETIME_S:
        return Finding(
            "lifetime",
            "WARN",
            f"sessions live {lifetime:.0f} s (Expires - Last-Modified on create), like Synapse's "
            "built-in: no margin for a slow scan or a device whose clock runs ahead of the "
            "server ('Rendezvous failed: expired')",
            fix,
        )
    return Finding("lifetime", "OK", f"sessions live {lifetime:.0f} s (Expires - Last-Modified)")


def clock_skew_seconds(ex: Exchange) -> float | None:
    """Median of ``Date`` minus the local time of each answer (positive: server ahead)."""
    samples = []
    for _, response in ex.answers():
        date = http_date(response.header("Date"))
        if date is not None:
            # Date is truncated to the second: the server's time was in [Date, Date + 1).
            local = (response.sent_at + response.received_at) / 2
            samples.append(date + 0.5 - local)
    return statistics.median(samples) if samples else None


def clock_rule(ex: Exchange) -> Finding | None:
    """Skew between the server's Date and this machine, against the session lifetime.

    matrix-js-sdk arms its expiry timer from the absolute ``Expires`` against the device's own
    clock: a device whose clock runs ahead of the server's by S seconds gets ``lifetime - S``.
    """
    if not ex.answers():
        return None
    skew = clock_skew_seconds(ex)
    if skew is None:
        return Finding(
            "clock",
            "WARN",
            "no valid Date header on the rendezvous answers: clock skew not measured",
            "let the Date header through the reverse proxy",
        )
    lifetime = lifetime_seconds(ex)
    if abs(skew) <= SKEW_TOLERANCE_S:
        return Finding(
            "clock",
            "OK",
            f"the server's Date agrees with this machine's clock (within {SKEW_TOLERANCE_S:g} s)",
        )
    direction = "ahead of" if skew > 0 else "behind"
    if lifetime is None:
        return Finding(
            "clock",
            "OK" if skew > 0 else "WARN",
            f"the server's Date is {abs(skew):.0f} s {direction} this machine's clock",
            None if skew > 0 else "run NTP on the homeserver and on this machine",
        )
    usable = lifetime + skew
    if skew < 0 and usable < MIN_USABLE_LIFETIME_S:
        return Finding(
            "clock",
            "FAIL" if usable <= 0 else "WARN",
            f"the server's Date is {-skew:.0f} s behind this machine's clock: matrix-js-sdk on a "
            f"device set like this machine gives the {lifetime:.0f} s session only "
            f"{max(usable, 0):.0f} s ('Rendezvous failed: expired')",
            "run NTP (chrony, systemd-timesyncd) on the homeserver, on whatever sets Date on the "
            "way, and on this machine; a longer ttl gives margin",
        )
    return Finding(
        "clock",
        "OK",
        f"the server's Date is {abs(skew):.0f} s {direction} this machine's clock: harmless "
        f"here, a device set like this machine counts {usable:.0f} s until Expires (the session "
        f"lives {lifetime:.0f} s)",
    )
