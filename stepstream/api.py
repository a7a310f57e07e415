"""A small client of a worker's HTTP API (``/openapi.json``), for the CLI and for scripts.

Any worker of a namespace answers for all of it: the read model is shared, and
cancel and replay requests go to the runs topic.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from stepstream.errors import ApiError
from stepstream.sse import ServerEvent, read_events

DEFAULT_URL = "http://127.0.0.1:8288"
"""Where ``stepstream worker`` serves its API unless told otherwise."""


class ApiClient:
    """Calls one worker's HTTP API.

    Args:
        url: base URL of the worker, e.g. ``http://127.0.0.1:8288``.
        token: the worker's ``STEPSTREAM_HTTP_TOKEN``, if it requires one.
        timeout: seconds to wait for an answer.
    """

    def __init__(self, url: str = DEFAULT_URL, *, token: str = "", timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, *, query: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None) -> Any:
        """One request; returns the decoded JSON answer.

        Raises:
            ApiError: the API answered 4xx/5xx (with its message), or not at all (status 0).
        """
        params = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        if body is None and method not in ("GET", "HEAD"):
            body = {}  # the API takes state-changing requests as JSON only
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._open(request, self.timeout) as reply:
                return json.load(reply)
        except OSError as exc:  # the answer broke off
            raise self._no_answer(exc) from None

    def _no_answer(self, exc: OSError) -> ApiError:
        reason = getattr(exc, "reason", exc)
        return ApiError(0, f"no answer from {self.url}: {reason} (is a worker running? "
                           "see --url / STEPSTREAM_API_URL)")

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        """``urlopen``, its failures as ``ApiError``."""
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            try:
                message = json.load(exc).get("error") or exc.reason
            except (ValueError, AttributeError):
                message = exc.reason
            raise ApiError(exc.code, f"{exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._no_answer(exc) from None

    def stream_run(self, run_id: str, last_event_id: int = 0, *,
                   idle_s: float = 60.0) -> Iterator[ServerEvent]:
        """The run's live events (``GET /v1/runs/{id}/stream``) after ``last_event_id``:
        ``run``, then ``step`` and ``progress`` as they come, and ``end``. It stops after
        the end, or sooner when the worker closes the stream (ask again with the last id);
        nothing when the end is before ``last_event_id``.

        Raises:
            ApiError: as ``call``.
            OSError: nothing came for ``idle_s`` (not even a heartbeat), or the
                connection broke.
        """
        request = urllib.request.Request(f"{self.url}/v1/runs/{self._quote(run_id)}/stream")
        request.add_header("Accept", "text/event-stream")
        request.add_header("Last-Event-ID", str(last_event_id))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with self._open(request, idle_s) as reply:
            yield from read_events(reply)

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = self.call(method, path, **kwargs)
        if not isinstance(answer, dict):
            raise ApiError(0, f"{method} {path}: expected a JSON object, got {answer!r:.80}")
        return answer

    @staticmethod
    def _quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    # --- runs ------------------------------------------------------------------------

    def list_runs(self, *, function: str | None = None, status: str | None = None,
                  since: str | int | None = None, until: str | int | None = None,
                  limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """A page of run summaries (``runs``, ``next_cursor``), newest first."""
        return self._object("GET", "/v1/runs", query={
            "function": function, "status": status, "since": since, "until": until,
            "limit": limit, "cursor": cursor})

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run with its steps, attempts, outputs, errors and logs."""
        return self._object("GET", f"/v1/runs/{self._quote(run_id)}")

    def cancel(self, run_id: str, reason: str | None = None) -> dict[str, Any]:
        """Ask for a running run to be cancelled."""
        return self._object("POST", f"/v1/runs/{self._quote(run_id)}/cancel",
                            body={"reason": reason} if reason else {})

    def replay(self, run_id: str, from_step: str | None = None) -> dict[str, Any]:
        """Ask for a failed or cancelled run to run its failed steps (or from a step) again."""
        return self._object("POST", f"/v1/runs/{self._quote(run_id)}/replay",
                            body={"from_step": from_step} if from_step else {})

    def cancel_runs(self, *, function: str | None = None, since: str | int | None = None,
                    until: str | int | None = None, reason: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        """Ask every running run a filter selects to cancel (``requested``, ``run_ids``);
        ``dry_run``: only count them (``matched``)."""
        body: dict[str, Any] = {"status": "running", "dry_run": dry_run}
        body.update({k: v for k, v in (("function", function), ("started_after", since),
                                       ("started_before", until), ("reason", reason))
                     if v is not None})
        return self._object("POST", "/v1/runs/cancel", body=body)

    # --- functions and dead letters ---------------------------------------------------

    def functions(self) -> list[dict[str, Any]]:
        """Functions with run counts per status and failure rates."""
        functions: list[dict[str, Any]] = self._object("GET", "/v1/functions")["functions"]
        return functions

    def pause(self, function_id: str, *, paused: bool = True) -> dict[str, Any]:
        """Pause a function (``paused=False``: resume it)."""
        action = "pause" if paused else "resume"
        return self._object("POST", f"/v1/functions/{self._quote(function_id)}/{action}")

    def replay_function(self, function_id: str, *, since: str | int | None = None,
                        until: str | int | None = None, status: str = "failed",
                        limit: int = 1000) -> dict[str, Any]:
        """Ask for every failed (or cancelled) run of a function in a time range to replay."""
        body: dict[str, Any] = {"status": status, "limit": limit}
        body.update({k: v for k, v in (("since", since), ("until", until)) if v is not None})
        return self._object("POST", f"/v1/functions/{self._quote(function_id)}/replay", body=body)

    def dead_letters(self, *, function: str | None = None, limit: int = 50,
                     cursor: str | None = None) -> dict[str, Any]:
        """A page of dead letters not replayed yet (``dead_letters``, ``next_cursor``,
        ``total``)."""
        return self._object("GET", "/v1/dlq", query={"function": function, "limit": limit,
                                                     "cursor": cursor})

    def replay_dead_letter(self, run_id: str) -> dict[str, Any]:
        """Replay the run of a dead letter from its failed step."""
        return self._object("POST", f"/v1/dlq/{self._quote(run_id)}/replay")
