"""``python -m synapse_rendezvous``: the command-line tools."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def _seconds(text: str) -> float:
    """``--timeout``: a number of seconds, more than 0 and at most 300."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 300 seconds: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synapse_rendezvous",
        description="Tools for synapse-rendezvous, the MSC4108 rendezvous module for Synapse.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="boot a local Synapse with the module and run one rendezvous exchange",
        description=(
            "Boots a throwaway Synapse (from the installed matrix-synapse) on 127.0.0.1 with "
            "the module on the in-memory store, runs one complete rendezvous exchange against "
            "it, printing each step, then keeps serving until Ctrl-C."
        ),
    )
    demo.add_argument("--port", type=int, default=None, help="listen port (default: a free one)")
    demo.add_argument("--once", action="store_true", help="stop after the exchange")

    check = commands.add_parser(
        "check",
        help="check a homeserver's QR-login rendezvous from outside, as the clients see it",
        description=(
            "Runs one real MSC4108 rendezvous exchange against any homeserver (Synapse's "
            "built-in or this module, directly or through a reverse proxy) the way Element Web "
            "and Element X do, and reports each finding as OK, WARN or FAIL with the fix. "
            "Exit status: 0 when nothing failed, 1 otherwise, 2 for usage errors."
        ),
    )
    check.add_argument(
        "target",
        metavar="HOMESERVER",
        help="the homeserver's base URL (https://matrix.example.org) or its server name "
        "(example.org, discovered through https://example.org/.well-known/matrix/client)",
    )
    check.add_argument(
        "--json", action="store_true", help="print one machine-readable JSON report instead"
    )
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="time limit of the whole check: every connection and read gets only what is left "
        "of it (default: 30)",
    )
    check.add_argument(
        "--origin",
        default="https://app.element.io",
        help="the Origin sent like a browser would (default: https://app.element.io)",
    )
    check.add_argument(
        "--allow-other-origin",
        action="store_true",
        help="send the session requests to the session URL the server gives even when it is on "
        "another origin (scheme, host, port) than the create; by default the check refuses, "
        "so that a homeserver cannot make it send requests to other hosts",
    )

    args = parser.parse_args(argv)
    if args.command == "demo":
        from synapse_rendezvous.cli.demo import run_demo

        return run_demo(port=args.port, once=args.once)
    if args.command == "check":
        from synapse_rendezvous.cli.check import TargetError, parse_target, run_check_command

        try:
            target = parse_target(args.target)
        except TargetError as error:
            check.error(str(error))
        return run_check_command(
            target,
            json_output=args.json,
            timeout=args.timeout,
            origin=args.origin,
            allow_other_origin=args.allow_other_origin,
        )
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
