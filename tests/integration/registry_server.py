"""A Schema Registry for a worker in another process, backed by confluent-kafka's
built-in ``mock://`` registry.

No Schema Registry can be installed here, and the mock lives inside one process: the
test serializes with confluent-kafka's serializers against the mock, and this server
answers, from it, the REST calls a reader and a writer make: ``GET /schemas/ids/{id}``,
``GET /subjects/{subject}/versions/{version}`` (a Protobuf schema's imports) and ``POST
/subjects/{subject}/versions`` (registering). So a worker and the SDK go
through their real ``SchemaRegistryClient`` over HTTP. Anything else is a 404 (the
client then falls back, as with an older registry).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SCHEMA_BY_ID = re.compile(r"^/schemas/ids/(\d+)(?:\?.*)?$")
_VERSIONS = re.compile(r"^/subjects/([^/?]+)/versions(?:\?.*)?$")
_VERSION = re.compile(r"^/subjects/([^/?]+)/versions/(\d+)(?:\?.*)?$")


def _schema_json(schema: Any) -> dict[str, Any]:
    return {"schema": schema.schema_str, "schemaType": schema.schema_type or "AVRO",
            "references": [{"name": r.name, "subject": r.subject, "version": r.version}
                           for r in schema.references or ()]}


@contextmanager
def registry_server(mock: Any) -> Iterator[str]:
    """Serve ``mock``'s schemas by id; yields the registry's URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            from urllib.parse import unquote

            version = _VERSION.match(self.path)
            if version is not None:
                subject, number = unquote(version.group(1)), int(version.group(2))
                try:
                    registered = mock.get_version(subject, number)
                except Exception:
                    self._reply(404, {"error_code": 40402, "message": "Version not found"})
                    return
                self._reply(200, {**_schema_json(registered.schema), "subject": subject,
                                  "version": number, "id": registered.schema_id})
                return
            found = _SCHEMA_BY_ID.match(self.path)
            try:
                schema = mock.get_schema(int(found.group(1))) if found else None
            except Exception:  # the mock's "not found"
                schema = None
            if schema is None:
                self._reply(404, {"error_code": 40403, "message": "Schema not found"})
            else:
                self._reply(200, _schema_json(schema))

        def do_POST(self) -> None:
            from urllib.parse import unquote

            from confluent_kafka.schema_registry import Schema

            found = _VERSIONS.match(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if found is None:
                self._reply(404, {"error_code": 404, "message": "Not found"})
                return
            schema_id = mock.register_schema(unquote(found.group(1)), Schema(
                body["schema"], body.get("schemaType", "AVRO")))
            self._reply(200, {"id": schema_id})

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
