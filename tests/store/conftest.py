"""The store tests reuse the service suite's real PostgreSQL server (``pg_server``, ``pg_url``)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

# Loaded by path: the test folders are not packages (pytest --import-mode=importlib).
_spec = importlib.util.spec_from_file_location("_service_conftest", Path(__file__).parents[1] / "service" / "conftest.py")
_service = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_service)

pg_server = _service.pg_server
pg_url = _service.pg_url
