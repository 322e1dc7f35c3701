"""One way to make an rtml alarm: the metric of an rtml service, an alarm on it, the topic.

Most rtml alarms are "this count went above 0 in the period, and no data is fine": that is
the default here, so a construct states only what differs."""

from __future__ import annotations

from collections.abc import Iterable

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.function import METRICS_NAMESPACE


def rtml_metric(name: str, service: str, statistic: str, period: cdk.Duration) -> cloudwatch.Metric:
    """An EMF metric a function publishes (Powertools adds the ``service`` dimension)."""
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=period,
    )


def threshold_alarm(
    scope: Construct,
    construct_id: str,
    *,
    description: str,
    metric: cloudwatch.IMetric,
    threshold: float = 0,
    comparison: cloudwatch.ComparisonOperator = (
        cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    ),
    missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    evaluation_periods: int = 1,
) -> cloudwatch.Alarm:
    """An alarm over one evaluation period by default, above 0, missing data not breaching."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric,
        threshold=threshold,
        evaluation_periods=evaluation_periods,
        comparison_operator=comparison,
        treat_missing_data=missing,
    )


def notify(alarms: Iterable[cloudwatch.Alarm], topic: sns.ITopic) -> None:
    """Every alarm notifies the alarm topic."""
    action = cloudwatch_actions.SnsAction(topic)
    for alarm in alarms:
        alarm.add_alarm_action(action)
