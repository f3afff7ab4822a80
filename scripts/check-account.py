#!/usr/bin/env python3
"""Before `sam deploy`: the first step that needs AWS credentials. Says which account and region the stack is
about to go to, and checks that the region's unreserved concurrency can take the stack's reservations (Lambda
keeps 100 executions unreserved; new accounts start with a lower quota), so a deploy does not fail half-way on
it. Takes `sam deploy`'s extra arguments (DEPLOY_ARGS): `--region`, `--stack-name` and overridden
reservations in `--parameter-overrides` win over samconfig.toml.

    scripts/check-account.py [--region R] [--stack-name S] [--parameter-overrides Name=Value ...]
"""

import re
import sys
from pathlib import Path

import boto3
import botocore.exceptions

UNRESERVED_MINIMUM = 100
DEFAULTS = {"InferenceReservedConcurrency": 100, "WebhookReservedConcurrency": 10}


def setting(arguments, flag, config, key):
    """A `sam deploy` flag's value from DEPLOY_ARGS, else samconfig.toml's."""
    given = re.search(rf"--{flag}[= ](\S+)", arguments)
    if given:
        return given.group(1)
    return re.search(rf'^{key} = "([^"]+)"', config, re.M).group(1)


def reserved_by_stack(session, region, stack):
    """What the stack's functions reserve now (0 for a stack not created yet): an update frees it first."""
    cloudformation = session.client("cloudformation", region_name=region)
    functions = session.client("lambda", region_name=region)
    total = 0
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
        for page in pages:
            for resource in page["StackResourceSummaries"]:
                if resource["ResourceType"] == "AWS::Lambda::Function" and resource.get("PhysicalResourceId"):
                    concurrency = functions.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
                    total += concurrency.get("ReservedConcurrentExecutions", 0)
    except botocore.exceptions.ClientError as error:
        if "does not exist" not in str(error):
            raise
    return total


def main():
    arguments = " ".join(sys.argv[1:])
    reserved = {name: int(m.group(1)) if (m := re.search(rf"\b{name}=(\d+)", arguments)) else default
                for name, default in DEFAULTS.items()}
    config = (Path(__file__).resolve().parent.parent / "samconfig.toml").read_text()
    region = setting(arguments, "region", config, "region")
    stack = setting(arguments, "stack-name", config, "stack_name")
    session = boto3.session.Session()
    try:
        account = session.client("sts", region_name=region).get_caller_identity()["Account"]
        print(f"account: deploying stack {stack} to account {account}, region {region}")
        settings = session.client("lambda", region_name=region).get_account_settings()
        already = reserved_by_stack(session, region, stack)
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
        sys.exit("AWS credentials are needed from here on (aws configure, or the AWS_* variables).")
    except botocore.exceptions.ClientError as error:
        sys.exit(f"could not read the account's Lambda settings in {region}: {error}")
    # What other stacks reserve is not ours to take: only the unreserved pool (plus what this stack holds
    # already, which an update gives back) can be reserved.
    available = settings["AccountLimit"]["UnreservedConcurrentExecutions"] + already
    wanted = sum(reserved.values())
    if available - wanted < UNRESERVED_MINIMUM:
        sys.exit(
            f"account {account} has {available} concurrent executions free to reserve in {region}; the stack "
            f"reserves {wanted} and Lambda keeps {UNRESERVED_MINIMUM} unreserved. Ask for more (Service Quotas: "
            "Lambda, Concurrent executions) or deploy with DEPLOY_ARGS=\"--parameter-overrides "
            "InferenceReservedConcurrency=0 WebhookReservedConcurrency=0\"."
        )
    print(f"account: {available} concurrent executions free to reserve in {region}, {wanted + UNRESERVED_MINIMUM} needed")


if __name__ == "__main__":
    main()
