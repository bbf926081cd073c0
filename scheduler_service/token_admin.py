"""``wsi-scheduler add-token USER`` / ``revoke-tokens USER``: manage the API
token file. A new token is printed once; the file keeps only its hash. A
running scheduler and gateway see the change at their next call."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from wsi_runtime import settings
from wsi_runtime.token_file import add_token, revoke_user

COMMANDS = ("add-token", "revoke-tokens")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="wsi-scheduler", description=__doc__)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("user", help="the user id the token stands for")
    settings.add(parser, "--auth-tokens", "", "the API token file")
    args = parser.parse_args(argv)
    if not args.auth_tokens:
        parser.error("name the token file: --auth-tokens FILE or WSI_AUTH_TOKENS")
    path = Path(args.auth_tokens)
    try:
        if args.command == "add-token":
            token = add_token(path, args.user)
            print(token)
            print(
                f"token for {args.user!r} added to {path} (only its hash is kept:"
                " this is the one time it is shown)",
                file=sys.stderr,
            )
        else:
            removed = revoke_user(path, args.user)
            print(f"{removed} token(s) of {args.user!r} removed from {path}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"wsi-scheduler: error: {exc}\n")
    return 0
