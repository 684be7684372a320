"""``bundle push``, ``pull`` and ``serve``: a bundle on its way to a service, rendered.

``push`` and ``pull`` print the ``PushResult``/``PullResult`` that ``bundler.registry.api`` returns
(with ``--json``, its ``to_json()``), and on a terminal their stages as they go
(``terminal.Stages``); ``serve`` hands the bundles to the model server and returns when it stops.
"""

from __future__ import annotations

import argparse

from bundler.cli.terminal import (
    Stages,
    display_path,
    human_size,
    import_tensorflow_quietly,
    print_json,
)
from bundler.errors import UsageError
from bundler.frameworks.installed import install_hint
from bundler.text import shown


def run_push(args: argparse.Namespace) -> int:
    """``bundle push``: verify and push, then print the reference to deploy by."""
    from bundler.registry.api import push

    stages = Stages(enabled=not args.json)
    try:
        result = push(
            args.bundle,
            args.reference,
            insecure=args.insecure,
            format=args.format,
            on_stage=stages,
        )
    finally:
        stages.close()
    if args.json:
        print_json(result.to_json())
    else:
        signed = f", signed by {result.signed_by}" if result.signed_by else ""
        print(
            f"pushed {shown(args.bundle)} to {result.tag}  ({result.file_count} files, "
            f"{human_size(result.total_size)}{signed})\n  {result.reference}"
        )
    return 0


def run_pull(args: argparse.Namespace) -> int:
    """``bundle pull``: fetch (or find in the cache) and verify, then say where it is."""
    from bundler.registry.api import pull

    stages = Stages(enabled=not args.json)
    try:
        result = pull(
            args.reference,
            output=args.output,
            force=args.force,
            insecure=args.insecure,
            trusted_keys=[args.key] if args.key else None,
            on_stage=stages,
        )
    finally:
        stages.close()
    if args.json:
        print_json(result.to_json())
    else:
        how = "downloaded and verified" if result.downloaded else "from the cache"
        signed = ", signature valid" if result.signature_checked else ""
        print(
            f"pulled {shown(args.reference)} -> {shown(display_path(result.path))}  "
            f"({how}{signed}, {result.seconds:.2f} s)"
        )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """``bundle serve``: serve the bundles until stopped (the serve extra needed)."""
    try:
        from bundler.serve.server import serve
    except ImportError as error:
        if (error.name or "").startswith("bundler"):
            raise
        raise UsageError(f"bundle serve needs the 'serve' extra: {install_hint('serve')}") from None
    for option, value, least in (
        ("--watch", args.watch, "a number of seconds above 0"),
        ("--header-timeout", args.header_timeout, "a number of seconds above 0"),
        ("--body-timeout", args.body_timeout, "a number of seconds above 0"),
        ("--max-batch-size", args.max_batch_size, "a number of rows, 1 or more"),
        ("--max-queue", args.max_queue, "a number of requests, 1 or more"),
    ):
        if value is not None and value <= 0:
            raise UsageError(f"{option} takes {least}", value=value)
    if args.batch_timeout_ms < 0:
        raise UsageError("--batch-timeout-ms takes 0 or more", value=args.batch_timeout_ms)
    if not args.debug:
        import_tensorflow_quietly()
    serve(
        args.bundle,
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        policy=args.policy,
        watch=args.watch,
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        max_queue=args.max_queue,
        max_body_size=args.max_body_size,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
    )
    return 0
