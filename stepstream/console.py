"""How the CLI shows runs, dead letters and functions: ``rich`` tables and a run's timeline."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"completed": "green", "failed": "bold red", "running": "cyan",
                "cancelled": "magenta", "retrying": "yellow", "sleeping": "blue",
                "waiting": "blue", "invoking": "blue"}
LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
BAR_WIDTH = 40
LOG_LINES = 40


def when(ms: int | None) -> str:
    """Epoch ms as local time."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def took(ms: int | None) -> str:
    """A duration in ms, readably."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms // 60_000} m {round(ms % 60_000 / 1000)} s"


def status(text: str) -> Text:
    """A status, coloured."""
    return Text(text, style=STATUS_STYLE.get(text, ""))


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def runs_table(runs: list[dict[str, Any]], *, title: str = "runs") -> Table:
    """Run summaries, one per row."""
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("status", "run", "function", "event", "started", "duration", "steps",
                   "error"):
        table.add_column(column, overflow="fold" if column == "run" else "ellipsis")
    for run in runs:
        error = run.get("error")
        table.add_row(status(run["status"]), run["run_id"], run["function_id"],
                      run["event"].get("name") or "-", when(run["started_at"]),
                      took(run.get("duration_ms")), str(run["steps"]),
                      f"{error['type']}: {error['message']}" if error else "")
    if not runs:
        table.add_row("", Text("no runs match", style="dim"), *[""] * 6)
    return table


def _bar(step: dict[str, Any], t0: int, total: int) -> Text:
    cells = [" "] * BAR_WIDTH
    styles = [""] * BAR_WIDTH

    def paint(start: int, end: int, char: str, style: str) -> None:
        first = min(BAR_WIDTH - 1, max(0, (start - t0) * BAR_WIDTH // total))
        last = min(BAR_WIDTH - 1, max(first, (end - t0) * BAR_WIDTH // total))
        for i in range(first, last + 1):
            cells[i], styles[i] = char, style

    for attempt in step["history"]:
        if attempt.get("started_at") is not None:
            ended = attempt.get("ended_at") or attempt["started_at"]
            failed = attempt["outcome"] == "failed"
            style = ("yellow" if attempt.get("next_attempt_at") else "red") if failed \
                else "green"
            paint(attempt["started_at"], ended, "█", style)
        elif attempt["outcome"] in ("sleeping", "waiting", "invoking") and attempt.get("ts"):
            paint(attempt["ts"], attempt.get("next_attempt_at") or attempt["ts"], "·", "blue")
    text = Text()
    for char, style in zip(cells, styles, strict=True):
        text.append(char, style=style)
    return text


def run_view(run: dict[str, Any]) -> RenderableType:
    """A run: its header, its steps on a timeline, its error, output and latest logs."""
    event = run.get("event") or {}
    header = Text.assemble(
        (run["function_id"], "bold"), "  ", status(run["status"]), "\n",
        f"run {run['run_id']}\n", f"event {event.get('name', '-')} ({event.get('id', '-')})\n",
        f"started {when(run['started_at'])}   ended {when(run['ended_at'])}   "
        f"took {took(run.get('duration_ms'))}   replays {run.get('replays', 0)}")
    end = run["ended_at"] or max([run["started_at"], int(time.time() * 1000)])
    for step in run["steps"]:
        for attempt in step["history"]:
            end = max(end, attempt.get("ended_at") or 0, attempt.get("ts") or 0)
    total = max(1, end - run["started_at"])
    steps = Table(title=f"steps (timeline: {took(total)})", title_justify="left")
    for column in ("step", "status", "attempts", "duration", "timeline", "output / error"):
        steps.add_column(column, no_wrap=column == "timeline")
    for step in run["steps"]:
        error = step.get("error")
        outcome = Text(f"{error['type']}: {error['message']}", style="red") if error \
            else Text(_short(step.get("output")))
        steps.add_row(step["id"], status(step["status"]), str(step["attempts"]),
                      took(step.get("duration_ms")), _bar(step, run["started_at"], total),
                      outcome)
    parts: list[RenderableType] = [Panel(header, expand=False), steps]
    if run.get("error"):
        error = run["error"]
        parts.append(Panel(Text(f"{error['type']}: {error['message']}\n\n"
                                f"{error.get('traceback') or ''}".rstrip(), style="red"),
                           title="error", title_align="left"))
    failed = [s for s in run["steps"] if s.get("error") and s["error"].get("traceback")]
    for step in failed:
        parts.append(Panel(Text(step["error"]["traceback"].rstrip(), style="red"),
                           title=f"step {step['id']}: last error", title_align="left"))
    if run["status"] == "completed":
        parts.append(Panel(json.dumps(run.get("output"), indent=2, ensure_ascii=False),
                           title="output", title_align="left"))
    logs = run.get("logs") or []
    if logs:
        lines = Text()
        for line in logs[-LOG_LINES:]:
            where = f"[{line['step_id']} #{(line.get('attempt') or 0) + 1}] " \
                if line.get("step_id") else ""
            lines.append(f"{when(line['ts'])[11:]} ")
            lines.append(f"{line['level']:<8}", style=LEVEL_STYLE.get(line["level"], "dim"))
            lines.append(f"{where}{line['message']}\n")
        title = f"logs (last {min(len(logs), LOG_LINES)} of {len(logs)})"
        parts.append(Panel(lines, title=title, title_align="left"))
    return Group(*parts)


def dead_letters_table(letters: list[dict[str, Any]], total: int) -> Table:
    """Dead letters, one per row."""
    table = Table(title=f"dead letters ({total} waiting)", title_justify="left")
    for column in ("when", "function", "run", "step", "attempts", "error"):
        table.add_column(column, overflow="fold" if column == "run" else "ellipsis")
    for letter in letters:
        error = letter.get("error") or {}
        table.add_row(when(letter["ts"]), letter["function_id"], letter["run_id"],
                      letter["step_id"], str(letter["attempt"] + 1),
                      Text(f"{error.get('type')}: {error.get('message')}", style="red"))
    return table


def functions_table(functions: list[dict[str, Any]]) -> Table:
    """Functions with counts per status and failure rates, and cron schedules."""
    table = Table(title="functions", title_justify="left")
    for column in ("function", "state", "runs", "running", "completed", "failed",
                   "cancelled", "failure rate", "schedule"):
        table.add_column(column, justify="right" if column in (
            "runs", "running", "completed", "failed", "cancelled", "failure rate") else "left")
    for f in functions:
        rate = "-" if f["failure_rate"] is None else f"{f['failure_rate'] * 100:.1f} %"
        state = Text("paused", style="yellow") if f.get("paused") else Text("active")
        table.add_row(f["function_id"], state, *(str(f[k]) for k in (
            "runs", "running", "completed", "failed", "cancelled")), rate,
            schedule_text(f.get("schedule")))
    return table


def schedule_text(schedule: dict[str, Any] | None) -> str:
    """``0 9 * * * Europe/Berlin, next 2026-03-30 09:00 CEST`` (local to the schedule)."""
    if not schedule:
        return "-"
    text = f"{schedule['cron']} {schedule['tz']}"
    if schedule.get("next_tick") is not None:
        when = datetime.fromtimestamp(schedule["next_tick"] / 1000, ZoneInfo(schedule["tz"]))
        text += f", next {when:%Y-%m-%d %H:%M:%S %Z}"
    return text
