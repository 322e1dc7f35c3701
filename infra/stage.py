"""One deployable environment (dev, prod): a CDK stage holding the rtml stack."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from infra.settings import EnvSettings
from infra.stacks.rtml_stack import RtmlStack

PROJECT_TAG = "rtml"
"""Value of the ``project`` tag on every resource, for cost allocation and search."""


class RtmlStage(cdk.Stage):
    """An environment's stack, tagged ``project`` and ``environment``, named ``rtml-<stage>``."""

    settings: EnvSettings
    """The environment this stage deploys."""

    stack: RtmlStack
    """The environment's only stack."""

    def __init__(self, scope: Construct, *, settings: EnvSettings) -> None:
        super().__init__(scope, settings.stage_name, env=settings.cdk_environment)
        self.settings = settings
        tags = {"project": PROJECT_TAG, "environment": settings.stage_name}
        # Tags.of() tags the resources in the templates; with the explicitStackTags flag the
        # stack's own tags must be given to the Stack itself.
        self.stack = RtmlStack(
            self, "Rtml", settings=settings, stack_name=f"rtml-{settings.stage_name}", tags=tags
        )
        for key, value in tags.items():
            cdk.Tags.of(self).add(key, value)
