"""The ``bundle`` command line's grammar: every command, its options and the help that teaches them.

Only the words: what each command runs is in ``bundler.cli.main`` (the dispatch) and the ``cli_*``
modules (one per group of commands). ``--help`` is the first documentation most users read, so
the help says what a command checks, what it needs installed and what it exits with, where that
is not obvious; docs/cli.md says the rest.
"""

from __future__ import annotations

import argparse

from bundler import __version__
from bundler.frameworks.installed import install_hint
from bundler.serve.settings import (
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_QUEUE,
    byte_size,
)

PROG = "bundle"
EXAMPLES = """\
examples:
  bundle build example_bundles/custom_layer/manifest.yaml -o bundles/regressor
  bundle verify bundles/regressor                  # integrity + will it load here?
  bundle verify bundles/regressor --env prod.txt   # ... on the target described by prod.txt
  bundle verify bundles/regressor --smoke          # ... and replay the golden examples
  bundle inspect bundles/regressor
  bundle env > prod.txt                            # run on the deploy target
  bundle push bundles/regressor oci://registry.example.com/ml/regressor
  bundle pull oci://registry.example.com/ml/regressor@sha256:... -o bundles/regressor

exit codes: 0 ok, 1 failed (damaged, incompatible, build failed), 2 bad input
"""


DEBUG_HELP = "show tracebacks for errors (and TensorFlow's own log)"


def make_parser() -> argparse.ArgumentParser:
    """The ``bundle`` parser: every command, option and help text; ``args.verb`` names the
    command chosen."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build, verify and inspect Keras/TensorFlow model bundles: a checksummed "
        "folder with a .keras file, a SavedModel and a lock of pinned component versions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    build = verbs.add_parser(
        "build",
        help="build a bundle from a manifest, atomically",
        description="Import the components, call the model factory, write model.keras, a "
        "SavedModel and bundle.lock.json into a temporary folder, load it in a fresh "
        "interpreter as a service would (replaying the golden examples), then rename it into "
        "place. A failed or interrupted build leaves nothing at OUT. Exit 0 built, 1 build "
        "failed (the rehearsed load included), 2 bad input. BUNDLER_REHEARSAL_TIMEOUT (seconds, "
        "default 300) bounds the wait for the rehearsal.",
    )
    build.add_argument("manifest", metavar="MANIFEST", help="manifest file (YAML or JSON)")
    build.add_argument(
        "-o", "--output", metavar="OUT", help="bundle folder (default bundles/NAME-VERSION)"
    )
    build.add_argument(
        "--force", action="store_true", help="replace OUT if it is a bundle (atomically)"
    )
    build.add_argument(
        "--no-rehearse",
        dest="rehearse",
        action="store_false",
        help="do not load the bundle in a fresh interpreter before putting it in place (by "
        "default the build does, seeing only the installed packages and the declared "
        "components, and fails if it cannot load; that costs a TensorFlow start-up, mostly "
        "overlapped). The lock records that it was not rehearsed",
    )
    build.add_argument(
        "--check-reproducible",
        action="store_true",
        help="build a second time, in a fresh process, and fail (exit 1) naming what differs "
        "if the two bundles are not identical",
    )
    build.add_argument("--json", action="store_true", help="print the result as one JSON document")

    verify = verbs.add_parser(
        "verify",
        help="check integrity and whether the bundle would load (no TensorFlow needed)",
        description="Check the lock against its schema and digest, every file's size and sha256, "
        "that nothing is missing, extra or a link, and the load plan for the installed (or "
        "--env) versions. Exit 0 ok, 1 not ok, 2 not a bundle.",
    )
    verify.add_argument("bundle", metavar="BUNDLE")
    verify.add_argument(
        "--policy",
        choices=("strict", "adapt", "fallback"),
        default="adapt",
        help="what load_bundle may do: strict = exact/compatible only; adapt "
        "(default) = also apply registered adapters; fallback = also serve the "
        "SavedModel graph",
    )
    verify.add_argument(
        "--env",
        metavar="FILE",
        help="plan for a target described by `pip freeze` "
        "output (name==version lines) instead of this machine",
    )
    verify.add_argument(
        "--smoke",
        action="store_true",
        help="also load the model here and replay its golden examples (imports TensorFlow)",
    )
    verify.add_argument("--key", metavar="PUBLIC.pem", help="require a valid signature by this key")
    verify.add_argument(
        "--digest",
        metavar="sha256:...",
        help="require this very bundle: any other, signed or not, fails (rollback, substitution)",
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help="print the verdict as one JSON document (also when the --key check fails)",
    )

    inspect = verbs.add_parser(
        "inspect",
        help="show what is inside a bundle, at a glance",
        description="Show a bundle's name, version and digest, the components it pins (version, "
        "allowed range, the objects the model uses), the frameworks it was built with, its "
        "files, metadata and golden examples, and what loading it here would do. Reads the lock "
        "and checks it; no file is hashed (that is `bundle verify`), no TensorFlow is needed. "
        "Exit 0, or 2 when BUNDLE is not a readable bundle.",
    )
    inspect.add_argument("bundle", metavar="BUNDLE")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")

    schema = verbs.add_parser(
        "schema",
        help="print the JSON Schema of the manifest or the lock",
        description="Print the JSON Schema (draft 2020-12) that a manifest or a "
        "bundle.lock.json is checked against: for editors (the yaml-language-server line at "
        "the top of a manifest) and for tools that read bundles.",
    )
    schema.add_argument("which", choices=("manifest", "lock"))

    env = verbs.add_parser(
        "env",
        help="print this environment as name==version lines (for verify --env)",
        description="Print installed distributions as name==version lines, the format "
        "`bundle verify --env FILE` reads. Run it on the deploy target.",
    )
    env.add_argument(
        "--bundle",
        metavar="BUNDLE",
        help="also list the bundle's components found on sys.path without a distribution, "
        "and the adapters their code declares (so verify --env can predict adapted loads)",
    )

    push = verbs.add_parser(
        "push",
        help="verify a bundle, then push it to an OCI registry",
        description="Verify BUNDLE, then push it as an OCI artifact, one layer per file: a CNCF "
        "ModelPack artifact (the lock one of its layers) by default, or with --format bundler "
        "bundler's own (the lock as config). Prints the manifest digest to pull or deploy "
        "by. Needs the oci extra: "
        f"{install_hint('oci')}. Credentials: BUNDLER_REGISTRY_USERNAME/PASSWORD, or "
        "docker's config.json ($DOCKER_CONFIG or ~/.docker).",
    )
    push.add_argument("bundle", metavar="BUNDLE")
    push.add_argument(
        "reference", metavar="oci://HOST[:PORT]/REPO[:TAG]", help="tag defaults to the version"
    )
    push.add_argument(
        "--insecure", action="store_true", help="plain HTTP (always for localhost registries)"
    )
    push.add_argument(
        "--format",
        choices=("modelpack", "bundler"),
        default="modelpack",
        help="artifact format (default: modelpack; bundle pull reads both)",
    )
    push.add_argument("--json", action="store_true", help="print one JSON document")

    pull = verbs.add_parser(
        "pull",
        help="fetch a bundle from an OCI registry into the cache (and -o DIR)",
        description="Fetch the bundle at REFERENCE into the content-addressed cache "
        "($BUNDLER_CACHE, default ~/.cache/bundler), checking every blob's digest and verifying "
        "the bundle before it is used; with -o, also copy it to DIR. A digest already in the "
        "cache is not fetched again.",
    )
    pull.add_argument("reference", metavar="oci://HOST[:PORT]/REPO[:TAG|@sha256:...]")
    pull.add_argument("-o", "--output", metavar="DIR", help="also place the bundle at DIR")
    pull.add_argument("--force", action="store_true", help="replace an existing bundle at DIR")
    pull.add_argument("--insecure", action="store_true", help="plain HTTP")
    pull.add_argument(
        "--key", metavar="PUBLIC.pem", help="require a valid signature by this key (pushed with it)"
    )
    pull.add_argument("--json", action="store_true", help="print one JSON document")

    serve = verbs.add_parser(
        "serve",
        help="serve bundles over HTTP and gRPC (KServe's model server), batching requests and "
        "reloading safely on SIGHUP",
        description="""\
Serve each BUNDLE under its lock's name with KServe's model server:
  GET  /v2/health/ready               ready once every bundle is verified and loaded
  GET  /v2/models/NAME                inputs, outputs, version, digest
  POST /v2/models/NAME/infer          Open Inference Protocol (v2)
  POST /v1/models/NAME:predict        {"instances": [...]} in, {"predictions": [...]} out
  gRPC on --grpc-port                 Open Inference Protocol (v2), e.g. tritonclient

A bundle is served only once it is verified, planned, loaded and has replayed its golden
examples; one that cannot be served stops the start with the reason (exit 1). Requests to
one model that arrive together run as one call (up to --max-batch-size rows); a request the
model cannot take is a 400 naming the input.

On SIGHUP each BUNDLE path is resolved again (a 'current -> v3' symlink is the usual
deploy) and the bundle it names is loaded beside the serving one, the same way. It replaces
the old one only if it passes everything; otherwise the old one keeps serving and the log
says why, in the words of `bundle verify`. Requests are answered throughout.

Needs the serve extra: """
        + install_hint("serve")
        + ".",
        epilog="examples:\n"
        "  bundle serve bundles/current                    # http://127.0.0.1:8080, gRPC :8081\n"
        "  ln -sfn v4 bundles/current.new && mv -T bundles/current.new bundles/current\n"
        "  kill -HUP PID                                   # verify v4, then swap\n"
        "  bundle serve /mnt/models/current --host 0.0.0.0 --watch 10   # in a container",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("bundle", metavar="BUNDLE", nargs="+", help="bundle folders (or symlinks)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes "
        "the models to the network, with no authentication)",
    )
    serve.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=8081,
        help="gRPC port (default: %(default)s)",
    )
    serve.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    serve.add_argument(
        "--policy",
        choices=("strict", "adapt", "fallback"),
        default="adapt",
        help="load policy, at start and on every reload (default: %(default)s)",
    )
    serve.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="also poll every SECONDS and reload when a BUNDLE path names another bundle (a new "
        "symlink target or lock digest): for platforms without SIGHUP",
    )
    batching = serve.add_argument_group("batching (per model)")
    batching.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        metavar="ROWS",
        help="most rows one model call takes from requests waiting together; 1 turns batching "
        "off (default: %(default)s)",
    )
    batching.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT_MS,
        metavar="MS",
        help="how long a request may wait for others, only while the model is under concurrent "
        "load (a lone client never waits); 0: not at all, requests arriving while the model "
        "runs are batched anyway (default: %(default)g)",
    )
    batching.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        metavar="REQUESTS",
        help="requests that may wait for a model; more are answered 503 with Retry-After "
        "(default: %(default)s)",
    )
    limits = serve.add_argument_group("limits on clients")
    limits.add_argument(
        "--max-body-size",
        type=byte_size,
        default=DEFAULT_MAX_BODY_SIZE,
        metavar="BYTES",
        help="largest request body (HTTP) or message (gRPC); larger is 413; K, M, G suffixes "
        "(powers of 1024) (default: 64M)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT,
        metavar="SECONDS",
        help="a request's line and headers must arrive within this, else 408 "
        "(default: %(default)g)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="a request's body must arrive within this after its headers, else 408 "
        "(default: %(default)g)",
    )
    diff = verbs.add_parser(
        "diff",
        help="show what changed between two bundles",
        description="Compare two bundles (folders or oci:// references) section by section: "
        "identity, components, frameworks, files, model config by layer, weights by layer and "
        "variable, metadata by key path, golden examples. Needs no TensorFlow. Exit 0 same, "
        "1 different, 2 bad input.",
    )
    diff.add_argument("old", metavar="A", help="bundle folder or oci:// reference")
    diff.add_argument("new", metavar="B", help="bundle folder or oci:// reference")
    diff.add_argument("--json", action="store_true", help="print one JSON document")

    sign = verbs.add_parser(
        "sign",
        help="sign a bundle's digest with a private key",
        description="Verify BUNDLE, then write a detached signature over its digest into it "
        "(bundle.sig.json, or model.sig with --format openssf). The bundle's files are not "
        "changed: a signature is not one of them. `bundle verify --key PUBLIC.pem` then requires "
        "it. Exit 0 signed, 1 the bundle does not verify, 2 bad input (a key that cannot be "
        "read).",
    )
    sign.add_argument("bundle", metavar="BUNDLE")
    sign.add_argument("--key", metavar="PRIVATE.pem", required=True)
    sign.add_argument(
        "--format",
        choices=("bundler", "openssf"),
        default="bundler",
        help="bundle.sig.json with an Ed25519 key (default), or model.sig in the OpenSSF "
        "model-signing format with an EC P-256 key",
    )

    keygen = verbs.add_parser(
        "keygen",
        help="create a key pair for signing",
        description="Write a new private key (PREFIX.pem, readable by you alone) and its public "
        "key (PREFIX.pub.pem) for `bundle sign` and `bundle verify --key`. Existing files are "
        "never overwritten without --force. Keep the private key out of the bundle and out of "
        "version control.",
    )
    keygen.add_argument(
        "-o",
        "--output",
        metavar="PREFIX",
        default="bundle-key",
        help="writes PREFIX.pem (private) and PREFIX.pub.pem (public)",
    )
    keygen.add_argument(
        "--type",
        choices=("ed25519", "ec-p256"),
        default="ed25519",
        help="ed25519 for bundle sign (default), ec-p256 for bundle sign --format openssf",
    )
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    for command in verbs.choices.values():
        # `bundle build M --debug` as well as `bundle --debug build M`; SUPPRESS keeps the
        # value given before the command when none is given after it
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
    return parser
