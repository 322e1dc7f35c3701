"""The local Lambda runtime's bootstrap: runs in one execution environment (a subprocess).

Standard library only: it runs as ``python -S -s -E bootstrap.py TASK_DIR HANDLER FD`` with
nothing on ``sys.path`` but the function's unzipped code, as Lambda's runtime does. It imports
the handler once (the cold start), then answers invocations: one JSON line on stdin in
(``{"event": ..., "context": ...}``), one JSON line out on file descriptor FD, so that the
function's own prints (Powertools' EMF metrics, logs) go to stdout/stderr, i.e. its log file.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


class Context:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.function_name: str = fields["function_name"]
        self.function_version: str = fields.get("function_version", "$LATEST")
        self.invoked_function_arn: str = fields["invoked_function_arn"]
        self.memory_limit_in_mb: int = int(fields["memory_limit_in_mb"])
        self.aws_request_id: str = fields["aws_request_id"]
        self.log_group_name: str = fields.get("log_group_name", "")
        self.log_stream_name: str = fields.get("log_stream_name", "")
        self._deadline = time.monotonic() + float(fields["timeout_seconds"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


def main() -> None:
    task_dir, handler_name, fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, task_dir)
    out = os.fdopen(fd, "w", encoding="utf-8")
    module_name, _, function_name = handler_name.rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # an init error, reported on every invocation as Lambda does
        handler = None
        init_error = _error(exc)
        traceback.print_exc()
    out.write(json.dumps({"ready": True, "init_seconds": time.perf_counter() - started}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if handler is None:
            response: dict[str, Any] = {"error": init_error}
        else:
            try:
                result = handler(request["event"], Context(request["context"]))
                response = {"result": result}
            except Exception as exc:
                traceback.print_exc()
                response = {"error": _error(exc)}
        sys.stdout.flush()
        sys.stderr.flush()
        out.write(json.dumps(response, default=str) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
