"""Deploys a synthesized CloudFormation template onto moto through boto3, one handler per type.

moto's own CloudFormation skips resources and properties silently (../shared/TOOLCHAIN.md),
so rtml deploys the template itself: publish the file assets where the asset manifest says,
resolve the intrinsics, create the resources in dependency order, and refuse loudly any
resource type or property no handler knows. What differs from AWS is listed in
:data:`LOCAL_DIFFERENCES` (and the README), never skipped in silence.

Kinesis event source mappings are recorded, not created in moto (moto would invoke the
function inside ``put_record``, one record at a time, swallowing errors): rtml's poller
(``infra.local.kinesis``) runs them with AWS's batching and retry semantics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from infra.local.intrinsics import Resolver, TemplateError, references

ACCOUNT: Final = "123456789012"
"""moto's default account."""

LOCAL_DIFFERENCES: Final[dict[str, str]] = {
    "AWS::S3::BucketPolicy": (
        "applied without its deny-insecure-transport statement: the local endpoint is plain"
        " http, and moto answers 403 to every request on a bucket with that statement"
    ),
    "AWS::SQS::QueuePolicy": "set on the queue, not enforced (moto enforces no IAM)",
    "AWS::SNS::TopicPolicy": "set on the topic, not enforced (moto enforces no IAM)",
    "AWS::IAM::Policy": "attached to its roles, not enforced (moto enforces no IAM)",
    "AWS::KMS::Key": "created with its policy and rotation; encryption itself is not applied",
    "AWS::Kinesis::Stream": "on-demand streams get 4 shards, as AWS starts them",
    "AWS::Lambda::Function": (
        "runs in a subprocess per execution environment from the deployed zip, built for"
        " this machine's architecture (the local stage overrides the setting); tracing and"
        " advanced logging controls are recorded only"
    ),
    "AWS::Lambda::EventSourceMapping": (
        "run by rtml's poller with the template's settings; ParallelizationFactor > 1 runs a"
        " shard's batches one at a time (order per partition key is kept either way)"
    ),
    "AWS::CloudWatch::Alarm": "created; moto never evaluates alarms against metrics",
    "AWS::CloudWatch::Dashboard": "stored in moto (get-dashboard returns it); nothing renders it",
    "AWS::ApiGateway::RestApi": (
        "created in moto and served by rtml's front (infra/local/apigateway.py) at"
        " http://127.0.0.1:<port+1>/<stage>/: routes, API keys, usage plan rate, burst and"
        " daily quota, stage throttling, body models, gateway responses; no custom domains,"
        " authorizers, caching, or VTL mapping templates (proxy integrations only)"
    ),
    "AWS::ApiGateway::Stage": "access logs and X-Ray are recorded only",
    "AWS::ApiGateway::Account": "the logging role is recorded; nothing is logged to CloudWatch",
    "AWS::Lambda::Permission": "stored, not enforced (the front invokes the function itself)",
    "AWS::Scheduler::Schedule": (
        "created in moto, which never fires it: `rtml local tick [--at TIME]` fires the due"
        " ones (Lambda and Step Functions targets); no flexible windows or retries"
    ),
    "AWS::StepFunctions::StateMachine": (
        "the synthesized definition, executed by moto's engine with Lambda tasks in rtml's"
        " execution environments; Distributed Map items run as threads of the parent"
        " execution (no child execution ARNs), and a Map Run fails past its tolerated"
        " failures by rtml's patch (moto ignores them); no RedriveExecution (rerun instead);"
        " logging and tracing configuration recorded only; retry intervals really elapse"
    ),
    "Tags": "recorded in the deployment, not applied to resources",
    "DeletionPolicy": "moot: the local stack keeps nothing across restarts",
}
"""Every way the local copy differs from AWS, by resource type or template feature."""


@dataclass
class Created:
    """What CloudFormation returns for a resource: its Ref value and its attributes."""

    ref: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Resource:
    """One deployed resource."""

    logical_id: str
    type: str
    properties: dict[str, Any]
    created: Created


Handler = Callable[["Deployer", str, dict[str, Any]], Created]


@dataclass(frozen=True)
class TypeHandler:
    """How one resource type is created, and which of its properties that honours."""

    create: Handler
    properties: frozenset[str]


HANDLERS: dict[str, TypeHandler] = {}


def handles(kind: str, *properties: str) -> Callable[[Handler], Handler]:
    """Register a handler for ``kind`` that honours ``properties`` (and Tags)."""

    def register(function: Handler) -> Handler:
        HANDLERS[kind] = TypeHandler(function, frozenset({*properties, "Tags"}))
        return function

    return register


def physical_name(stack: str, logical_id: str, *, lower: bool = False, limit: int = 63) -> str:
    """A stable name like CloudFormation's ``<stack>-<logical id>`` (no random suffix, so a
    restarted local stack has the same names)."""
    name = f"{stack}-{logical_id}"[:limit]
    return re.sub(r"[^a-z0-9.-]", "-", name.lower()) if lower else name


class Deployer:
    """Creates one stack's resources on an endpoint through boto3 clients."""

    def __init__(
        self,
        clients: Callable[[str], Any],
        *,
        stack_name: str,
        region: str,
        account: str = ACCOUNT,
    ) -> None:
        self.client = clients
        self.stack_name = stack_name
        self.region = region
        self.account = account
        self.resources: dict[str, Resource] = {}
        self.parameters: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.event_source_mappings: list[dict[str, Any]] = []
        """Resolved properties of each mapping, for the poller."""
        self.deferred: list[Callable[[], Any]] = []
        """Steps run once every resource exists (S3 access logging, as S3 checks the target)."""
        self.functions: dict[str, dict[str, Any]] = {}
        """Per function name: handler, environment, timeout, memory, code (bucket, key)."""
        self.resolve = Resolver(
            pseudo={
                "AWS::AccountId": account,
                "AWS::Region": region,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": stack_name,
            },
            ref=self._ref,
            get_att=self._get_att,
        )

    # --- intrinsics -----------------------------------------------------------------------

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise TemplateError(f"Ref to {name}, which is not (yet) deployed")
        return self.resources[name].created.ref

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute}: not (yet) deployed")
        if attribute not in resource.created.attributes:
            raise TemplateError(
                f"Fn::GetAtt {logical_id}.{attribute}: {resource.type} has no such attribute"
                f" locally (known: {', '.join(sorted(resource.created.attributes))})"
            )
        return resource.created.attributes[attribute]

    def arn(self, service: str, resource: str, *, region: bool = True) -> str:
        where = self.region if region else ""
        return f"arn:aws:{service}:{where}:{self.account}:{resource}"

    # --- deployment -----------------------------------------------------------------------

    @staticmethod
    def check(template: Mapping[str, Any]) -> list[str]:
        """Every resource type or property of a template no handler honours (empty: ok)."""
        problems = []
        for logical_id, resource in template.get("Resources", {}).items():
            handler = HANDLERS.get(resource["Type"])
            if handler is None:
                problems.append(f"{logical_id}: resource type {resource['Type']} has no handler")
                continue
            unknown = set(resource.get("Properties", {})) - handler.properties
            problems += [
                f"{logical_id}: {resource['Type']} property {name} is not handled"
                for name in sorted(unknown)
            ]
            if resource.get("Condition"):
                problems.append(f"{logical_id}: conditions are not supported")
        if template.get("Conditions"):
            problems.append("template Conditions are not supported")
        return problems

    def deploy(
        self, template: Mapping[str, Any], *, on_resource: Callable[[str], None] | None = None
    ) -> None:
        """Create every resource of ``template``, dependencies first; outputs resolved."""
        problems = self.check(template)
        if problems:
            raise TemplateError("the local deployer cannot create:\n  " + "\n  ".join(problems))
        for name, parameter in template.get("Parameters", {}).items():
            if "Default" not in parameter:
                raise TemplateError(f"parameter {name} has no default")
            self.parameters[name] = parameter["Default"]
        resources = template.get("Resources", {})
        for logical_id in _dependency_order(resources):
            resource = resources[logical_id]
            properties = self.resolve(resource.get("Properties", {}))
            handler = HANDLERS[resource["Type"]]
            created = handler.create(self, logical_id, properties)
            self.resources[logical_id] = Resource(logical_id, resource["Type"], properties, created)
            if on_resource is not None:
                on_resource(logical_id)
        for step in self.deferred:
            step()
        for name, output in template.get("Outputs", {}).items():
            self.outputs[name] = self.resolve(output["Value"])


def _dependency_order(resources: Mapping[str, Any]) -> list[str]:
    """Resources in an order where each comes after what it references or DependsOn."""
    needs: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        depends = resource.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else list(depends)
        needs[logical_id] = (references(resource.get("Properties", {})) | set(depends)) & set(
            resources
        )
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            raise TemplateError(f"circular dependency through {node}")
        visiting.add(node)
        for dependency in sorted(needs[node]):
            visit(dependency)
        visiting.discard(node)
        done.add(node)
        order.append(node)

    for logical_id in resources:
        visit(logical_id)
    return order


def _tags(properties: Mapping[str, Any]) -> list[dict[str, str]]:
    return list(properties.get("Tags", []))


# --- S3 ------------------------------------------------------------------------------------


@handles(
    "AWS::S3::Bucket",
    "BucketName",
    "BucketEncryption",
    "LifecycleConfiguration",
    "LoggingConfiguration",
    "OwnershipControls",
    "PublicAccessBlockConfiguration",
    "VersioningConfiguration",
)
def _bucket(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    s3 = d.client("s3")
    name = p.get("BucketName") or physical_name(d.stack_name, logical_id, lower=True)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": d.region})
    if "BucketEncryption" in p:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                        **(
                            {"BucketKeyEnabled": rule["BucketKeyEnabled"]}
                            if "BucketKeyEnabled" in rule
                            else {}
                        ),
                    }
                    for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
            },
        )
    if "PublicAccessBlockConfiguration" in p:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"]
        )
    if "OwnershipControls" in p:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=p["OwnershipControls"])
    if "VersioningConfiguration" in p:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": p["VersioningConfiguration"]["Status"]}
        )
    if "LifecycleConfiguration" in p:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    _lifecycle_rule(k, r)
                    for k, r in enumerate(p["LifecycleConfiguration"]["Rules"])
                ]
            },
        )
    if "LoggingConfiguration" in p:
        logging = p["LoggingConfiguration"]
        # after every resource: the target's bucket policy (created later) must let the
        # logging service write, or S3 (moto too) refuses the configuration
        d.deferred.append(
            lambda: s3.put_bucket_logging(
                Bucket=name,
                BucketLoggingStatus={
                    "LoggingEnabled": {
                        "TargetBucket": logging["DestinationBucketName"],
                        "TargetPrefix": logging.get("LogFilePrefix", ""),
                    }
                },
            )
        )
    return Created(
        name,
        {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{d.region}.amazonaws.com",
        },
    )


def _lifecycle_rule(index: int, rule: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": rule.get("Id", f"rule-{index}"), "Status": rule["Status"]}
    out["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": rule["ExpirationInDays"]}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        }
    unknown = set(rule) - {
        "Id",
        "Status",
        "Prefix",
        "ExpirationInDays",
        "AbortIncompleteMultipartUpload",
    }
    if unknown:
        raise TemplateError(f"lifecycle rule fields not handled locally: {sorted(unknown)}")
    return out


def _denies_plain_http(statement: Mapping[str, Any]) -> bool:
    """A TLS-only statement: deny without TLS (``aws:SecureTransport``) or below a TLS
    version (``s3:TlsVersion``)."""
    if statement.get("Effect") != "Deny":
        return False
    condition = statement.get("Condition", {})
    insecure = condition.get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    old_tls = "s3:TlsVersion" in condition.get("NumericLessThan", {})
    return insecure or old_tls


@handles("AWS::S3::BucketPolicy", "Bucket", "PolicyDocument")
def _bucket_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    # The TLS-only statements are left out (LOCAL_DIFFERENCES): the endpoint is plain http,
    # and moto would refuse every request on the bucket. The rest is applied.
    document = dict(p["PolicyDocument"])
    document["Statement"] = [s for s in document["Statement"] if not _denies_plain_http(s)]
    if document["Statement"]:
        d.client("s3").put_bucket_policy(Bucket=p["Bucket"], Policy=json.dumps(document))
    return Created(f"{p['Bucket']}-policy")


# --- DynamoDB ------------------------------------------------------------------------------


@handles(
    "AWS::DynamoDB::GlobalTable",
    "TableName",
    "AttributeDefinitions",
    "BillingMode",
    "KeySchema",
    "Replicas",
    "SSESpecification",
    "TimeToLiveSpecification",
    "StreamSpecification",
)
def _table(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    dynamodb = d.client("dynamodb")
    name = p.get("TableName") or physical_name(d.stack_name, logical_id, limit=255)
    replicas = [r for r in p.get("Replicas", []) if r.get("Region") in (d.region, None)]
    if len(p.get("Replicas", [])) != len(replicas):
        raise TemplateError(f"{logical_id}: replicas in other regions are not supported locally")
    if p.get("BillingMode", "PROVISIONED") != "PAY_PER_REQUEST":
        raise TemplateError(f"{logical_id}: only on-demand (PAY_PER_REQUEST) tables locally")
    args: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": p["AttributeDefinitions"],
        "KeySchema": p["KeySchema"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if p.get("SSESpecification", {}).get("SSEEnabled"):
        args["SSESpecification"] = {"Enabled": True}
    if any(r.get("DeletionProtectionEnabled") for r in replicas):
        args["DeletionProtectionEnabled"] = True
    if "StreamSpecification" in p:
        args["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": p["StreamSpecification"]["StreamViewType"],
        }
    description = dynamodb.create_table(**args)["TableDescription"]
    ttl = p.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
    for replica in replicas:
        pitr = replica.get("PointInTimeRecoverySpecification", {})
        if pitr.get("PointInTimeRecoveryEnabled"):
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
    attributes = {"Arn": description["TableArn"], "TableId": description.get("TableId", name)}
    if "LatestStreamArn" in description:
        attributes["StreamArn"] = description["LatestStreamArn"]
    return Created(name, attributes)


# --- KMS, SNS, SQS, EventBridge, Logs, IAM ---------------------------------------------------


@handles("AWS::KMS::Key", "Description", "EnableKeyRotation", "KeyPolicy")
def _key(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    kms = d.client("kms")
    metadata = kms.create_key(
        Description=p.get("Description", ""), Policy=json.dumps(p["KeyPolicy"])
    )["KeyMetadata"]
    if p.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
    return Created(metadata["KeyId"], {"Arn": metadata["Arn"], "KeyId": metadata["KeyId"]})


@handles("AWS::SNS::Topic", "TopicName", "KmsMasterKeyId")
def _topic(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("TopicName") or physical_name(d.stack_name, logical_id, limit=256)
    attributes = {"KmsMasterKeyId": p["KmsMasterKeyId"]} if "KmsMasterKeyId" in p else {}
    arn = d.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
    return Created(arn, {"TopicArn": arn, "TopicName": name})


@handles("AWS::SNS::TopicPolicy", "PolicyDocument", "Topics")
def _topic_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    sns = d.client("sns")
    for topic in p["Topics"]:
        sns.set_topic_attributes(
            TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(p["PolicyDocument"])
        )
    return Created(physical_name(d.stack_name, logical_id))


@handles("AWS::SNS::Subscription", "Protocol", "Endpoint", "TopicArn")
def _subscription(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    arn = d.client("sns").subscribe(
        TopicArn=p["TopicArn"], Protocol=p["Protocol"], Endpoint=p["Endpoint"]
    )["SubscriptionArn"]
    return Created(arn)


@handles(
    "AWS::SQS::Queue",
    "QueueName",
    "MessageRetentionPeriod",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
    "VisibilityTimeout",
    "RedrivePolicy",
)
def _queue(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("QueueName") or physical_name(d.stack_name, logical_id, limit=80)
    attributes = {
        key: json.dumps(p[key]) if key == "RedrivePolicy" else str(p[key]).lower()
        if isinstance(p[key], bool) else str(p[key])
        for key in ("MessageRetentionPeriod", "SqsManagedSseEnabled", "KmsMasterKeyId",
                    "VisibilityTimeout", "RedrivePolicy")
        if key in p
    }  # fmt: skip
    url = d.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = d.arn("sqs", name)
    return Created(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


@handles("AWS::SQS::QueuePolicy", "PolicyDocument", "Queues")
def _queue_policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    sqs = d.client("sqs")
    for url in p["Queues"]:
        sqs.set_queue_attributes(
            QueueUrl=url, Attributes={"Policy": json.dumps(p["PolicyDocument"])}
        )
    return Created(physical_name(d.stack_name, logical_id))


@handles("AWS::Events::EventBus", "Name")
def _bus(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    arn = d.client("events").create_event_bus(Name=p["Name"])["EventBusArn"]
    return Created(p["Name"], {"Arn": arn, "Name": p["Name"]})


@handles("AWS::Logs::LogGroup", "LogGroupName", "RetentionInDays")
def _log_group(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("LogGroupName") or f"/rtml/{physical_name(d.stack_name, logical_id)}"
    logs = d.client("logs")
    logs.create_log_group(logGroupName=name)
    if "RetentionInDays" in p:
        logs.put_retention_policy(logGroupName=name, retentionInDays=p["RetentionInDays"])
    return Created(name, {"Arn": d.arn("logs", f"log-group:{name}:*")})


@handles(
    "AWS::IAM::Role", "AssumeRolePolicyDocument", "Description", "RoleName", "ManagedPolicyArns"
)
def _role(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    iam = d.client("iam")
    name = p.get("RoleName") or physical_name(d.stack_name, logical_id, limit=64)
    role = iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(p["AssumeRolePolicyDocument"]),
        Description=p.get("Description", ""),
    )["Role"]
    for arn in p.get("ManagedPolicyArns", []):
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    return Created(name, {"Arn": role["Arn"], "RoleId": role["RoleId"]})


@handles("AWS::IAM::Policy", "PolicyDocument", "PolicyName", "Roles")
def _policy(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    iam = d.client("iam")
    for role in p.get("Roles", []):
        iam.put_role_policy(
            RoleName=role,
            PolicyName=p["PolicyName"],
            PolicyDocument=json.dumps(p["PolicyDocument"]),
        )
    return Created(physical_name(d.stack_name, logical_id))


# --- Kinesis, Lambda, CloudWatch -------------------------------------------------------------


ON_DEMAND_SHARDS: Final = 4
"""Shards AWS gives an on-demand stream at creation (its write capacity grows from there)."""


@handles(
    "AWS::Kinesis::Stream",
    "Name",
    "RetentionPeriodHours",
    "ShardCount",
    "StreamEncryption",
    "StreamModeDetails",
)
def _stream(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    kinesis = d.client("kinesis")
    name = p.get("Name") or physical_name(d.stack_name, logical_id, limit=128)
    mode = p.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
    shards = ON_DEMAND_SHARDS if mode == "ON_DEMAND" else int(p.get("ShardCount", 1))
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    if p.get("RetentionPeriodHours", 24) > 24:
        kinesis.increase_stream_retention_period(
            StreamName=name, RetentionPeriodHours=p["RetentionPeriodHours"]
        )
    encryption = p.get("StreamEncryption")
    if encryption:
        kinesis.start_stream_encryption(
            StreamName=name, EncryptionType=encryption["EncryptionType"], KeyId=encryption["KeyId"]
        )
    return Created(name, {"Arn": d.arn("kinesis", f"stream/{name}")})


@handles(
    "AWS::Lambda::Function",
    "FunctionName",
    "Architectures",
    "Code",
    "Description",
    "Environment",
    "Handler",
    "LoggingConfig",
    "MemorySize",
    "ReservedConcurrentExecutions",
    "Role",
    "Runtime",
    "Timeout",
    "TracingConfig",
)
def _function(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("FunctionName") or physical_name(d.stack_name, logical_id, limit=64)
    code = p["Code"]
    if "S3Bucket" not in code:
        raise TemplateError(f"{logical_id}: only S3 (asset) code is supported locally")
    environment = p.get("Environment", {}).get("Variables", {})
    arn = d.client("lambda").create_function(
        FunctionName=name,
        Runtime=p["Runtime"],
        Role=p["Role"],
        Handler=p["Handler"],
        Code={"S3Bucket": code["S3Bucket"], "S3Key": code["S3Key"]},
        Description=p.get("Description", ""),
        Timeout=p.get("Timeout", 3),
        MemorySize=p.get("MemorySize", 128),
        Environment={"Variables": environment},
        Architectures=p.get("Architectures", ["x86_64"]),
    )["FunctionArn"]
    d.functions[name] = {
        "logical_id": logical_id,
        "handler": p["Handler"],
        "environment": {k: str(v) for k, v in environment.items()},
        "timeout": int(p.get("Timeout", 3)),
        "memory": int(p.get("MemorySize", 128)),
        "reserved_concurrency": p.get("ReservedConcurrentExecutions"),
        "code": (code["S3Bucket"], code["S3Key"]),
        "arn": arn,
        "log_group": p.get("LoggingConfig", {}).get("LogGroup"),
    }
    return Created(name, {"Arn": arn})


@handles(
    "AWS::Lambda::EventSourceMapping",
    "BatchSize",
    "BisectBatchOnFunctionError",
    "DestinationConfig",
    "Enabled",
    "EventSourceArn",
    "FunctionName",
    "FunctionResponseTypes",
    "MaximumBatchingWindowInSeconds",
    "MaximumRecordAgeInSeconds",
    "MaximumRetryAttempts",
    "ParallelizationFactor",
    "StartingPosition",
)
def _mapping(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    if ":kinesis:" not in p["EventSourceArn"]:
        raise TemplateError(f"{logical_id}: only Kinesis event sources are emulated locally")
    d.event_source_mappings.append({"LogicalId": logical_id, **p})
    return Created(f"{d.stack_name}-{logical_id}")


@handles(
    "AWS::CloudWatch::Alarm",
    "AlarmName",
    "AlarmActions",
    "AlarmDescription",
    "ComparisonOperator",
    "DatapointsToAlarm",
    "Dimensions",
    "EvaluationPeriods",
    "ExtendedStatistic",
    "MetricName",
    "Metrics",
    "Namespace",
    "Period",
    "Statistic",
    "Threshold",
    "TreatMissingData",
)
def _alarm(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("AlarmName") or physical_name(d.stack_name, logical_id, limit=255)
    args = {k: v for k, v in p.items() if k not in ("Tags", "AlarmName")}
    if "Metrics" in args:  # metric math: CloudFormation's shape is the API's
        args["Metrics"] = [_metric_query(m) for m in args["Metrics"]]
    d.client("cloudwatch").put_metric_alarm(AlarmName=name, **args)
    return Created(name, {"Arn": d.arn("cloudwatch", f"alarm:{name}")})


@handles("AWS::CloudWatch::Dashboard", "DashboardName", "DashboardBody")
def _dashboard(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("DashboardName") or physical_name(d.stack_name, logical_id, limit=255)
    body = p["DashboardBody"]
    json.loads(body)  # the resolved body must be the JSON CloudWatch gets
    d.client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=body)
    return Created(name)


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in query.items() if k != "MetricStat"}
    if "MetricStat" in query:
        stat = query["MetricStat"]
        out["MetricStat"] = {**stat, "Metric": dict(stat["Metric"])}
    return out


def publish_file_assets(assets_manifest: Path, resolve: Resolver, s3: Any) -> list[tuple[str, str]]:
    """Upload every file asset where the manifest's destinations say (what ``cdk deploy``
    publishes before creating the stack); returns (bucket, key) of each."""
    manifest = json.loads(assets_manifest.read_text())
    published = []
    for asset in manifest.get("files", {}).values():
        source = assets_manifest.parent / asset["source"]["path"]
        if asset["source"].get("packaging", "file") != "file" or source.is_dir():
            raise TemplateError(f"asset {source}: only file (zip) assets are published locally")
        for destination in asset["destinations"].values():
            bucket = resolve({"Fn::Sub": destination["bucketName"]})
            key = resolve({"Fn::Sub": destination["objectKey"]})
            existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
            if bucket not in existing:
                s3.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": resolve.pseudo["AWS::Region"]},
                )
            s3.upload_file(str(source), bucket, key)
            published.append((bucket, key))
    return published


# Handlers that live with their emulation (API Gateway's front, schedules' tick); importing
# registers them.
from infra.local import apigateway as _apigateway  # noqa: E402, F401
from infra.local import schedules as _schedules  # noqa: E402, F401
from infra.local import stepfunctions as _stepfunctions  # noqa: E402, F401
