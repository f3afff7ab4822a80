"""The checks of template.yaml (as SAM generates it) and dr/template.yaml that keep data in India: the stack
refuses a region other than ap-south-1, the audit trail and the logs are kept a year in India, the KYC keys
are multi-Region with replicas in ap-south-2, and the backups of the tables and the payment archive are
copied to a vault there. Called by check-template.py with its `check`."""

import json
from pathlib import Path

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
# The DPDP Rules keep logs of processing a year (rule 8(3)).
MIN_LOG_DAYS = 365
KYC_KEYS = ["VaultKey", "FingerprintKey"]
BACKED_UP = ["MainTable", "VaultTable", "BlobBucket"]


def text(value):
    return json.dumps(value, sort_keys=True)


def check_region_rule(source, check):
    rules = source.get("Rules", {})
    rule = rules.get("StaysInIndia", {})
    asserted = text(rule.get("Assertions", []))
    check('"AWS::Region"' in asserted and '"ap-south-1"' in asserted, "a rule refuses any region but ap-south-1")
    condition = text(rule.get("RuleCondition"))
    allow = source.get("Parameters", {}).get("AllowOutsideIndia", {})
    check(
        "AllowOutsideIndia" in condition and allow.get("Default") == "false",
        "only AllowOutsideIndia (default false) lifts the region rule",
    )


def check_logs(source, check):
    days = source.get("Parameters", {}).get("LogRetentionDays", {})
    allowed = [int(d) for d in days.get("AllowedValues", [])]
    check(int(days.get("Default", 0)) >= MIN_LOG_DAYS and min(allowed or [0]) >= MIN_LOG_DAYS, f"logs are kept {MIN_LOG_DAYS} days at least")


def check_trail(resources, source, check):
    trails = {k: v for k, v in resources.items() if v["Type"] == "AWS::CloudTrail::Trail"}
    check(len(trails) == 1, "one CloudTrail trail")
    if not trails:
        return
    props = next(iter(trails.values()))["Properties"]
    check(props.get("IsLogging") is True and props.get("EnableLogFileValidation") is True, "the trail logs, with digests")
    selectors = text(props.get("AdvancedEventSelectors", []))
    check('"Management"' in selectors, "the trail records management events (KMS calls on the KYC keys among them)")
    check('"VaultTable"' in selectors and "AWS::DynamoDB::Table" in selectors, "the trail records reads of the KYC vault")
    check('BlobBucket.Arn' in selectors and "AWS::S3::Object" in selectors, "the trail records reads of the payment archive")
    bucket_name = props.get("S3BucketName", {}).get("Ref")
    bucket = resources.get(bucket_name, {})
    rules = bucket.get("Properties", {}).get("LifecycleConfiguration", {}).get("Rules", [])
    expiry = [r.get("ExpirationInDays") for r in rules]
    retention = source.get("Parameters", {}).get("AuditLogRetentionDays", {})
    check(
        expiry == [{"Ref": "AuditLogRetentionDays"}] and int(retention.get("MinValue", 0)) >= MIN_LOG_DAYS,
        "the trail's bucket keeps it AuditLogRetentionDays (a year at least), then deletes it",
    )
    check(bucket.get("DeletionPolicy") in {"Retain", "RetainExceptOnCreate"}, "the trail's bucket outlives the stack")


def check_backups(resources, check):
    for key in KYC_KEYS:
        check(resources.get(key, {}).get("Properties", {}).get("MultiRegion") is True, f"{key} is a multi-Region key")
    plans = [v for v in resources.values() if v["Type"] == "AWS::Backup::BackupPlan"]
    copies = text([rule.get("CopyActions") for p in plans for rule in p["Properties"]["BackupPlan"]["BackupPlanRule"]])
    check(":backup:ap-south-2:" in copies and "-dr" in copies, "backups are copied to the vault in ap-south-2 (Hyderabad)")
    selections = text([v["Properties"] for v in resources.values() if v["Type"] == "AWS::Backup::BackupSelection"])
    for name in BACKED_UP:
        check(f'"{name}"' in selections, f"{name} is backed up")


def check_dr_template(check):
    dr = yaml_parse((ROOT / "dr" / "template.yaml").read_text())
    resources = dr.get("Resources", {})
    check("ap-south-2" in text(dr.get("Rules", {})), "dr/template.yaml deploys only to ap-south-2")
    replicas = {text(v["Properties"].get("PrimaryKeyArn")) for v in resources.values() if v["Type"] == "AWS::KMS::ReplicaKey"}
    check(replicas == {text({"Ref": "VaultKeyArn"}), text({"Ref": "FingerprintKeyArn"})}, "dr/template.yaml replicates both KYC keys")
    vaults = [v["Properties"].get("BackupVaultName") for v in resources.values() if v["Type"] == "AWS::Backup::BackupVault"]
    check(vaults == [{"Fn::Sub": "${PrimaryStackName}-dr"}], "dr/template.yaml makes the vault the backups are copied to")
    procedure = (ROOT / "docs" / "operations.md").read_text()
    check(
        "## Disaster recovery" in procedure and "Recovery point" in procedure and "Recovery time" in procedure,
        "docs/operations.md gives the restore procedure, its recovery point and time",
    )


def check_india(source, resources, check):
    check_region_rule(source, check)
    check_logs(source, check)
    check_trail(resources, source, check)
    check_backups(resources, check)
    check_dr_template(check)

