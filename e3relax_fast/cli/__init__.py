"""The ``e3relax`` command: ``info``, ``predict``, ``merge``, ``preprocess``, ``train``, ``curve``, ``evaluate``, ``export``. ``main(argv)`` runs in-process, which is how the tests call it."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import Sequence

from . import curve, evaluate, export, info, merge, predict, preprocess, train

_COMMANDS = {"info": info, "predict": predict, "merge": merge, "preprocess": preprocess, "train": train,
             "curve": curve, "evaluate": evaluate, "export": export}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already says what the default is, or
    there is none to say (a flag, an unset value): one default per line, never two."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.required:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(prog="e3relax", description="One-shot crystal structure relaxation (E3Relax).")
    parser.add_argument("--version", action="version", version=f"e3relax_fast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP,
                                                 formatter_class=HelpFormatter))
    return parser


#: Exit codes shared by the commands (docs/cli.md): a usage or set-up error; an internal error (a full
#: disk, a folder that cannot be written, a bug); a run stopped by SIGINT (Ctrl-C) or SIGTERM (what a
#: batch scheduler sends before a kill) after finishing what it was writing: 128 + the signal's number.
EXIT_USAGE, EXIT_INTERNAL = 2, 4


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(_COMMANDS[args.command].run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"e3relax {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"e3relax {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as err:  # a full disk, a read-only folder: the path and the reason, on one line
        where = f" {err.filename}" if err.filename else ""
        print(f"e3relax {args.command}: cannot write{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception:  # noqa: BLE001 - a bug: its own exit code, with the traceback to report it
        traceback.print_exc()
        print(f"e3relax {args.command}: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
