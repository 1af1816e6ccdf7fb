"""The ``dodai`` command line: a thin argparse front.

Each subcommand lives in ``dodai/commands/<name>.py`` and is found automatically. A command module
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int | None``; it imports
torch and other heavy modules inside ``run`` only, so ``dodai --help`` stays instant.

Errors: a :class:`DodaiError` prints ``dodai: error: <one line>`` on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from dodai import __version__
from dodai.errors import DodaiError


def _command_modules():
    import dodai.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        yield info.name, importlib.import_module(f"dodai.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dodai",
        description="dodai (土台): the LLM roadmap, implemented from scratch and verified.",
    )
    parser.add_argument("--version", action="version", version=f"dodai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _command_modules():
        p = sub.add_parser(name.replace("_", "-"), help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        rc = args._run(args)
    except DodaiError as e:
        print(f"dodai: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dodai: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `dodai generate ... | head`: the reader went away; not an error of ours.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
