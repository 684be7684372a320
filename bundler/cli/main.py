"""The ``bundle`` command: argument parsing and printing only; every verb is one API call.

This module is the entry point (``bundle``, ``python -m bundler``): it parses with
``bundler.cli.parser``, runs the command's handler (``cli_bundle``: build, verify, inspect,
schema, env; ``cli_signing``: keygen, sign; ``cli_deploy``: push, pull, serve; ``cli_diff``:
diff) and turns errors into exit codes. The handlers render what the API returns, through
``bundler.cli.terminal``.

Exit codes: 0 success, 1 the operation failed (a damaged or incompatible bundle, a failed build),
2 bad input (a bad manifest, a path that is not a bundle, a wrong option). User mistakes print one
clear line (plus details) on stderr, never a traceback unless ``--debug``.

Text output shows data from bundles and registries (names, paths, messages that quote them)
through ``bundler.text.shown``, so terminal escapes and bidi overrides in them are printed as
visible escapes; ``--json`` output is exact (``json`` escapes them itself), and strict (no NaN).
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from bundler.cli.bundle import run_build, run_env, run_inspect, run_schema, run_verify
from bundler.cli.deploy import run_pull, run_push, run_serve
from bundler.cli.diff import run_diff
from bundler.cli.parser import PROG, make_parser
from bundler.cli.signing import run_keygen, run_sign
from bundler.errors import BundleError
from bundler.text import shown

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": run_build,
    "verify": run_verify,
    "inspect": run_inspect,
    "schema": run_schema,
    "env": run_env,
    "push": run_push,
    "pull": run_pull,
    "serve": run_serve,
    "diff": run_diff,
    "sign": run_sign,
    "keygen": run_keygen,
}
"""Each command's handler, by the name ``bundler.cli.parser`` gives it."""


def _error_text(error: BundleError) -> str:
    """The error as text, escaped: its message may be a table (newlines kept), each detail is
    one line (a newline in a quoted file name is escaped, so it cannot fake a line of ours)."""
    head = BundleError(error.message, path=error.path, field=error.field)
    return "\n".join([shown(head, lines=True), *(f"  {shown(line)}" for line in error.details)])


def _terminate(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so that `finally` blocks remove a build's temporary folder.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bundle`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = make_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    run = COMMANDS[args.verb]
    try:
        return run(args)
    except BundleError as error:
        if args.debug:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: error: {_error_text(error)}\n")
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as error:
        if args.debug:
            raise
        sys.stderr.write(
            f"{PROG}: internal error: {type(error).__name__}: {shown(error, lines=True)}\n"
            f"  (this is a bug in bundler; run with --debug for the traceback)\n"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
