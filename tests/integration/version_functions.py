"""The toolkit functions of the integration tests on the schemas of another stepstream version: the
directories ``STEPSTREAM_TEST_SCHEMA_DIR`` and ``STEPSTREAM_TEST_RELEASED_DIR`` stand in
for ``schemas/`` and ``schemas/released/`` (``tests.schema_evolution`` writes them), so a
worker process runs as that version would (test_upgrade)."""

from __future__ import annotations

import os
from pathlib import Path

from schemas import versions
from schemas.codec import default_codec

versions.SCHEMA_DIR = Path(os.environ["STEPSTREAM_TEST_SCHEMA_DIR"])
versions.RELEASED_DIR = Path(os.environ["STEPSTREAM_TEST_RELEASED_DIR"])
default_codec.cache_clear()

from tests.integration.toolkit_functions import ss  # noqa: E402

__all__ = ["ss"]
