"""Starting and following the batch state machine's executions (``rtml batch``): the same
calls against AWS or the local stack, since only the clients' endpoint differs.

Every execution is named (``<day>[-backfill]-<UTC stamp>-<4 hex>``): Step Functions keeps a
name unique per state machine for 90 days, so a rerun of a day is a new name, and the name
still says which day it ran. Progress is read from what the run writes (its plan's item
counts from the execution history, then one record per finished task in S3), so following
costs a few requests a second and works the same for every stage.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

from batch.job import JobConfig, load_manifest
from models.errors import RtmlError
from models.s3_datasets import list_objects

TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
PLAN_STATE: Final = "PlanRun"
"""The plan task's state name in the synthesized definition (infra/constructs/batch_scoring)."""


class RunFailedError(RtmlError):
    """An execution ended in anything but SUCCEEDED: its status, error and cause."""


def execution_name(day: date, *, backfill: bool = False, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    kind = "-backfill" if backfill else ""
    return f"{day.isoformat()}{kind}-{stamp}-{secrets.token_hex(2)}"


def start_run(
    states: Any,
    state_machine_arn: str,
    day: date,
    *,
    backfill: bool = False,
    model_version: str | None = None,
) -> str:
    """Start a run for ``day``; its execution ARN."""
    payload: dict[str, Any] = {"date": day.isoformat(), "backfill": backfill}
    if model_version:
        payload["model_version"] = model_version
    response = states.start_execution(
        stateMachineArn=state_machine_arn,
        name=execution_name(day, backfill=backfill),
        input=json.dumps(payload),
    )
    return str(response["executionArn"])


@dataclass
class Progress:
    """Where a run is: its status, plan (once known) and finished tasks."""

    status: str = "RUNNING"
    run_id: str | None = None
    total: int = 0
    done: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    cause: str | None = None


def _plan_output(states: Any, execution_arn: str) -> dict[str, Any] | None:
    pages = states.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    for page in pages:
        for event in page["events"]:
            details = event.get("stateExitedEventDetails")
            if details and details.get("name") == PLAN_STATE:
                state = json.loads(details.get("output") or "{}")
                plan: dict[str, Any] | None = state.get("plan")
                return plan
    return None


def poll(
    states: Any, s3: Any, config: JobConfig, execution_arn: str, progress: Progress
) -> Progress:
    """One look at the run (describe, then the plan and finished-task records)."""
    described = states.describe_execution(executionArn=execution_arn)
    progress.status = described["status"]
    progress.error, progress.cause = described.get("error"), described.get("cause")
    if progress.run_id is None:
        plan = _plan_output(states, execution_arn)
        if plan is not None:
            progress.run_id = str(plan["run_id"])
            progress.stages = {k: int(v) for k, v in plan["counts"].items()}
            progress.total = sum(progress.stages.values())
    if progress.run_id is not None:
        prefix = f"{config.prefix}/runs/{progress.run_id}/chunks/"
        progress.done = len(list_objects(s3, config.bucket, prefix))
    return progress


def follow(
    states: Any,
    s3: Any,
    config: JobConfig,
    execution_arn: str,
    *,
    on_progress: Callable[[Progress], None] = lambda _: None,
    interval: float = 0.5,
    timeout: float = 6 * 3_600.0,
) -> dict[str, Any]:
    """Wait for the run to end (up to the state machine's own 6 h timeout); its manifest, or
    :class:`RunFailedError` naming the cause."""
    progress = Progress()
    deadline = time.monotonic() + timeout
    while True:
        poll(states, s3, config, execution_arn, progress)
        on_progress(progress)
        if progress.status in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_arn} still {progress.status} after {timeout:.0f} s")
        time.sleep(interval)
    if progress.status != "SUCCEEDED":
        raise RunFailedError(
            f"execution {execution_arn.rsplit(':', 1)[-1]} {progress.status}:"
            f" {progress.error or 'no error'}: {progress.cause or 'no cause'}"
        )
    assert progress.run_id is not None
    return load_manifest(s3, config, progress.run_id)


def status(states: Any, s3: Any, config: JobConfig, run: str) -> dict[str, Any]:
    """A run's state: an execution ARN is described; a run id gives its manifest."""
    if run.startswith("arn:"):
        described = states.describe_execution(executionArn=run)
        result = {k: described.get(k) for k in ("name", "status", "error", "cause")}
        result["started"] = str(described.get("startDate"))
        result["stopped"] = str(described.get("stopDate")) if described.get("stopDate") else None
        return result
    try:
        return load_manifest(s3, config, run)
    except s3.exceptions.NoSuchKey:
        raise RtmlError(f"run {run}: no manifest (running, failed, or never started)") from None
