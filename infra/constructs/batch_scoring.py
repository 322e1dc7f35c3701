"""The scheduled batch job: plan -> three Distributed Maps -> finalize, on Step Functions.

The plan task resolves the model version once and writes each stage's work items to S3;
each Distributed Map reads its items there (ItemReader: Step Functions' state payload is
limited to 256 KB) and runs one ``chunk`` invocation per item; finalize writes the manifest
and drift report. Chunks retry with backoff (any error but a malformed input, which retrying
cannot fix); a chunk out of retries publishes a notification naming itself and its cause, and
the run then fails (tolerated failures: 0 by default) with a second notification naming the
stage. EventBridge Scheduler starts it daily; ``rtml batch run`` starts it for a given day.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.constructs.alarms import notify, rtml_metric, threshold_alarm
from infra.constructs.function import RtmlFunction
from infra.nag import (
    acknowledge,
    acknowledge_bucket_objects,
    acknowledge_child_executions,
    acknowledge_executions_of,
    acknowledge_function_versions,
)
from infra.settings import EnvSettings
from models import contracts as c

PLAN_HANDLER = "batch.handlers.plan"
CHUNK_HANDLER = "batch.handlers.chunk"
FINALIZE_HANDLER = "batch.handlers.finalize"

STAGES = ("partition", "terminal", "customer")
"""The Distributed Maps, in order (``batch.job.STAGES``)."""

NOT_RETRIED = ("MalformedPartError", "ValueError", "RunInProgressError")
"""Errors a retry cannot fix: bad input is reported at once (and quarantined by the task)."""

LAMBDA_SERVICE_ERRORS = (
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
"""Transient errors of the Lambda service itself (throttles included): retried longer than a
task's own failure, as AWS recommends for the lambda:invoke integration."""

RUN_TIMEOUT = cdk.Duration.hours(6)
"""A day's run takes minutes; a run still going after hours is stuck, and alarms."""


class BatchScoring(Construct):
    """The batch job's functions, state machine, schedule, grants and alarms."""

    plan: RtmlFunction
    partition: RtmlFunction
    chunk: RtmlFunction
    finalize: RtmlFunction
    state_machine: sfn.StateMachine
    schedule: scheduler.Schedule
    alarms: list[cloudwatch.Alarm]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvSettings,
        data_bucket: s3.IBucket,
        registry_bucket: s3.IBucket,
        latest_scores: dynamodb.ITableV2,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        batch = settings.batch
        environment = {
            c.ENV_DATA_BUCKET: data_bucket.bucket_name,
            c.ENV_DATA_TIME_ZONE: settings.data_time_zone,
            c.ENV_BATCH_PREFIX: batch.prefix,
            c.ENV_REGISTRY: f"s3://{registry_bucket.bucket_name}/{c.REGISTRY_PREFIX}",
            c.ENV_MODEL_NAME: c.DEFAULT_MODEL_NAME,
            c.ENV_DECISION_THRESHOLD: str(batch.decision_threshold),
            c.ENV_SCORES_TABLE: latest_scores.table_name,
            c.ENV_MAX_BYTES_PER_CHUNK: str(batch.max_bytes_per_chunk),
        }

        def function(name: str, handler: str, description: str) -> RtmlFunction:
            made = RtmlFunction(
                self,
                name,
                settings=settings,
                handler=handler,
                service="rtml-batch",
                description=description,
                environment=environment,
                memory_mb=batch.memory_mb,
                timeout_seconds=batch.timeout_seconds,
                bundle="batch",
            )
            made.grant_registry_read(registry_bucket)
            # read the source and the job's own prefix, write the job's prefix
            made.grant_prefixes(
                data_bucket, read=[c.TRANSACTIONS_PREFIX, batch.prefix], write=[batch.prefix]
            )
            return made

        self.plan = function("Plan", PLAN_HANDLER, "Sizes a batch run, fixes its model version")
        self.partition = function("Partition", CHUNK_HANDLER, "Splits a source day by bucket")
        self.chunk = function("Chunk", CHUNK_HANDLER, "One terminal or customer chunk of a run")
        self.finalize = function("Finalize", FINALIZE_HANDLER, "A batch run's manifest and drift")
        self.chunk.role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"],
                resources=[latest_scores.table_arn],
            )
        )
        # only the partition split moves a malformed source part to quarantine (copy, delete)
        self.partition.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:DeleteObject"],
                resources=[data_bucket.arn_for_objects(f"{c.TRANSACTIONS_PREFIX}/*")],
            )
        )
        # plan clears an earlier attempt's output of its run id; finalize releases the lock
        for made in (self.plan, self.finalize):
            made.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:DeleteObject"],
                    resources=[data_bucket.arn_for_objects(f"{batch.prefix}/*")],
                )
            )
        # plan asks whether the execution holding a run id's lock still runs
        self.machine_name = f"rtml-{settings.stage_name}-batch"
        self.plan.role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution"],
                resources=[
                    cdk.Stack.of(self).format_arn(
                        service="states",
                        resource="execution",
                        resource_name=f"{self.machine_name}:*",
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        acknowledge_executions_of(self.plan.role, self.machine_name)

        self.state_machine = self._state_machine(settings, data_bucket, alarm_topic)
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="Scores the previous day's transactions",
            schedule=scheduler.ScheduleExpression.expression(
                batch.schedule, time_zone=cdk.TimeZone.of(batch.timezone)
            ),
            enabled=batch.schedule_enabled,
            target=targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object(
                    {
                        "scheduled_time": scheduler.ContextAttribute.scheduled_time,
                        "timezone": batch.timezone,
                    }
                ),
                retry_attempts=2,
            ),
        )
        self.alarms = self._alarms(settings, alarm_topic)

    def _state_machine(
        self, settings: EnvSettings, data: s3.IBucket, topic: sns.ITopic
    ) -> sfn.StateMachine:
        run_failed = sfn.Fail(
            self,
            "RunFailed",
            error_path=sfn.JsonPath.string_at("$.error.Error"),
            cause_path=sfn.JsonPath.string_at("$.error.Cause"),
        )
        notify_run = tasks.SnsPublish(
            self,
            "NotifyRunFailed",
            topic=topic,
            subject="rtml batch run failed",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.format(
                    "rtml batch run failed (execution {}): {}: {}",
                    sfn.JsonPath.string_at("$$.Execution.Name"),
                    sfn.JsonPath.string_at("$.error.Error"),
                    sfn.JsonPath.string_at("$.error.Cause"),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
        ).next(run_failed)

        plan = tasks.LambdaInvoke(
            self,
            "PlanRun",
            lambda_function=self.plan.function,
            payload=sfn.TaskInput.from_object(
                {
                    "input": sfn.JsonPath.object_at("$"),
                    "execution_arn": sfn.JsonPath.string_at("$$.Execution.Id"),
                }
            ),
            retry_on_service_exceptions=False,
            result_selector={
                field: sfn.JsonPath.object_at(f"$.Payload.{field}")
                for field in ("run_id", "day", "model_version", "backfill", "items", "counts")
            },
            result_path="$.plan",
        )
        self._retry(plan, settings)
        plan.add_catch(notify_run, result_path="$.error")

        chain: sfn.IChainable = plan
        current: sfn.INextable = plan
        for stage in STAGES:
            stage_map = self._stage_map(stage, settings, data, topic)
            stage_map.add_catch(notify_run, result_path="$.error")
            current.next(stage_map)
            current = stage_map

        finalize = tasks.LambdaInvoke(
            self,
            "FinalizeRun",
            lambda_function=self.finalize.function,
            payload=sfn.TaskInput.from_object({"run_id": sfn.JsonPath.string_at("$.plan.run_id")}),
            retry_on_service_exceptions=False,
            result_selector={"result": sfn.JsonPath.object_at("$.Payload")},
            result_path="$.result",
        )
        self._retry(finalize, settings)
        finalize.add_catch(notify_run, result_path="$.error")
        current.next(finalize)

        log_group = logs.LogGroup(self, "Logs", removal_policy=settings.cdk_removal_policy)
        cfn_log_group = log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = settings.log_retention_days
        machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.machine_name,
            definition_body=sfn.DefinitionBody.from_chainable(chain),
            timeout=RUN_TIMEOUT,
            tracing_enabled=settings.functions.tracing,
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="rtml batch scoring: plan, partition, terminal and customer stages, finalize",
        )
        # publishing to the KMS-encrypted alarm topic needs the key too
        if isinstance(topic, sns.Topic) and topic.master_key is not None:
            topic.master_key.grant(machine.role, "kms:Decrypt", "kms:GenerateDataKey")
        acknowledge(machine.role, "AwsSolutions-IAM5[Resource::*]")
        for made in (self.plan, self.partition, self.chunk, self.finalize):
            acknowledge_function_versions(machine.role, made.function)
        acknowledge_bucket_objects(machine.role, data)
        acknowledge_child_executions(
            machine.node.find_child("DistributedMapPolicy"),
            machine,
            [stage.capitalize() for stage in STAGES],
        )
        return machine

    def _stage_map(
        self, stage: str, settings: EnvSettings, data: s3.IBucket, topic: sns.ITopic
    ) -> sfn.DistributedMap:
        batch = settings.batch
        title = stage.capitalize()
        task = tasks.LambdaInvoke(
            self,
            f"{title}Chunk",
            lambda_function=(self.partition if stage == "partition" else self.chunk).function,
            retry_on_service_exceptions=False,
            result_selector={"result": sfn.JsonPath.object_at("$.Payload")},
        )
        self._retry(task, settings)
        notify = tasks.SnsPublish(
            self,
            f"Notify{title}ChunkFailed",
            topic=topic,
            subject=f"rtml batch {stage} chunk failed",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.format(
                    "rtml batch: {} chunk {} failed: {}: {}",
                    sfn.JsonPath.string_at("$.stage"),
                    sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.item")),
                    sfn.JsonPath.string_at("$.error.Error"),
                    sfn.JsonPath.string_at("$.error.Cause"),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
        ).next(sfn.Fail(self, f"{title}ChunkFailed", error="ChunkFailed"))
        task.add_catch(notify, result_path="$.error")
        stage_map = sfn.DistributedMap(
            self,
            f"{title}Stage",
            item_reader=sfn.S3JsonItemReader(
                bucket=data, key=sfn.JsonPath.string_at(f"$.plan.items.{stage}")
            ),
            item_selector={"stage": stage, "item": sfn.JsonPath.object_at("$$.Map.Item.Value")},
            max_concurrency=batch.max_concurrency,
            # only customer chunks may be tolerated (their bucket is then reported missing):
            # a missing history day or terminal chunk would make every feature silently
            # wrong. 0 is the service's default; left out rather than written (and moto's
            # parser refuses a literal 0)
            tolerated_failure_percentage=(
                batch.tolerated_failure_percentage or None if stage == "customer" else None
            ),
            result_path=sfn.JsonPath.DISCARD,
            label=title,
        )
        stage_map.item_processor(task)
        return stage_map

    @staticmethod
    def _retry(task: tasks.LambdaInvoke, settings: EnvSettings) -> None:
        """Never retry bad input; retry everything else (Lambda service errors, throttles,
        a task's own failure) with jittered exponential backoff from settings."""
        batch = settings.batch
        task.add_retry(errors=list(NOT_RETRIED), max_attempts=0)
        task.add_retry(
            errors=list(LAMBDA_SERVICE_ERRORS),
            interval=cdk.Duration.seconds(batch.retry_interval_seconds),
            max_attempts=6,
            backoff_rate=2.0,
            jitter_strategy=sfn.JitterType.FULL,
        )
        task.add_retry(
            errors=[sfn.Errors.ALL],
            interval=cdk.Duration.seconds(batch.retry_interval_seconds),
            max_attempts=batch.retry_attempts,
            backoff_rate=batch.retry_backoff_rate,
            jitter_strategy=sfn.JitterType.FULL,
        )

    def _alarms(self, settings: EnvSettings, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        day = cdk.Duration.days(1)
        machine = self.state_machine
        alarms = [
            threshold_alarm(
                self,
                "RunsFailed",
                description="A batch run failed (see the failure notification)",
                metric=machine.metric_failed(period=day, statistic=cloudwatch.Stats.SUM),
            ),
            threshold_alarm(
                self,
                "RunsTimedOut",
                description=f"A batch run exceeded {RUN_TIMEOUT.to_hours()} h",
                metric=machine.metric_timed_out(period=day, statistic=cloudwatch.Stats.SUM),
            ),
            threshold_alarm(
                self,
                "Drift",
                description=(
                    f"A batch run's largest PSI (an input or the score) reached"
                    f" {settings.batch.drift_alarm_psi}"
                ),
                metric=rtml_metric("BatchMaxPsi", "batch", cloudwatch.Stats.MAXIMUM, day),
                threshold=settings.batch.drift_alarm_psi,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            ),
        ]
        alarms += [
            threshold_alarm(
                self,
                name,
                description=what,
                metric=rtml_metric(metric, "batch", cloudwatch.Stats.MAXIMUM, day),
            )
            for name, metric, what in (
                ("MissingBuckets", "BatchMissingBuckets", "A run left customer buckets unscored"),
                ("Quarantined", "BatchQuarantinedParts", "A run's window has quarantined files"),
            )
        ]
        if settings.batch.schedule_enabled:  # a day without a successful run is an incident
            alarms.append(
                threshold_alarm(
                    self,
                    "NoSuccessfulRun",
                    description="No batch run succeeded in a day",
                    metric=machine.metric_succeeded(period=day, statistic=cloudwatch.Stats.SUM),
                    threshold=1,
                    comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    missing=cloudwatch.TreatMissingData.BREACHING,
                )
            )
        notify(alarms, topic)
        return alarms
