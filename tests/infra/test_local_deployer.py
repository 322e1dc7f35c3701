"""The local deployer covers every resource type and property the app synthesizes, so a new
construct cannot be silently missing on the local stack; it refuses what it does not know."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.local.deployer import HANDLERS, LOCAL_DIFFERENCES, Deployer, _dependency_order
from infra.local.intrinsics import Resolver, TemplateError, references

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_deployer_handles_every_resource_type_and_property_of_the_app(
    templates: dict[str, Template], env_name: str
) -> None:
    template = templates[env_name].to_json()
    assert Deployer.check(template) == []
    # and every type that differs locally is documented
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert kinds <= set(HANDLERS)
    assert {"AWS::S3::BucketPolicy", "AWS::Lambda::EventSourceMapping"} <= set(LOCAL_DIFFERENCES)


def test_deployer_refuses_unknown_types_and_properties() -> None:
    template: dict[str, Any] = {
        "Resources": {
            "Api": {"Type": "AWS::AppSync::GraphQLApi", "Properties": {}},
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {"FifoQueue": True}},
        }
    }
    problems = Deployer.check(template)
    assert problems == [
        "Api: resource type AWS::AppSync::GraphQLApi has no handler",
        "Q: AWS::SQS::Queue property FifoQueue is not handled",
    ]
    with pytest.raises(TemplateError, match="FifoQueue"):
        Deployer(lambda service: None, stack_name="s", region="eu-west-1").deploy(template)


def test_dependency_order_follows_refs_getatts_subs_and_depends_on() -> None:
    resources = {
        "Fn": {"Type": "X", "Properties": {"Role": {"Fn::GetAtt": ["Role", "Arn"]}},
               "DependsOn": ["Policy"]},
        "Policy": {"Type": "X", "Properties": {"Roles": [{"Ref": "Role"}]}},
        "Role": {"Type": "X", "Properties": {"N": {"Fn::Sub": "${Bucket.Arn}/x ${AWS::Region}"}}},
        "Bucket": {"Type": "X", "Properties": {}},
    }  # fmt: skip
    assert _dependency_order(resources) == ["Bucket", "Role", "Policy", "Fn"]
    assert references({"Fn::Sub": ["${A}-${B}", {"B": "x"}]}) == {"A"}


def test_resolver_evaluates_the_intrinsics_cdk_emits() -> None:
    resolve = Resolver(
        pseudo={"AWS::Region": "eu-west-1", "AWS::AccountId": "1", "AWS::Partition": "aws"},
        ref=lambda name: {"Bucket": "b-1"}[name],
        get_att=lambda logical_id, attribute: f"arn:{logical_id}:{attribute}",
    )
    value = {
        "join": {"Fn::Join": ["", ["s3://", {"Ref": "Bucket"}, "/registry"]]},
        "sub": {"Fn::Sub": "cdk-${AWS::AccountId}-${AWS::Region} ${Bucket.Arn} ${!Literal}"},
        "select": {"Fn::Select": [1, {"Fn::Split": ["/", "a/b/c"]}]},
        "local_sub": {"Fn::Sub": ["${X}-${AWS::Partition}", {"X": {"Ref": "Bucket"}}]},
    }
    assert resolve(value) == {
        "join": "s3://b-1/registry",
        "sub": "cdk-1-eu-west-1 arn:Bucket:Arn ${Literal}",
        "select": "b",
        "local_sub": "b-1-aws",
    }
    with pytest.raises(TemplateError, match="Fn::ImportValue"):
        resolve({"Fn::ImportValue": "x"})
