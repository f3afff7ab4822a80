"""The checks of template.yaml (as SAM generates it) that narrow what an operator, or an administrator of the
AWS account, can reach: every operator route goes to the admin function alone, whose role alone reads the
operators' credentials; the KYC vault key is usable only by the roles that need it (the privacy function's
not among them) and grants nobody CreateGrant, here and in the DR replicas; key policy and grant changes
reach the alarm topic; the trail covers every region; an optional allow-list of operators' networks reaches
the admin function; GuardDuty is on unless a parameter says the account already has it. Called by check-template.py with its `check`."""

import json
from pathlib import Path

from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent

VAULT_KEY_USERS = {"KycFunctionRole", "JobsFunctionRole", "ExportsFunctionRole", "AdminFunctionRole"}
KEY_CHANGES = {"PutKeyPolicy", "CreateGrant", "DisableKey", "ScheduleKeyDeletion"}


def text(value):
    return json.dumps(value, sort_keys=True)


def operator_routes_go_to_admin(resources, check):
    apis = [r for r in resources.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    paths = apis[0]["Properties"]["Body"]["paths"] if apis else {}
    targets = {}
    for path, methods in paths.items():
        for method, operation in methods.items():
            uri = text(operation.get("x-amazon-apigateway-integration", {}).get("uri", ""))
            if path.startswith("/v1/admin"):
                targets[f"{method.upper()} {path}"] = "AdminFunction.Arn" in uri
    check(len(targets) >= 18, f"the operator routes are in the API ({len(targets)})")
    stray = sorted(route for route, to_admin in targets.items() if not to_admin)
    check(not stray, f"every operator route goes to the admin function alone {stray}")


def secret_readers(resources, secret):
    readers = set()
    for name, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Role":
            policies = resource["Properties"].get("Policies", [])
        elif resource["Type"] == "AWS::IAM::Policy":
            policies = [resource["Properties"]]
        else:
            continue
        if f'"Ref": "{secret}"' in text(policies):
            readers.add(name if resource["Type"] == "AWS::IAM::Role" else text(resource["Properties"].get("Roles")))
    return readers


def vault_key(resources, check):
    statements = resources.get("VaultKey", {}).get("Properties", {}).get("KeyPolicy", {}).get("Statement", [])
    users = set()
    for statement in statements:
        principal = text(statement.get("Principal"))
        actions = statement.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        if any(a in ("kms:Decrypt", "kms:GenerateDataKey") for a in actions):
            users |= {role for role in VAULT_KEY_USERS | {"PrivacyFunctionRole"} if f'"{role}"' in principal}
    check(users == VAULT_KEY_USERS, f"only the kyc, jobs, exports and admin roles may use the vault key {sorted(users)}")
    for key in ("VaultKey", "FingerprintKey"):
        policy = text(resources.get(key, {}).get("Properties", {}).get("KeyPolicy", {}))
        check(
            "kms:CreateGrant" not in policy and "kms:Create*" not in policy and '"kms:*"' not in policy,
            f"{key}'s policy lets nobody create a grant (an administrator cannot grant themselves decryption)",
        )


def key_change_alarm(resources, check):
    rules = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    alarmed = [
        r for r in rules
        if KEY_CHANGES <= set(r["Properties"].get("EventPattern", {}).get("detail", {}).get("eventName", []))
        and '"AlarmTopic"' in text(r["Properties"].get("Targets"))
    ]
    check(len(alarmed) == 1, "key policy changes, grants, disabling and deletion reach the alarm topic")


def dr_replicas(check):
    """The replicas in ap-south-2 share the keys' material: the same no-grant policy, and their changes alarmed."""
    dr = yaml_parse((ROOT / "dr" / "template.yaml").read_text())
    resources = dr.get("Resources", {})
    for name in ("VaultKeyReplica", "FingerprintKeyReplica"):
        policy = text(resources.get(name, {}).get("Properties", {}).get("KeyPolicy", {}))
        check(
            bool(policy) and "kms:CreateGrant" not in policy and "kms:Create*" not in policy,
            f"dr/template.yaml: {name}'s policy lets nobody create a grant",
        )
    rules = [r for r in resources.values() if r.get("Type") == "AWS::Events::Rule"]
    check(
        any(KEY_CHANGES <= set(r["Properties"].get("EventPattern", {}).get("detail", {}).get("eventName", [])) for r in rules),
        "dr/template.yaml: key policy changes and grants in ap-south-2 reach an alarm topic",
    )


def multi_region_trail(resources, check):
    trails = [r for r in resources.values() if r["Type"] == "AWS::CloudTrail::Trail"]
    check(
        any(t["Properties"].get("IsMultiRegionTrail") is True for t in trails),
        "the trail records every region (the key replicas' region among them)",
    )


def network_allow_list(source, resources, check):
    env = resources.get("AdminFunction", {}).get("Properties", {}).get("Environment", {}).get("Variables", {})
    default = source.get("Parameters", {}).get("OperatorAllowedNetworks", {}).get("Default")
    check(
        env.get("INFEREX_OPERATOR_NETWORKS") == {"Ref": "OperatorAllowedNetworks"} and default == "",
        "an optional allow-list of operators' networks (OperatorAllowedNetworks) reaches the admin function",
    )


def guardduty(source, resources, check):
    detectors = [r for r in resources.values() if r["Type"] == "AWS::GuardDuty::Detector"]
    default = source.get("Parameters", {}).get("EnableGuardDuty", {}).get("Default")
    check(len(detectors) == 1 and default == "true", "GuardDuty is enabled unless EnableGuardDuty is \"false\"")


def check_operators(source, resources, check):
    operator_routes_go_to_admin(resources, check)
    readers = secret_readers(resources, "AdminTokenSecret")
    check(readers == {"AdminFunctionRole"}, f"only the admin function reads the operators' credentials {sorted(readers)}")
    vault_key(resources, check)
    key_change_alarm(resources, check)
    dr_replicas(check)
    multi_region_trail(resources, check)
    network_allow_list(source, resources, check)
    guardduty(source, resources, check)
