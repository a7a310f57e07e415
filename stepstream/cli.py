"""The ``stepstream`` command: a thin shell over library functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from stepstream.cli_backfill import add_backfill
from stepstream.cli_runs import add_commands
from stepstream.errors import ConfigError, RunFailed, StepstreamError
from stepstream.options import parse_duration
from stepstream.settings import Settings


def _worker(args: argparse.Namespace) -> int:
    from stepstream.loader import load_app
    from streams.worker import run_worker

    sys.path.insert(0, ".")  # `stepstream worker examples.contacts` from a project root
    run_worker(load_app(args.module), loglevel=args.loglevel)
    return 0


def _send(args: argparse.Namespace) -> int:
    from stepstream.client import Stepstream

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("--data must be a JSON object")
    client = Stepstream("cli", settings=Settings.from_env())
    try:
        if args.wait is None:
            print(client.send(args.name, data, id=args.id))
            return 0
        try:
            output = client.send(args.name, data, id=args.id, wait=args.wait,
                                 function=args.function)
        except RunFailed as exc:
            print(f"stepstream: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(output, indent=2))
        return 0
    finally:
        client.close()


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _topics(args: argparse.Namespace) -> int:
    from topics import catalog, check_topics, ensure_topics

    settings = Settings.from_env()
    specs = catalog(settings)
    if args.action == "create":
        created = ensure_topics(settings, specs)
        print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))
        return 0
    missing = check_topics(settings, specs)
    for spec in missing:
        print(f"missing: {spec.name}")
    print("ok" if not missing else f"{len(missing)} topics missing")
    return 0 if not missing else 1


def _dev(args: argparse.Namespace) -> int:
    from stepstream.dev import run_dev

    return run_dev(module=args.module, demo=not args.no_demo, stay=not args.exit,
                   http_port=args.http_port)


def parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand reads STEPSTREAM_* settings from the env)."""
    root = argparse.ArgumentParser(prog="stepstream", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the embedded default: dev broker, Redis, SMTP sink, "
                                     "a worker with the seed example, and a demo")
    dev.add_argument("--module", default="examples.contacts")
    dev.add_argument("--no-demo", action="store_true", help="do not send the sample events")
    dev.add_argument("--exit", action="store_true", help="stop once the demo runs finished")
    dev.add_argument("--http-port", type=int, default=8288)
    dev.set_defaults(run=_dev)

    worker = sub.add_parser("worker", help="run the engine and the functions of MODULE")
    worker.add_argument("module", help="python module holding a Stepstream app (mod[:attr])")
    worker.add_argument("--loglevel", default=os.environ.get("STEPSTREAM_LOGLEVEL", "warning"),
                        help="default: $STEPSTREAM_LOGLEVEL or warning")
    worker.set_defaults(run=_worker)

    send = sub.add_parser("send", help="send an event")
    send.add_argument("name")
    send.add_argument("--data", default="{}", help="JSON object")
    send.add_argument("--id", default=None, help="event id (idempotency key)")
    send.add_argument("--wait", nargs="?", type=_seconds, const=60.0, default=None,
                      metavar="DURATION", help="wait for the run to end and print its output "
                      "(exit 1 if it failed); up to DURATION (default 60s)")
    send.add_argument("--function", default=None,
                      help="with --wait: the function whose run to wait for (when the event "
                      "starts several)")
    send.set_defaults(run=_send)

    topics = sub.add_parser("topics", help="create or check the namespace's topics")
    topics.add_argument("action", choices=["create", "check"])
    topics.set_defaults(run=_topics)

    add_commands(sub)  # runs, dlq, functions, history
    add_backfill(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (StepstreamError, ConnectionError, TimeoutError) as exc:
        print(f"stepstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
