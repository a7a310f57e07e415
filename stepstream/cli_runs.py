"""``stepstream runs|dlq|history ...``: looking at runs and acting on them.

A thin shell: ``stepstream.api.ApiClient`` talks to a worker's HTTP API (``--url``,
default ``$STEPSTREAM_API_URL`` or http://127.0.0.1:8288, with
``$STEPSTREAM_HTTP_TOKEN`` when the worker wants one), ``stepstream.console`` draws,
``streams.rebuild`` rebuilds the read model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from stepstream.api import DEFAULT_URL, ApiClient
from stepstream.errors import ConfigError
from stepstream.settings import Settings

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def time_arg(text: str | None) -> str | None:
    """``--since``/``--until``: ``15m``, ``2h``, ``7d`` ago, or what the API takes (epoch ms,
    ISO 8601)."""
    if not text:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return str(int(time.time() * 1000) - int(match[1]) * _UNIT_MS[match[2]])
    return text


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, token=Settings.from_env().http_token)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# --- runs ----------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"function": args.function, "status": args.status, "since": time_arg(args.since),
            "until": time_arg(args.until), "limit": args.limit}


def runs_list(args: argparse.Namespace) -> int:
    """``runs list``."""
    from stepstream.console import runs_table

    page = _client(args).list_runs(**_filters(args), cursor=args.cursor)
    if args.json:
        _print_json(page)
        return 0
    console = _console()
    console.print(runs_table(page["runs"]))
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", style="dim")
    return 0


def runs_show(args: argparse.Namespace) -> int:
    """``runs show RUN_ID``."""
    from stepstream.console import run_view

    run = _client(args).get_run(args.run_id)
    if args.json:
        _print_json(run)
    else:
        _console().print(run_view(run))
    return 0


def _requested(headline: str, run_ids: list[str]) -> int:
    """Print what a bulk request asked for, a run id a line."""
    print(headline)
    for run_id in run_ids:
        print(f"  {run_id}")
    return 0


def runs_cancel(args: argparse.Namespace) -> int:
    """``runs cancel RUN_ID`` or ``runs cancel --function F [--since ..] --yes`` (bulk)."""
    client = _client(args)
    bulk = args.function or args.since or args.until or args.all
    if bulk:
        if args.run_id:
            raise ConfigError("give a run id or a filter (--function, --since, --until, "
                              "--all), not both")
        answer = client.cancel_runs(function=args.function, since=time_arg(args.since),
                                    until=time_arg(args.until), reason=args.reason,
                                    dry_run=not args.yes)
        if not args.yes:
            print(f"{answer['matched']} running runs match; add --yes to cancel them")
            return 0
        return _requested(f"cancel requested for {answer['requested']} running runs",
                          answer["run_ids"])
    if not args.run_id:
        raise ConfigError("give a run id, or a filter (--function, --since, --until, --all)")
    client.cancel(args.run_id, args.reason)
    print(f"cancel requested for {args.run_id}")
    return 0


def runs_replay(args: argparse.Namespace) -> int:
    """``runs replay RUN_ID`` or ``runs replay --function F [--since ..]`` (bulk)."""
    client = _client(args)
    if args.function:
        if args.run_id:
            raise ConfigError("give a run id or --function, not both")
        answer = client.replay_function(args.function, since=time_arg(args.since),
                                        until=time_arg(args.until), status=args.status)
        return _requested(f"replay requested for {answer['replayed']} {answer['status']} "
                          f"runs of {args.function}", answer["run_ids"])
    if not args.run_id:
        raise ConfigError("give a run id, or --function to replay a function's failed runs")
    client.replay(args.run_id, args.from_step)
    print(f"replay requested for {args.run_id}"
          + (f" from step {args.from_step}" if args.from_step else ""))
    return 0


def runs_watch(args: argparse.Namespace) -> int:
    """``runs watch [RUN_ID]``: follow one run's live stream until it ends, or a live view
    of the runs list, refreshed every ``--interval`` seconds."""
    if args.run_id:
        from stepstream.cli_watch import follow

        return follow(_client(args), args.run_id, as_json=args.json)
    from rich.live import Live

    from stepstream.console import runs_table

    client = _client(args)

    def frame() -> Any:
        page = client.list_runs(**_filters(args))
        return runs_table(page["runs"], title=f"runs (every {args.interval:g} s, Ctrl-C stops)")

    frames = 1
    with Live(frame(), console=_console(), auto_refresh=False) as live:
        while frames != args.frames:
            time.sleep(args.interval)
            live.update(frame(), refresh=True)
            frames += 1
    return 0


# --- dead letters and history ----------------------------------------------------------


def dlq_list(args: argparse.Namespace) -> int:
    """``dlq list``."""
    from stepstream.console import dead_letters_table

    page = _client(args).dead_letters(function=args.function, limit=args.limit,
                                      cursor=args.cursor)
    if args.json:
        _print_json(page)
        return 0
    console = _console()
    console.print(dead_letters_table(page["dead_letters"], page["total"]))
    if page["next_cursor"]:
        console.print(f"more: --cursor {page['next_cursor']}", style="dim")
    return 0


def dlq_replay(args: argparse.Namespace) -> int:
    """``dlq replay RUN_ID``."""
    answer = _client(args).replay_dead_letter(args.run_id)
    print(f"replay requested for {args.run_id} (steps {', '.join(answer['steps'])})")
    return 0


def functions_list(args: argparse.Namespace) -> int:
    """``functions [list]``, ``functions pause|resume FUNCTION_ID``."""
    from stepstream.console import functions_table

    client = _client(args)
    if args.action in ("pause", "resume"):
        if not args.function_id:
            raise ConfigError(f"functions {args.action} needs a function id")
        client.pause(args.function_id, paused=args.action == "pause")
        print(f"{args.action} requested for {args.function_id}")
        return 0
    functions = client.functions()
    if args.json:
        _print_json(functions)
    else:
        _console().print(functions_table(functions))
    return 0


def history_rebuild(_: argparse.Namespace) -> int:
    """``history rebuild``: flush the read model, replay the history topic into it."""
    import asyncio

    from streams.rebuild import rebuild

    settings = Settings.from_env()
    print(f"rebuilding the read model of namespace {settings.namespace!r} from "
          f"{settings.topic('history')} …", flush=True)
    result = asyncio.run(rebuild(settings))
    print(f"deleted {result.deleted_keys} keys; applied {result.records} records of "
          f"{result.runs} runs in {result.seconds:.1f} s"
          + (f"; skipped {result.skipped} undecodable" if result.skipped else ""))
    return 0


# --- the parsers -----------------------------------------------------------------------


def _command(sub: Any, name: str, run: Callable[[argparse.Namespace], int], help: str,
             *, url: bool = True) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    if url:
        parser.add_argument("--url", default=os.environ.get("STEPSTREAM_API_URL", DEFAULT_URL),
                            help="a worker's HTTP API (default $STEPSTREAM_API_URL or "
                                 f"{DEFAULT_URL})")
    parser.set_defaults(run=run)
    return parser


def _add_filters(parser: argparse.ArgumentParser, *, limit: int = 50) -> None:
    parser.add_argument("--function", help="only runs of this function")
    parser.add_argument("--status", choices=["running", "completed", "failed", "cancelled"])
    parser.add_argument("--since", help="started at or after: 15m, 2h, 7d, epoch ms, ISO 8601")
    parser.add_argument("--until", help="started at or before (same forms)")
    parser.add_argument("--limit", type=int, default=limit)


def add_commands(sub: Any) -> None:
    """Add ``runs``, ``dlq``, ``functions`` and ``history`` to the root command's subparsers."""
    runs = sub.add_parser("runs", help="list, show, watch, cancel and replay runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)
    listing = _command(runs_sub, "list", runs_list, "list runs, newest first")
    _add_filters(listing)
    listing.add_argument("--cursor", help="next page (printed under the table)")
    listing.add_argument("--json", action="store_true")
    show = _command(runs_sub, "show", runs_show, "a run: steps on a timeline, errors, logs")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="the run document as JSON")
    watch = _command(runs_sub, "watch", runs_watch,
                     "follow a run as its steps complete, until it ends (exit 0 completed, 1 "
                     "failed, 3 cancelled); without a run id, a live view of the runs list")
    watch.add_argument("run_id", nargs="?")
    watch.add_argument("--json", action="store_true",
                       help="with a run id: each event as a line of JSON")
    _add_filters(watch, limit=20)
    watch.add_argument("--interval", type=float, default=2.0,
                       help="runs list: seconds between refreshes")
    watch.add_argument("--frames", type=int, default=0,
                       help="runs list: stop after this many refreshes (default: until Ctrl-C)")
    cancel = _command(runs_sub, "cancel", runs_cancel,
                      "cancel a running run (or, with a filter, every running run it selects)")
    cancel.add_argument("run_id", nargs="?")
    cancel.add_argument("--reason")
    cancel.add_argument("--function", help="bulk: running runs of this function")
    cancel.add_argument("--since", help="bulk: started at or after (15m, 2h, epoch ms, ISO)")
    cancel.add_argument("--until", help="bulk: started at or before")
    cancel.add_argument("--all", action="store_true", help="bulk: every running run")
    cancel.add_argument("--yes", action="store_true",
                        help="bulk: cancel them (without it: only count them)")
    replay = _command(runs_sub, "replay", runs_replay,
                      "replay a failed or cancelled run (or --function: all its failed runs)")
    replay.add_argument("run_id", nargs="?")
    replay.add_argument("--from-step", help="forget this step and every step after it")
    replay.add_argument("--function", help="bulk: replay this function's runs")
    replay.add_argument("--status", choices=["failed", "cancelled"], default="failed")
    replay.add_argument("--since", help="bulk: started at or after (15m, 2h, epoch ms, ISO)")
    replay.add_argument("--until", help="bulk: started at or before")

    dlq = sub.add_parser("dlq", help="dead letters: steps that exhausted their retries")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    letters = _command(dlq_sub, "list", dlq_list, "dead letters not replayed yet")
    letters.add_argument("--function")
    letters.add_argument("--limit", type=int, default=50)
    letters.add_argument("--cursor")
    letters.add_argument("--json", action="store_true")
    again = _command(dlq_sub, "replay", dlq_replay, "replay a dead letter's run")
    again.add_argument("run_id")

    functions = _command(sub, "functions", functions_list,
                         "functions with run counts; pause or resume one")
    functions.add_argument("action", nargs="?", choices=["list", "pause", "resume"],
                           default="list")
    functions.add_argument("function_id", nargs="?")
    functions.add_argument("--json", action="store_true")

    history = sub.add_parser("history", help="the read model of run history (Redis)")
    history_sub = history.add_subparsers(dest="history_command", required=True)
    _command(history_sub, "rebuild", history_rebuild,
             "delete the namespace's read model and replay the history topic into it",
             url=False)
