#!/usr/bin/env python3
"""Before `sam deploy`: the first step that needs AWS credentials. Checks that the account can hold the
stack's reserved concurrency (Lambda keeps 100 executions unreserved; new accounts start with a lower
quota), so a deploy does not fail half-way on it. Takes `sam deploy`'s extra arguments (DEPLOY_ARGS) to
see overridden reservations.

    scripts/check-account.py [--parameter-overrides Name=Value ...]
"""

import re
import sys
from pathlib import Path

import boto3
import botocore.exceptions

UNRESERVED_MINIMUM = 100
DEFAULTS = {"InferenceReservedConcurrency": 100, "WebhookReservedConcurrency": 10}


def main():
    arguments = " ".join(sys.argv[1:])
    reserved = {name: int(m.group(1)) if (m := re.search(rf"\b{name}=(\d+)", arguments)) else default
                for name, default in DEFAULTS.items()}
    config = (Path(__file__).resolve().parent.parent / "samconfig.toml").read_text()
    region = re.search(r'^region = "([^"]+)"', config, re.M).group(1)
    try:
        settings = boto3.client("lambda", region_name=region).get_account_settings()
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
        sys.exit("AWS credentials are needed from here on (aws configure, or the AWS_* variables).")
    except botocore.exceptions.ClientError as error:
        sys.exit(f"could not read the account's Lambda settings in {region}: {error}")
    limit = settings["AccountLimit"]["ConcurrentExecutions"]
    needed = sum(reserved.values()) + UNRESERVED_MINIMUM
    if limit < needed:
        sys.exit(
            f"this account allows {limit} concurrent executions in {region}; the stack reserves "
            f"{sum(reserved.values())} and Lambda keeps {UNRESERVED_MINIMUM} unreserved ({needed}). Ask for more "
            "(Service Quotas: Lambda, Concurrent executions) or deploy with DEPLOY_ARGS=\"--parameter-overrides "
            "InferenceReservedConcurrency=0 WebhookReservedConcurrency=0\"."
        )
    print(f"account: {limit} concurrent executions in {region}, {needed} needed")


if __name__ == "__main__":
    main()
