"""``bundle keygen`` and ``bundle sign``: the publisher's side of signatures, rendered.

Checking a signature is part of ``bundle verify --key`` and ``bundle pull --key``; making keys and
signatures is a release step of its own, so its commands sit apart.
"""

from __future__ import annotations

import argparse

from bundler.text import shown


def run_keygen(args: argparse.Namespace) -> int:
    """``bundle keygen``: write a key pair and say which file is which."""
    from bundler.trust.signing import keygen

    private, public = keygen(args.output, force=args.force, type=args.type)
    print(f"wrote {private} (keep it secret) and {public} (give it to verifiers)")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    """``bundle sign``: sign a verified bundle and print the signing key's id."""
    from bundler.trust.signing import sign_bundle

    signature = sign_bundle(args.bundle, args.key, format=args.format)
    print(f"signed {shown(args.bundle)}: {signature}")
    return 0
