"""Step Functions on the local stack: the synthesized definition, executed by moto.

moto's engine (a port of LocalStack's ASL interpreter) runs the deployed definition as it is:
Lambda tasks reach rtml's execution environments (the stack's invoke hook), Distributed Maps
read their items from S3, Retry and Catch behave as on AWS (the retrier really sleeps, so the
local stage's retry intervals stay short). One gap matters for failure handling and is closed
here: moto counts the failed items of a Distributed Map but never fails the Map Run when they
exceed its tolerated failure count or percentage (a "TODO" in moto 5.2), so a run whose chunks
all failed would report SUCCEEDED. :func:`enforce_tolerated_failures` makes the Map Run fail
with ``States.ExceedToleratedFailureThreshold``, as AWS does.
"""

from __future__ import annotations

import json
from typing import Any, Final

from infra.local.deployer import Created, Deployer, handles, physical_name

EXCEEDED: Final = "States.ExceedToleratedFailureThreshold"


@handles(
    "AWS::StepFunctions::StateMachine",
    "DefinitionString",
    "RoleArn",
    "StateMachineName",
    "StateMachineType",
    "LoggingConfiguration",
    "TracingConfiguration",
)
def _state_machine(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("StateMachineName") or physical_name(d.stack_name, logical_id, limit=80)
    definition = p["DefinitionString"]
    json.loads(definition)  # resolved by the deployer: must be the JSON the service gets
    arn = d.client("stepfunctions").create_state_machine(
        name=name,
        definition=definition,
        roleArn=p["RoleArn"],
        type=p.get("StateMachineType", "STANDARD"),
    )["stateMachineArn"]
    return Created(arn, {"Arn": arn, "Name": name})


def _exceeded(record: Any) -> bool:
    """AWS's rule: the Map Run fails once failed (or timed-out) items exceed a threshold it
    specifies (count, or share of the items); with neither, any failure fails it. moto
    stores an unset threshold as 0, so a 0 next to a set one is taken as unset."""
    counter = record.item_counter
    failed = counter.failed.get() + counter.timed_out.get()
    total = counter.total.get()
    if failed == 0:
        return False
    count = record.tolerated_failure_count or 0
    percentage = record.tolerated_failure_percentage or 0.0
    over_count = failed > count if count or not percentage else False
    over_share = total > 0 and 100.0 * failed / total > percentage if percentage else False
    return bool(over_count or over_share or (not count and not percentage))


def enforce_tolerated_failures() -> None:
    """Patch moto's Distributed Map to fail its Map Run past the tolerated failures (once)."""
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as component,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    cls = component.DistributedIterationComponent
    original = cls._map_run
    if getattr(original, "rtml_enforces_tolerance", False):
        return

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        original(self, env, eval_input)
        record = eval_input.map_run_record
        if _exceeded(record):
            counter = record.item_counter
            cause = (
                f"The specified tolerated failure threshold was exceeded:"
                f" {counter.failed.get() + counter.timed_out.get()} of {counter.total.get()}"
                f" items failed"
            )
            raise FailureEventException(
                failure_event=FailureEvent(
                    env=env,
                    error_name=StatesErrorName(
                        typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold
                    ),
                    event_type=HistoryEventType.ExecutionFailed,
                    event_details=EventDetails(  # type: ignore[typeddict-item]
                        executionFailedEventDetails=ExecutionFailedEventDetails(
                            error=EXCEEDED, cause=cause
                        )
                    ),
                )
            )

    map_run.rtml_enforces_tolerance = True  # type: ignore[attr-defined]
    cls._map_run = map_run  # type: ignore[method-assign]
