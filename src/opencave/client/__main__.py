"""``python -m opencave.client setup-token SERVER [--no-open]``: caveclient's command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opencave.client", description="CAVE client command-line interface")
    commands = parser.add_subparsers(dest="command", help="Available commands")
    setup = commands.add_parser("setup-token", help="Set up authentication token")
    setup.add_argument("server_address", help="Server address for which to set up your token.")
    # caveclient's --overwrite is a store_true flag defaulting to True, i.e. always on;
    # --no-overwrite makes the choice possible.
    setup.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Overwrite an existing token (default: yes)",
    )
    setup.add_argument(
        "--no-open", action="store_false", dest="open", default=True, help="Do not open browser for token setup"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "setup-token":
        from .framework import CAVEclient

        CAVEclient.setup_token(server_address=args.server_address, overwrite=args.overwrite, open=args.open)
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
