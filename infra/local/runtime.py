"""Local Lambda execution environments: one subprocess each, from the deployed zip.

Like Lambda: the function's code is its deployed zip, unzipped into a read-only-by-convention
task directory; each execution environment imports the handler once and then serves one
invocation at a time; concurrent invocations get more environments (up to the reserved
concurrency, else :data:`DEFAULT_CONCURRENCY`); the environment has the function's variables
only (plus the runtime's own and the local endpoint), a /tmp of its own, and a timeout that
kills it. The function's stdout and stderr go to ``.rtml/logs/<function>.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

BOOTSTRAP: Final = Path(__file__).with_name("bootstrap.py")
DEFAULT_CONCURRENCY: Final = 8
"""Environments per function when it reserves none (a laptop, not an account's 1,000)."""


class InvokeError(RuntimeError):
    """The function could not be invoked at all (throttled, or its environment died)."""


class ThrottledError(InvokeError):
    """Every execution environment the function may have is busy (Lambda's 429)."""


@dataclass
class Invocation:
    """What an invocation returned: a result, or Lambda's error shape."""

    result: Any = None
    error: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass
class FunctionConfig:
    name: str
    handler: str
    environment: dict[str, str]
    timeout: int
    memory: int
    arn: str
    code_zip: Path
    reserved_concurrency: int | None = None


class _Environment:
    """One execution environment: a bootstrap subprocess with the handler imported."""

    def __init__(
        self,
        config: FunctionConfig,
        task_dir: Path,
        base_env: dict[str, str],
        log: IO[str],
        number: int,
    ):
        self.config = config
        tmp = task_dir.parent / "tmp" / f"{config.name}-{number}"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **base_env,
            **config.environment,
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "LAMBDA_TASK_ROOT": str(task_dir),
            "_HANDLER": config.handler,
            "TMPDIR": str(tmp),
        }
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-s",
                "-E",
                str(BOOTSTRAP),
                str(task_dir),
                config.handler,
                str(write_fd),
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            pass_fds=(write_fd,),
            text=True,
        )
        os.close(write_fd)
        self.responses = os.fdopen(read_fd, "r", encoding="utf-8")
        ready = self._read(timeout=120)
        if ready is None or not ready.get("ready"):
            self.kill()
            raise InvokeError(f"{config.name}: execution environment failed to start")
        self.init_seconds = float(ready["init_seconds"])

    def _read(self, timeout: float) -> dict[str, Any] | None:
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.responses.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        if reader.is_alive() or not result or not result[0]:
            return None
        loaded: dict[str, Any] = json.loads(result[0])
        return loaded

    def invoke(self, event: Any, request_id: str) -> Invocation:
        config = self.config
        context = {
            "function_name": config.name,
            "invoked_function_arn": config.arn,
            "memory_limit_in_mb": config.memory,
            "aws_request_id": request_id,
            "timeout_seconds": config.timeout,
        }
        assert self.process.stdin is not None
        started = time.perf_counter()
        self.process.stdin.write(json.dumps({"event": event, "context": context}) + "\n")
        self.process.stdin.flush()
        response = self._read(timeout=config.timeout)
        seconds = time.perf_counter() - started
        if response is None:
            self.kill()
            return Invocation(
                error={
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {config.timeout:.2f} seconds",
                },
                seconds=seconds,
            )
        return Invocation(response.get("result"), response.get("error"), seconds)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class _Function:
    config: FunctionConfig
    task_dir: Path
    idle: list[_Environment] = field(default_factory=list)
    busy: int = 0
    started: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalLambda:
    """The functions of a local stack and their execution environments."""

    def __init__(self, root: Path, base_env: dict[str, str]) -> None:
        self.root = root
        self.base_env = dict(base_env)
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._functions: dict[str, _Function] = {}
        self._log_files: dict[str, IO[str]] = {}

    def register(self, config: FunctionConfig) -> None:
        """Unzip the function's deployed code once per code hash."""
        task_dir = self.root / "functions" / config.code_zip.stem / "task"
        if not (task_dir / ".complete").exists():
            task_dir.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(config.code_zip) as archive:
                archive.extractall(task_dir)
            (task_dir / ".complete").touch()
        self._functions[config.name] = _Function(config, task_dir)
        self._log_files[config.name] = open(self.logs / f"{config.name}.log", "a", buffering=1)  # noqa: SIM115

    @property
    def names(self) -> list[str]:
        return sorted(self._functions)

    def invoke(self, name: str, event: Any) -> Invocation:
        """Invoke synchronously in an idle environment, or a new one within the concurrency."""
        function = self._functions.get(name)
        if function is None:
            raise InvokeError(f"function {name} is not deployed")
        limit = function.config.reserved_concurrency or DEFAULT_CONCURRENCY
        with function.lock:
            environment = None
            while function.idle:
                candidate = function.idle.pop()
                if candidate.alive:
                    environment = candidate
                    break
            if environment is None and function.busy >= limit:
                raise ThrottledError(f"{name}: throttled ({limit} concurrent executions)")
            function.busy += 1
            if environment is None:
                function.started += 1
                number = function.started
        try:
            if environment is None:
                environment = _Environment(
                    function.config, function.task_dir, self.base_env, self._log_files[name], number
                )
            result = environment.invoke(event, str(uuid.uuid4()))
        finally:
            with function.lock:
                function.busy -= 1
                if environment is not None and environment.alive:
                    function.idle.append(environment)
        return result

    def close(self) -> None:
        for function in self._functions.values():
            for environment in function.idle:
                environment.kill()
            function.idle.clear()
        for log in self._log_files.values():
            log.close()
