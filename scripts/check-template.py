#!/usr/bin/env python3
"""What template.yaml deploys, checked on the CloudFormation that AWS SAM generates from it (the same
translator `sam deploy` runs, aws-sam-translator, offline): every route, streaming where the function
streams, secrets only by reference, data kept with its keys, limits and alarms in place, buckets private and
TLS-only, and the dashboard's CloudFront distribution (its private bucket, the API on the same origin, the
pages' security headers).

    scripts/check-template.py [template.yaml]

Prints one line per check and exits non-zero if any fails.
"""

import json
import logging
import os
import re
import sys
from pathlib import Path

import yaml
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import template_india  # noqa: E402
import template_operators  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The secret-bearing variables the functions refuse to start with (shared::runtime_secrets::SECRET_ENV_VARS).
SECRET_ENV_VARS = re.findall(
    r'"([A-Z_]+)"',
    re.search(
        r"SECRET_ENV_VARS: \[&str; \d+\] = \[(.*?)\];",
        (ROOT / "shared/src/runtime_secrets/mod.rs").read_text(),
        re.S,
    ).group(1),
)
# Literal (non-reference) environment values a function may carry: configuration, never credentials.
PLAIN_ENV_VARS = {"INFEREX_LOG", "AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "GLIBC_TUNABLES"}
ERROR_SHAPE_KEYS = {"type", "code", "message", "param"}
# The money-path alerts every deployment must turn into alarms (shared::alerts; each one is in its ALL).
ALERTS = re.findall(r'pub const [A-Z_]+: &str = "([a-z_]+)";', (ROOT / "shared/src/alerts.rs").read_text())
KEPT_TYPES = {"AWS::DynamoDB::Table", "AWS::KMS::Key", "AWS::SecretsManager::Secret", "AWS::S3::Bucket"}
# Kept when the stack goes; a failed first create may delete what it made (nothing is in it yet), except
# the tables, whose deletion protection would stop that rollback.
KEPT = {"Retain", "RetainExceptOnCreate"}
MIN_LOG_DAYS = template_india.MIN_LOG_DAYS
# The Content-Security-Policy the dashboard's pages are written for (the dashboard contract): no inline
# script or style, Razorpay Checkout's script, frames and calls only.
# The dashboard's Content-Security-Policy: one text, which make run serves too.
DASHBOARD_CSP = (ROOT / "dashboard" / "content-security-policy.txt").read_text().strip()
# The operator console's: no third party at all.
OPS_CSP = (ROOT / "dashboard" / "ops-content-security-policy.txt").read_text().strip()
# The functions that record the caller's address (consents, logins, per-address limits).
CLIENT_ADDRESS_FUNCTIONS = ["SignupFunction", "AuthFunction", "PrivacyFunction"]
# Error codes CloudFront would otherwise cache for everyone (10 seconds by default).
ERROR_CODES = {400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504}
# CloudFront's managed policies, by id.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
ALL_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"}
DASHBOARD_OUTPUTS = ["DashboardUrl", "DashboardBucketName", "DashboardDistributionId"]

failures = []
passed = []


def check(ok, what):
    print(f"template: {'ok  ' if ok else 'FAIL'} {what}")
    (passed if ok else failures).append(what)


class NoManagedPolicies:
    """The template names managed policies by ARN only; the translator needs no lookup."""

    def load(self):
        return {}


def generated(template_path):
    logging.disable(logging.WARNING)  # the translator's notes on its feature toggles
    template = yaml_parse(Path(template_path).read_text())
    # What `sam package` does before the transform: code lives in S3.
    template.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://artifacts/code.zip"
    os.environ.setdefault("AWS_DEFAULT_REGION", "ap-south-1")
    params = {"AWS::Region": "ap-south-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    return template, transform(template, params, NoManagedPolicies())


def ref_name(value):
    """The logical id an intrinsic points at (Ref, GetAtt), if it is one."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return att[0] if isinstance(att, list) else att.split(".")[0]
    return None


def refers_to(value, name):
    """Whether an intrinsic names the logical id: Ref, GetAtt, or ${name} / ${name.Attribute} in a Sub."""
    if ref_name(value) == name:
        return True
    sub = value.get("Fn::Sub") if isinstance(value, dict) else None
    text = sub[0] if isinstance(sub, list) else sub
    return isinstance(text, str) and re.search(rf"\$\{{{re.escape(name)}(\.[\w.]+)?\}}", text) is not None


def as_list(value):
    return value if isinstance(value, list) else [value]


def path_matches(pattern, path):
    """CloudFront's path pattern match: `*` any characters (slashes too), `?` one; case-sensitive."""
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), path) is not None


def integration_function(integration):
    uri = integration.get("uri", {})
    text = uri.get("Fn::Sub", "") if isinstance(uri, dict) else str(uri)
    found = re.search(r"\$\{(\w+)\.Arn\}", text if isinstance(text, str) else text[0])
    return (found.group(1) if found else None), ("response-streaming-invocations" in str(text))


def main():
    template_path = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "template.yaml")
    try:
        source, out = generated(template_path)
    except Exception as error:  # the translator's own report is the message
        check(False, f"SAM transforms the template: {error}")
        return 1
    resources = out["Resources"]
    of_type = lambda kind: {k: v for k, v in resources.items() if v["Type"] == kind}  # noqa: E731
    functions = of_type("AWS::Lambda::Function")
    apis = of_type("AWS::ApiGateway::RestApi")
    check(len(apis) == 1, "one REST API")
    api_id, api = next(iter(apis.items()))
    body = api["Properties"].get("Body", {})
    paths = body.get("paths", {})

    # Routes: every documented route is deployed, each to a function.
    documented = yaml.safe_load((ROOT / "openapi.yaml").read_text())["paths"]
    for path, methods in documented.items():
        for method in methods:
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            integration = paths.get(path, {}).get(method, {}).get("x-amazon-apigateway-integration")
            check(
                bool(integration) and integration.get("type") == "aws_proxy",
                f"{method.upper()} {path} is deployed as a Lambda proxy route",
            )

    # Streaming: every route of the inference function streams, with a timeout covering the function's.
    inference_timeout_ms = functions.get("InferenceFunction", {}).get("Properties", {}).get("Timeout", 0) * 1000
    check(inference_timeout_ms > 0, "the inference function has a timeout")
    for path, methods in paths.items():
        for method, operation in methods.items():
            integration = operation.get("x-amazon-apigateway-integration", {})
            function, streaming_uri = integration_function(integration)
            if function != "InferenceFunction":
                continue
            check(
                integration.get("responseTransferMode") == "STREAM" and streaming_uri,
                f"{method.upper()} {path} streams (the inference binary answers every route in the streaming format)",
            )
            check(
                int(integration.get("timeoutInMillis", 29000)) >= inference_timeout_ms,
                f"{method.upper()} {path}: integration timeout {integration.get('timeoutInMillis', 29000)} ms "
                f">= the function's {inference_timeout_ms} ms",
            )

    # Gateway responses: part of the API definition (so they survive updates), in our error shape.
    responses = body.get("x-amazon-apigateway-gateway-responses", {})
    for kind in ["MISSING_AUTHENTICATION_TOKEN", "THROTTLED", "DEFAULT_4XX", "DEFAULT_5XX"]:
        template = responses.get(kind, {}).get("responseTemplates", {}).get("application/json", "")
        shaped = all(f'"{key}"' in template for key in ERROR_SHAPE_KEYS) and template.startswith('{"error":')
        check(shaped, f"gateway response {kind} is in the API definition, in the error shape")
        headers = responses.get(kind, {}).get("responseParameters", {})
        check(
            headers.get("gatewayresponse.header.Access-Control-Allow-Origin") == "'*'",
            f"gateway response {kind} is readable by a browser app on another origin",
        )
        if kind in ("THROTTLED", "DEFAULT_5XX"):
            check(
                str(headers.get("gatewayresponse.header.Retry-After", "")).strip("'").isdigit(),
                f"gateway response {kind} says when to retry",
            )
    check(not of_type("AWS::ApiGateway::GatewayResponse"), "no standalone gateway responses (an API update drops them)")
    stray_stages = [k for k, v in of_type("AWS::ApiGateway::Deployment").items() if "StageName" in v["Properties"]]
    check(not stray_stages, "no extra stage named by a deployment (SAM's 'Stage')")

    # Stage: throttled, metrics and access logs without secrets, tracing.
    stages = of_type("AWS::ApiGateway::Stage")
    check(len(stages) == 1, "one stage")
    stage = next(iter(stages.values()), {}).get("Properties", {})
    throttled = [
        s for s in stage.get("MethodSettings", []) if "ThrottlingRateLimit" in s and "ThrottlingBurstLimit" in s
    ]
    check(bool(throttled), "the stage is throttled")
    access_format = stage.get("AccessLogSetting", {}).get("Format", "")
    check(bool(access_format), "the stage writes access logs")
    leaks = re.findall(r"\$(?:context|input|method)\.[\w.]*(?:header|querystring|body|authoriz|apiKey|token)", access_format, re.I)
    check(not leaks, f"access logs name no header, query string, body or key ({leaks})")
    check(stage.get("TracingEnabled") is True, "the stage is traced")

    # Secrets: never a value in a function's environment.
    for name, function in functions.items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        named = [v for v in variables if v in SECRET_ENV_VARS]
        check(not named, f"{name}: no secret-bearing variable in its environment ({named})")
        literal = [
            v
            for v, value in variables.items()
            if isinstance(value, str) and v not in PLAIN_ENV_VARS and not ref_name(value)
        ]
        check(not literal, f"{name}: environment values are references or plain configuration ({literal})")
        for var, value in variables.items():
            if var.endswith("_SECRET_ARN"):
                target = ref_name(value)
                check(
                    resources.get(target, {}).get("Type") == "AWS::SecretsManager::Secret",
                    f"{name}: {var} names a Secrets Manager secret",
                )

    # The functions that hash passwords (argon2id, 19 MiB a hash) give that memory back after each hash: glibc's
    # adjustable mmap threshold otherwise keeps it in per-thread arenas (229 MiB measured on make bench-fleet).
    for name in ("SignupFunction", "AuthFunction"):
        variables = functions.get(name, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        check(
            variables.get("GLIBC_TUNABLES") == "glibc.malloc.mmap_threshold=131072",
            f"{name}: a fixed mmap threshold, so each password hash's memory is returned",
        )

    # Data kept with its keys: stateful resources retained, tables protected.
    for name, resource in resources.items():
        if resource["Type"] in KEPT_TYPES:
            allowed = {"Retain"} if resource["Type"] == "AWS::DynamoDB::Table" else KEPT
            kept = resource.get("DeletionPolicy") in allowed and resource.get("UpdateReplacePolicy") == "Retain"
            check(kept, f"{name} ({resource['Type']}) is retained on deletion and replacement")
    for name, table in of_type("AWS::DynamoDB::Table").items():
        check(table["Properties"].get("DeletionProtectionEnabled") is True, f"{name} has deletion protection")
    declared = source["Resources"]
    check(
        all(declared.get(k, {}).get("DeletionPolicy") in KEPT for k in ["VaultKey", "FingerprintKey", "ExportKey"]),
        "the vault, fingerprint and export keys are retained like the data they protect",
    )

    # Exports: their own bucket, not versioned, encrypted with their own key; the privacy function uses it.
    export_bucket = declared.get("ExportBucket", {}).get("Properties", {})
    encryption = export_bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [{}])[0]
    by_default = encryption.get("ServerSideEncryptionByDefault", {})
    check(
        by_default.get("SSEAlgorithm") == "aws:kms" and ref_name(by_default.get("KMSMasterKeyID")) == "ExportKey",
        "exports are encrypted with the export key",
    )
    check("VersioningConfiguration" not in export_bucket, "the export bucket keeps no old versions of deleted exports")
    privacy_env = functions.get("PrivacyFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    check(ref_name(privacy_env.get("INFEREX_BLOB_BUCKET")) == "ExportBucket", "the privacy function writes to the export bucket")

    # Exports are built outside the request: the export item's insertion reaches the exports function.
    main_table = declared.get("MainTable", {}).get("Properties", {})
    check("StreamViewType" in main_table.get("StreamSpecification", {}), "the main table has a stream")
    mappings = [
        m["Properties"]
        for m in of_type("AWS::Lambda::EventSourceMapping").values()
        if ref_name(m["Properties"].get("FunctionName")) == "ExportsFunction"
    ]
    patterns = [f.get("Pattern", "") for m in mappings for f in m.get("FilterCriteria", {}).get("Filters", [])]
    check(
        any('"INSERT"' in p and "EXPORT#" in p for p in patterns),
        "the exports function receives inserted export items from the main table's stream",
    )
    check(
        any(m.get("DestinationConfig", {}).get("OnFailure") and "ReportBatchItemFailures" in m.get("FunctionResponseTypes", []) for m in mappings),
        "export builds report partial failures and keep what they could not finish",
    )
    exports_props = functions.get("ExportsFunction", {}).get("Properties", {})
    check(exports_props.get("Timeout", 0) >= 300 and exports_props.get("MemorySize", 0) >= 1024, "exports get 5 minutes and 1 GB")

    # E-mail: the outbox reaches the mailer through the stream, sends are retried and kept when they fail,
    # SES reports bounces and complaints to the function that keeps the suppression list.
    mailer_mappings = [
        m["Properties"]
        for m in of_type("AWS::Lambda::EventSourceMapping").values()
        if ref_name(m["Properties"].get("FunctionName")) == "MailerFunction"
    ]
    mail_patterns = [f.get("Pattern", "") for m in mailer_mappings for f in m.get("FilterCriteria", {}).get("Filters", [])]
    check(
        any('"INSERT"' in p and '"OUTBOX"' in p for p in mail_patterns),
        "the mailer receives inserted outbox items from the main table's stream",
    )
    check(
        any(
            m.get("DestinationConfig", {}).get("OnFailure")
            and "ReportBatchItemFailures" in m.get("FunctionResponseTypes", [])
            and m.get("MaximumRetryAttempts", 0) >= 1
            for m in mailer_mappings
        ),
        "mail sends are retried, report partial failures and keep what they could not send",
    )
    destinations = of_type("AWS::SES::ConfigurationSetEventDestination")
    feedback_topics = {
        ref_name(d["Properties"]["EventDestination"].get("SnsDestination", {}).get("TopicARN"))
        for d in destinations.values()
        if {"bounce", "complaint"} <= set(d["Properties"]["EventDestination"].get("MatchingEventTypes", []))
    }
    subscribed = {
        ref_name(s["Properties"].get("TopicArn"))
        for s in of_type("AWS::SNS::Subscription").values()
        if s["Properties"].get("Protocol") == "lambda" and "MailFeedbackFunction" in json.dumps(s["Properties"].get("Endpoint"))
    }
    check(bool(feedback_topics & subscribed), "SES bounces and complaints reach the suppression list's function")
    mailer_env = functions.get("MailerFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    check(
        ref_name(mailer_env.get("INFEREX_SES_CONFIGURATION_SET")) in of_type("AWS::SES::ConfigurationSet"),
        "the mailer sends under the configuration set that reports bounces and complaints",
    )
    check("INFEREX_PUBLIC_URL" in mailer_env and "INFEREX_MAIL_FROM" in mailer_env, "the mailer knows where links point and who sends")

    # Limits: inference capped, the webhook reserved.
    for name in ["InferenceFunction", "RazorpayWebhookFunction"]:
        reserved = functions.get(name, {}).get("Properties", {}).get("ReservedConcurrentExecutions")
        check(reserved is not None, f"{name} has reserved concurrency (a parameter)")

    # Logs: every function logs to a group of this template with at least 180 days' retention.
    groups = of_type("AWS::Logs::LogGroup")
    for name, function in functions.items():
        group = ref_name(function["Properties"].get("LoggingConfig", {}).get("LogGroup"))
        days = groups.get(group, {}).get("Properties", {}).get("RetentionInDays")
        days = source.get("Parameters", {}).get(ref_name(days), {}).get("Default") if ref_name(days) else days
        check(group in groups and int(days or 0) >= MIN_LOG_DAYS, f"{name} logs to its own group kept {days} days")

    # A stack deleted and created again under its name must not meet its kept log groups' names.
    for name, group in groups.items():
        named = group["Properties"].get("LogGroupName")
        check(named is None or "AWS::StackId" in json.dumps(named), f"{name}'s name is new with each creation of the stack")

    # Scheduled work: names per stack, failures kept.
    for name, schedule in of_type("AWS::Scheduler::Schedule").items():
        schedule_name = schedule["Properties"].get("Name")
        check(not isinstance(schedule_name, str), f"{name}: the schedule's name includes the stack's")
        check("DeadLetterConfig" in schedule["Properties"].get("Target", {}), f"{name}: undeliverable runs are kept")
    invoke_configs = of_type("AWS::Lambda::EventInvokeConfig")
    on_failure = {ref_name(c["Properties"]["FunctionName"]) for c in invoke_configs.values() if c["Properties"].get("DestinationConfig", {}).get("OnFailure")}
    check("JobsFunction" in on_failure, "failed jobs runs go to an on-failure destination")

    # Alarms: to one topic, on the API, every function, the tables and the account.
    alarms = of_type("AWS::CloudWatch::Alarm")
    topics = of_type("AWS::SNS::Topic")
    alarm_topics = {ref_name(a) for alarm in alarms.values() for a in alarm["Properties"].get("AlarmActions", [])}
    check(len(alarm_topics) == 1 and alarm_topics <= set(topics), "one alarm topic")
    check(
        all(any(ref_name(a) in topics for a in alarm["Properties"].get("AlarmActions", [])) for alarm in alarms.values()),
        "every alarm notifies the topic",
    )

    def watched(namespace, metric, dimension_value=None):
        for alarm in alarms.values():
            props = alarm["Properties"]
            if props.get("Namespace") != namespace or props.get("MetricName") != metric:
                continue
            values = [ref_name(d["Value"]) or d["Value"] for d in props.get("Dimensions", [])]
            if dimension_value is None or dimension_value in values:
                return True
        return False

    # Detailed metrics (billed per route) only on the routes whose alarms read them.
    stages = of_type("AWS::ApiGateway::Stage")
    settings = [m for stage in stages.values() for m in stage["Properties"].get("MethodSettings", [])]
    detailed = sorted(m["ResourcePath"] for m in settings if m.get("MetricsEnabled"))
    alarmed = sorted(
        "/" + next(d["Value"] for d in a["Properties"]["Dimensions"] if d["Name"] == "Resource").replace("/", "~1")
        for a in alarms.values()
        if a["Properties"].get("Namespace") == "AWS/ApiGateway"
        and any(d["Name"] == "Resource" for d in a["Properties"].get("Dimensions", []))
    )
    check(detailed == alarmed and alarmed, f"detailed metrics only where an alarm reads them: {detailed}")
    check(
        all(m.get("ThrottlingRateLimit") and m.get("ThrottlingBurstLimit") for m in settings),
        "every route's settings keep the throttling",
    )
    check(watched("AWS/ApiGateway", "5XXError"), "an alarm on the API's 5xx rate")
    check(watched("AWS/ApiGateway", "Latency"), "an alarm on the API's latency")
    for name in functions:
        if name.startswith(("Api", "Custom")):
            continue
        check(watched("AWS/Lambda", "Errors", name), f"an alarm on {name}'s errors")
        check(watched("AWS/Lambda", "Throttles", name), f"an alarm on {name}'s throttles")
    check(watched("AWS/Lambda", "Duration", "InferenceFunction"), "an alarm on inference calls near the timeout")
    check(watched("AWS/SQS", "ApproximateNumberOfMessagesVisible"), "an alarm on failed jobs runs")
    for table in of_type("AWS::DynamoDB::Table"):
        check(
            watched("AWS/DynamoDB", "ReadThrottleEvents", table) and watched("AWS/DynamoDB", "WriteThrottleEvents", table),
            f"alarms on {table}'s throttling",
        )
    check(watched("AWS/Lambda", "ConcurrentExecutions"), "an alarm on the account's concurrency")

    # Money-path alerts (shared/src/alerts.rs): each counted by a metric filter on the JSON logs and alarmed.
    filters = of_type("AWS::Logs::MetricFilter")
    for alert in ALERTS:
        counting = [
            f for f in filters.values()
            if f["Properties"].get("FilterPattern", "").replace(" ", "") == f'{{$.fields.alert="{alert}"}}'
        ]
        check(counting, f"the alert {alert} is counted by a metric filter on the functions' logs")
        for f in counting:
            group = ref_name(f["Properties"].get("LogGroupName"))
            check(group in groups, f"{alert}: its metric filter reads a log group of this template ({group})")
        metrics = {
            (t.get("MetricNamespace", {}).get("Fn::Sub") if isinstance(t.get("MetricNamespace"), dict) else t.get("MetricNamespace"), t.get("MetricName"))
            for f in counting for t in f["Properties"].get("MetricTransformations", [])
        }
        alarmed = [
            a for a in alarms.values()
            if (a["Properties"].get("Namespace", {}).get("Fn::Sub") if isinstance(a["Properties"].get("Namespace"), dict) else a["Properties"].get("Namespace"), a["Properties"].get("MetricName")) in metrics
            and a["Properties"].get("Threshold") in (0, "0") and a["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
        ]
        check(len(metrics) == 1 and alarmed, f"the alert {alert} raises an alarm at its first occurrence")
    check(
        source.get("Parameters", {}).get("AlarmEmail") is not None,
        "the alarm address is a parameter (make deploy refuses to run without one: scripts/alarm-address.py)",
    )

    # Buckets: private, encrypted, owned by the account, reachable over TLS only.
    policies = of_type("AWS::S3::BucketPolicy")
    for name, bucket in of_type("AWS::S3::Bucket").items():
        props = bucket["Properties"]
        block = props.get("PublicAccessBlockConfiguration", {})
        check(
            all(block.get(k) is True for k in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"]),
            f"{name} blocks all public access",
        )
        check(bool(props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration")), f"{name} is encrypted")
        check(
            [r.get("ObjectOwnership") for r in props.get("OwnershipControls", {}).get("Rules", [])] == ["BucketOwnerEnforced"],
            f"{name} has ACLs disabled (bucket owner enforced)",
        )
        statements = [
            st
            for p in policies.values()
            if ref_name(p["Properties"].get("Bucket")) == name
            for st in as_list(p["Properties"]["PolicyDocument"].get("Statement", []))
        ]
        tls_only = any(
            st.get("Effect") == "Deny"
            and st.get("Principal") == "*"
            and "s3:*" in as_list(st.get("Action"))
            and str(st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
            and any(ref_name(r) == name for r in as_list(st.get("Resource")))
            and any(refers_to(r, name) and "/*" in json.dumps(r) for r in as_list(st.get("Resource")))
            for st in statements
        )
        check(tls_only, f"{name} refuses requests without TLS (bucket and objects)")

    # Dashboard: one distribution serving the private bucket (read through an origin access control, by
    # this distribution only) and the API on the same origin.
    distributions = of_type("AWS::CloudFront::Distribution")
    check(len(distributions) == 1, "one CloudFront distribution (the dashboard)")
    distribution_id, distribution = next(iter(distributions.items()), (None, {"Properties": {}}))
    config = distribution["Properties"].get("DistributionConfig", {})
    origins = {o.get("Id"): o for o in config.get("Origins", [])}
    s3_origins = {i: o for i, o in origins.items() if "S3OriginConfig" in o}
    api_origins = {
        i: o
        for i, o in origins.items()
        if refers_to(o.get("DomainName"), api_id) and "execute-api" in json.dumps(o.get("DomainName"))
    }
    check(len(s3_origins) == 1, "the distribution has one S3 origin (the dashboard's files)")
    check(len(api_origins) == 1, f"the distribution has one origin for the REST API ({api_id})")
    s3_origin_id, s3_origin = next(iter(s3_origins.items()), (None, {}))
    api_origin_id, api_origin = next(iter(api_origins.items()), (None, {}))
    dashboard_bucket = ref_name(s3_origin.get("DomainName"))
    check(
        resources.get(dashboard_bucket, {}).get("Type") == "AWS::S3::Bucket"
        and "RegionalDomainName" in json.dumps(s3_origin.get("DomainName")),
        f"the S3 origin is a bucket of this stack, by its regional name ({dashboard_bucket})",
    )
    oac = resources.get(ref_name(s3_origin.get("OriginAccessControlId")), {})
    oac_config = oac.get("Properties", {}).get("OriginAccessControlConfig", {})
    check(
        oac.get("Type") == "AWS::CloudFront::OriginAccessControl"
        and oac_config.get("OriginAccessControlOriginType") == "s3"
        and oac_config.get("SigningBehavior") == "always"
        and oac_config.get("SigningProtocol") == "sigv4"
        and not s3_origin.get("S3OriginConfig", {}).get("OriginAccessIdentity"),
        "the S3 origin is read through an origin access control that signs every request (no legacy identity)",
    )
    bucket_allows = [
        st
        for p in policies.values()
        if ref_name(p["Properties"].get("Bucket")) == dashboard_bucket
        for st in as_list(p["Properties"]["PolicyDocument"].get("Statement", []))
        if st.get("Effect") == "Allow"
    ]
    scoped = bool(bucket_allows) and all(
        st.get("Principal") == {"Service": "cloudfront.amazonaws.com"}
        and as_list(st.get("Action")) == ["s3:GetObject"]
        and all(refers_to(r, dashboard_bucket) and json.dumps(r).endswith('/*"}') for r in as_list(st.get("Resource")))
        and refers_to(
            {k.lower(): v for k, v in st.get("Condition", {}).get("StringEquals", {}).items()}.get("aws:sourcearn", {}),
            distribution_id,
        )
        for st in bucket_allows
    )
    check(scoped, f"the dashboard bucket's policy allows only s3:GetObject, only to {distribution_id} (aws:SourceArn)")

    stage_name = stage.get("StageName")
    stage_path = f"/${{{ref_name(stage_name)}}}" if ref_name(stage_name) else f"/{stage_name}"
    origin_path = api_origin.get("OriginPath")
    check(
        (origin_path.get("Fn::Sub") if isinstance(origin_path, dict) else origin_path) == stage_path,
        f"the API origin's path is the stage ({stage_path})",
    )
    custom = api_origin.get("CustomOriginConfig", {})
    check(
        custom.get("OriginProtocolPolicy") == "https-only" and set(custom.get("OriginSSLProtocols", [])) == {"TLSv1.2"},
        "CloudFront reaches the API over HTTPS (TLS 1.2) only",
    )

    default = config.get("DefaultCacheBehavior", {})
    check(
        default.get("TargetOriginId") == s3_origin_id
        and set(default.get("AllowedMethods", [])) == {"GET", "HEAD"}
        and default.get("CachePolicyId") == CACHING_OPTIMIZED,
        "the default behaviour serves the bucket: GET and HEAD only, cached (CachingOptimized)",
    )
    check(config.get("DefaultRootObject") == "index.html", "/ is index.html")
    behaviours = config.get("CacheBehaviors", [])
    check(
        all(b.get("ViewerProtocolPolicy") in {"redirect-to-https", "https-only"} for b in [default, *behaviours]),
        "every behaviour redirects viewers to HTTPS",
    )
    check(
        config.get("HttpVersion") == "http2and3" and config.get("PriceClass") in {"PriceClass_200", "PriceClass_All"},
        "HTTP/2 and HTTP/3, a price class with India's edge locations",
    )
    api_behaviours = [b for b in behaviours if b.get("TargetOriginId") == api_origin_id]
    check(bool(api_behaviours), "the distribution routes paths to the API")
    for b in api_behaviours:
        pattern = b.get("PathPattern")
        check(
            b.get("OriginRequestPolicyId") == ALL_VIEWER_EXCEPT_HOST_HEADER and "ForwardedValues" not in b,
            f"{pattern}: cookies, query strings and headers (Authorization, X-CSRF-Token) reach the API, Host does not",
        )
        check(b.get("CachePolicyId") == CACHING_DISABLED, f"{pattern}: API answers are never cached")
        check(set(b.get("AllowedMethods", [])) == ALL_METHODS, f"{pattern}: every method reaches the API")
    # CloudFront takes the first behaviour whose pattern matches; nothing routed falls to the bucket.
    for path in sorted(paths):
        first = next((b for b in behaviours if path_matches(b.get("PathPattern", ""), path)), default)
        check(
            first.get("TargetOriginId") == api_origin_id,
            f"{path} reaches the API through the distribution ({first.get('PathPattern', 'default behaviour')})",
        )

    headers_policy = resources.get(ref_name(default.get("ResponseHeadersPolicyId")), {})
    security = headers_policy.get("Properties", {}).get("ResponseHeadersPolicyConfig", {}).get("SecurityHeadersConfig", {})
    csp = security.get("ContentSecurityPolicy", {})
    check(
        csp.get("ContentSecurityPolicy") == DASHBOARD_CSP and csp.get("Override") is True,
        "the dashboard is served with exactly the Content-Security-Policy make run serves (dashboard/content-security-policy.txt)",
    )
    hsts = security.get("StrictTransportSecurity", {})
    check(
        int(hsts.get("AccessControlMaxAgeSec", 0)) >= 63072000 and hsts.get("IncludeSubdomains") is True and hsts.get("Preload") is True,
        "the dashboard sends HSTS (2 years, subdomains, preload)",
    )
    check(
        "ContentTypeOptions" in security
        and security.get("FrameOptions", {}).get("FrameOption") == "DENY"
        and security.get("ReferrerPolicy", {}).get("ReferrerPolicy") == "strict-origin-when-cross-origin",
        "the dashboard sends nosniff, frame-options DENY and a strict-origin-when-cross-origin referrer policy",
    )
    ops = next((b for b in behaviours if b.get("PathPattern") == "/ops*"), {})
    ops_policy = resources.get(ref_name(ops.get("ResponseHeadersPolicyId")), {})
    ops_security = ops_policy.get("Properties", {}).get("ResponseHeadersPolicyConfig", {}).get("SecurityHeadersConfig", {})
    check(
        ops.get("TargetOriginId") == s3_origin_id
        and set(ops.get("AllowedMethods", [])) == {"GET", "HEAD"}
        and ops_security.get("ContentSecurityPolicy", {}).get("ContentSecurityPolicy") == OPS_CSP
        and ops_security.get("FrameOptions", {}).get("FrameOption") == "DENY"
        and "StrictTransportSecurity" in ops_security,
        "/ops and /ops.html (the operator console) come from the bucket with dashboard/ops-content-security-policy.txt, HSTS and DENY",
    )
    kept_errors = {e.get("ErrorCode"): e.get("ErrorCachingMinTTL") for e in config.get("CustomErrorResponses", [])}
    check(
        all(kept_errors.get(code) == 0 for code in ERROR_CODES)
        and not any("ResponsePagePath" in e for e in config.get("CustomErrorResponses", [])),
        f"CloudFront caches no error answer ({sorted(ERROR_CODES)}) and passes the API's own error body on",
    )
    edge_headers = {h.get("HeaderName"): h.get("HeaderValue") for h in api_origin.get("OriginCustomHeaders", [])}
    edge_value = edge_headers.get("X-Inferex-Edge")
    edge_sub = edge_value.get("Fn::Sub", "") if isinstance(edge_value, dict) else ""
    check(
        edge_sub == "{{resolve:secretsmanager:${EdgeOriginSecret}:SecretString}}"
        and resources.get("EdgeOriginSecret", {}).get("Type") == "AWS::SecretsManager::Secret",
        "CloudFront sends the API X-Inferex-Edge from the EdgeOriginSecret secret (the proof it came through us)",
    )
    viewer_function = resources.get("ViewerAddressFunction", {}).get("Properties", {})
    code = viewer_function.get("FunctionCode", "")
    check(
        "request.headers['x-inferex-viewer-ip'] = { value: event.viewer.ip }" in code
        and viewer_function.get("AutoPublish") is True,
        "ViewerAddressFunction writes the browser's address (event.viewer.ip) over any X-Inferex-Viewer-Ip the browser sent",
    )
    for b in api_behaviours:
        associations = b.get("FunctionAssociations", [])
        check(
            any(
                a.get("EventType") == "viewer-request" and ref_name(a.get("FunctionARN")) == "ViewerAddressFunction"
                for a in associations
            ),
            f"{b.get('PathPattern')}: ViewerAddressFunction runs on every viewer request bound for the API",
        )
    for name in CLIENT_ADDRESS_FUNCTIONS:
        variables = functions.get(name, {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
        check(
            ref_name(variables.get("INFEREX_EDGE_SECRET_ARN")) == "EdgeOriginSecret",
            f"{name} reads EdgeOriginSecret, so it believes CloudFront's viewer address only behind CloudFront",
        )
    public_url = mailer_env.get("INFEREX_PUBLIC_URL")
    fallback = public_url.get("Fn::If", [None, None, None])[2] if isinstance(public_url, dict) else None
    check(refers_to(fallback, distribution_id), "e-mailed links point at the dashboard's distribution unless PublicUrl says otherwise")
    outputs = out.get("Outputs", {})
    check(all(name in outputs for name in DASHBOARD_OUTPUTS), f"outputs {', '.join(DASHBOARD_OUTPUTS)} (the dashboard's upload reads them)")
    check(
        refers_to(outputs.get("DashboardUrl", {}).get("Value"), distribution_id)
        and ref_name(outputs.get("DashboardBucketName", {}).get("Value")) == dashboard_bucket,
        "DashboardUrl is the distribution's address and DashboardBucketName its bucket",
    )

    # CloudFront's wait for the API's first byte: a parameter, 60 s until the quota is raised, 180 at most.
    timeouts = [
        origin["CustomOriginConfig"].get("OriginReadTimeout")
        for distribution in of_type("AWS::CloudFront::Distribution").values()
        for origin in distribution["Properties"]["DistributionConfig"].get("Origins", [])
        if "CustomOriginConfig" in origin
    ]
    read_timeout = source.get("Parameters", {}).get("ApiOriginReadTimeout", {})
    check(
        timeouts == [{"Ref": "ApiOriginReadTimeout"}] and read_timeout.get("Default") == 60 and read_timeout.get("MaxValue") == 180,
        "the API origin's read timeout is a parameter (60 s by default, up to 180 once the quota allows)",
    )

    # Data in India: the region rule, a year of logs and audit trail, backups and keys in Hyderabad too.
    template_india.check_india(source, resources, check)
    # Operators: their routes in one function, the vault key's users, key changes alarmed, GuardDuty.
    template_operators.check_operators(source, resources, check)

    print(f"template: {len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
