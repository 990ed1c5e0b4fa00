"""``python -m synapse_rendezvous``: the command-line tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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

    args = parser.parse_args(argv)
    if args.command == "demo":
        from synapse_rendezvous.cli.demo import run_demo

        return run_demo(port=args.port, once=args.once)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
