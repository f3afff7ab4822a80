#!/usr/bin/env python3
"""After `sam deploy`: puts the dashboard (dashboard/site) in the stack's dashboard bucket and tells
CloudFront. Reads the stack's outputs (DashboardBucketName, DashboardDistributionId, DashboardUrl); the
stack name and region come from samconfig.toml, like `sam deploy` (or `--stack-name` / `--region` among the
arguments, which are `sam deploy`'s extra arguments, DEPLOY_ARGS; the rest are ignored).

    scripts/publish-dashboard.py [--dry-run] [--stack-name NAME] [--region REGION] [...]

- every file under dashboard/site, under its path (`static/app.js`), with its Content-Type; HTML and
  config.json with `Cache-Control: no-cache` (the browser asks again each time, so a deploy shows at
  once), everything else `max-age=300`;
- ops.html also under the key `ops` (text/html): the operator console is served at /ops without a
  CloudFront function;
- assets first and the pages last, so a new page never names an asset that is not there yet; then the
  objects no longer in dashboard/site are deleted and the distribution is invalidated (`/*`).
Refuses a file whose path the distribution sends to the API (it could never be served).
--dry-run prints what it would upload and needs no AWS credentials.

Runs with the SAM CLI's virtualenv (.tools/sam/bin/python), which has boto3.
"""

import mimetypes
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "dashboard" / "site"
NO_CACHE = "no-cache"
STATIC_CACHE = "public, max-age=300"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/vnd.microsoft.icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".webmanifest": "application/manifest+json",
}
# The operator console's page, also served at /ops (this key, as HTML).
OPS_PAGE, OPS_KEY = "ops.html", "ops"
CATALOG_KEY = "catalog.json"


def argument(args, name):
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def samconfig(name):
    """A value of samconfig.toml's [default.global.parameters] (stack_name, region)."""
    config = (ROOT / "samconfig.toml").read_text()
    found = re.search(rf'^{name} = "([^"]+)"', config, re.M)
    if not found:
        sys.exit(f"samconfig.toml names no {name}")
    return found.group(1)


def content_type(path):
    known = CONTENT_TYPES.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def cache_control(key):
    return NO_CACHE if key.endswith(".html") or key in {"config.json", CATALOG_KEY, OPS_KEY} else STATIC_CACHE


def planned():
    """(key, file, content type, cache control) of every object, pages last."""
    if not (SITE / "index.html").is_file():
        sys.exit(f"{SITE.relative_to(ROOT)}/index.html is missing: nothing to publish")
    files = sorted(p for p in SITE.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(SITE).parts))
    objects = [(p.relative_to(SITE).as_posix(), p) for p in files]
    if (SITE / OPS_PAGE).is_file():
        objects.append((OPS_KEY, SITE / OPS_PAGE))
    # The public models page reads the catalog the API routes by.
    objects.append((CATALOG_KEY, ROOT / "catalog" / "models.json"))
    plan = [(key, path, "text/html; charset=utf-8" if key == OPS_KEY else content_type(path), cache_control(key)) for key, path in objects]
    # Assets, then config.json, then the pages (index.html last): what a page names is there before it.
    order = lambda item: (item[3] == NO_CACHE, item[0] == "index.html", item[0])  # noqa: E731
    return sorted(plan, key=order)


def path_matches(pattern, path):
    """CloudFront's path pattern match: `*` any characters (slashes too), `?` one; case-sensitive."""
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), path) is not None


def main():
    args = sys.argv[1:]
    dry_run = "--dry-run" in args
    stack = argument(args, "--stack-name") or samconfig("stack_name")
    region = argument(args, "--region") or samconfig("region")
    plan = planned()
    if dry_run:
        for key, path, kind, cache in plan:
            print(f"dashboard: would upload {path.relative_to(ROOT)} -> {key} ({kind}; {cache})")
        print(f"dashboard: {len(plan)} objects for stack {stack} in {region}; stale ones deleted, then /* invalidated")
        return

    import boto3
    import botocore.exceptions

    session = boto3.session.Session(region_name=region)
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError):
        sys.exit("AWS credentials are needed to publish the dashboard (aws configure, or the AWS_* variables).")
    except botocore.exceptions.ClientError as error:
        sys.exit(f"could not read stack {stack} in {region}: {error}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [k for k in ["DashboardBucketName", "DashboardDistributionId", "DashboardUrl"] if k not in outputs]
    if missing:
        sys.exit(f"stack {stack} has no output {', '.join(missing)}: deploy the current template first")
    bucket, distribution = outputs["DashboardBucketName"], outputs["DashboardDistributionId"]

    # Paths the distribution routes to the API would never reach the bucket.
    cloudfront = session.client("cloudfront")
    config = cloudfront.get_distribution_config(Id=distribution)["DistributionConfig"]
    s3_origin = config["DefaultCacheBehavior"]["TargetOriginId"]
    api_patterns = [
        b["PathPattern"] for b in config.get("CacheBehaviors", {}).get("Items", []) if b["TargetOriginId"] != s3_origin
    ]
    shadowed = [key for key, *_ in plan if any(path_matches(p, "/" + key) for p in api_patterns)]
    if shadowed:
        sys.exit(f"the distribution sends these paths to the API, not the bucket: {', '.join(shadowed)}; rename them")

    s3 = session.client("s3")
    for key, path, kind, cache in plan:
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=kind, CacheControl=cache)
        print(f"dashboard: {key} ({kind}; {cache})")

    wanted = {key for key, *_ in plan}
    stale = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if obj["Key"] not in wanted
    ]
    for start in range(0, len(stale), 1000):
        batch = stale[start : start + 1000]
        result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        if result.get("Errors"):
            sys.exit(f"could not delete {', '.join(e['Key'] for e in result['Errors'])} from {bucket}")
    for key in stale:
        print(f"dashboard: deleted {key}")

    invalidation = cloudfront.create_invalidation(
        DistributionId=distribution,
        InvalidationBatch={"Paths": {"Quantity": 1, "Items": ["/*"]}, "CallerReference": f"publish-{time.time_ns()}"},
    )["Invalidation"]
    print(
        f"dashboard: {len(plan)} objects in {bucket}, {len(stale)} deleted; invalidation {invalidation['Id']} of /* "
        f"({invalidation['Status']}); {outputs['DashboardUrl']}"
    )


if __name__ == "__main__":
    main()
