"""``stepstream backfill``: a thin shell over ``streams.backfill``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import Any


def moment(text: str) -> int | None:
    """``earliest`` (None) or an ISO 8601 time with its offset (``2026-11-01T00:00Z``),
    as ms since the epoch."""
    if text == "earliest":
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not 'earliest' nor an ISO time") from exc
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give the time's offset (Z, +02:00)")
    return int(at.timestamp() * 1000)


def until(text: str) -> int:
    """An ISO 8601 time with its offset, as ms since the epoch."""
    at = moment(text)
    if at is None:
        raise argparse.ArgumentTypeError("--to takes a time")
    return at


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // total if total else width
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} records",
          end="", file=sys.stderr, flush=True)


def backfill(args: argparse.Namespace) -> int:
    from stepstream.loader import load_app
    from streams.backfill import Backfill

    sys.path.insert(0, ".")
    if args.shadow:
        return shadow(args, load_app(args.module))
    if args.report is not None:
        raise SystemExit("--report goes with --shadow")
    job = Backfill(load_app(args.module), args.function, from_ms=args.from_,
                   to_ms=args.to, group=args.group)
    print(f"backfill {args.function} from {job.topic} in group {job.group}", file=sys.stderr)
    report = asyncio.run(job.run(None if args.quiet else _bar))
    if not args.quiet:
        print(file=sys.stderr)
    print(f"{report.in_range} records in range of {report.read} read; "
          f"{report.started} run starts sent (runs already started change nothing)")
    return 0


def shadow(args: argparse.Namespace, app: Any) -> int:
    """Run the function's code over the range in this process and compare its outputs
    with the live runs' (``streams.shadow``); starts and writes nothing."""
    from streams.shadow import ShadowBackfill

    if args.group is not None:
        raise SystemExit("--group resumes a backfill that starts runs; a shadow one "
                         "commits nothing to resume from")
    job = ShadowBackfill(app, args.function, from_ms=args.from_, to_ms=args.to,
                         examples=args.examples)
    print(f"shadow backfill {args.function} from {job.topic}: nothing is started or "
          "written; side-effect steps return the live runs' outputs", file=sys.stderr)
    report = asyncio.run(job.run(None if args.quiet else _bar))
    if not args.quiet:
        print(file=sys.stderr)
    print("\n".join(report.lines()))
    if args.report is not None:
        with open(args.report, "w", encoding="utf-8") as out:
            json.dump(report.as_json(), out, indent=2)
    return 0


def add_backfill(sub: Any) -> None:
    """Add ``backfill`` to the root command's subparsers."""
    command = sub.add_parser(
        "backfill", help="start a function's runs for records already in its topic "
        "(or the events topic) over a time range")
    command.add_argument("module", help="python module holding the Stepstream app")
    command.add_argument("function", help="the function's id")
    command.add_argument("--from", dest="from_", type=moment, required=True,
                         metavar="TIME", help="'earliest' or an ISO time (2026-11-01T00:00Z)")
    command.add_argument("--to", type=until, default=None, metavar="TIME",
                         help="records before this ISO time (default: up to the topic's "
                         "end when the backfill begins)")
    command.add_argument("--group", default=None,
                         help="resume a backfill: the group it printed (default: a new one)")
    command.add_argument("--shadow", action="store_true",
                         help="start nothing: run the function here over the range, steps "
                         "marked side_effect=True returning the live runs' outputs, and "
                         "compare each output with the live run's")
    command.add_argument("--report", default=None, metavar="FILE",
                         help="with --shadow: write the report as JSON to FILE")
    command.add_argument("--examples", type=int, default=10, metavar="N",
                         help="with --shadow: differences and failures shown (default 10)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(run=backfill)
