"""The ``e3relax`` command: ``info``, ``predict``, ``merge``, ``preprocess``, ``train``, ``evaluate``, ``export``. ``main(argv)`` runs in-process, which is how the tests call it."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import evaluate, export, info, merge, predict, preprocess, train

_COMMANDS = {"info": info, "predict": predict, "merge": merge, "preprocess": preprocess, "train": train,
             "evaluate": evaluate, "export": export}


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="e3relax", description="One-shot crystal structure relaxation (E3Relax).")
    parser.add_argument("--version", action="version", version=f"e3relax_fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP,
                                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_COMMANDS[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"e3relax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
