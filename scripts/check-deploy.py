#!/usr/bin/env python3
"""`make deploy`'s refusals, without AWS: no deploy without an alarm address, which is kept in samconfig.toml
for the next one (with the other parameter overrides), and added to DEPLOY_ARGS' own overrides. Runs the
real script on copies of samconfig.toml, and `make -n deploy` to see the order of the steps."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "alarm-address.py"
results = []


def check(ok, what):
    results.append(bool(ok))
    print(f"deploy: {'ok  ' if ok else 'FAIL'} {what}")


def run(config, *arguments, email=None):
    env = {k: v for k, v in os.environ.items() if k != "ALARM_EMAIL"}
    if email is not None:
        env["ALARM_EMAIL"] = email
    return subprocess.run([sys.executable, str(SCRIPT), str(config), *arguments], env=env, capture_output=True, text=True)


with tempfile.TemporaryDirectory() as folder:
    config = Path(folder) / "samconfig.toml"
    shutil.copy(ROOT / "samconfig.toml", config)
    original = config.read_text()
    refused = run(config)
    check(refused.returncode != 0 and "ALARM_EMAIL" in refused.stderr, "no address: refused, saying how to give one")
    check(config.read_text() == original, "a refusal changes nothing")
    bad = run(config, email="not-an-address")
    check(bad.returncode != 0 and "not an e-mail address" in bad.stderr, "an address that is not one is refused")
    given = run(config, email="alarms@inferexai.in")
    check(given.returncode == 0 and 'parameter_overrides = "AlarmEmail=alarms@inferexai.in"' in config.read_text(),
          "the address given is kept in samconfig.toml")
    again = run(config)
    check(again.returncode == 0 and again.stdout.strip() == "", "the next deploy takes it from samconfig.toml")
    with_args = run(config, "--parameter-overrides", "InferenceReservedConcurrency=0", "--no-fail-on-empty-changeset")
    check(with_args.stdout.split() == ["--parameter-overrides", "InferenceReservedConcurrency=0",
                                       "AlarmEmail=alarms@inferexai.in", "--no-fail-on-empty-changeset"],
          f"DEPLOY_ARGS' own overrides carry the address too ({with_args.stdout.strip()})")
    changed = run(config, "--parameter-overrides", "AlarmEmail=oncall@inferexai.in")
    check(changed.returncode == 0 and "AlarmEmail=oncall@inferexai.in" in config.read_text()
          and "alarms@inferexai.in" not in config.read_text(), "a new address replaces the kept one")
    others = original.replace("[default.deploy.parameters]",
                              '[default.deploy.parameters]\nparameter_overrides="StageName=v1 AlarmEmail=\\"old@inferexai.in\\""')
    config.write_text(others)
    kept = run(config)
    check(kept.returncode == 0 and "old@inferexai.in" in kept.stderr, "an address kept in SAM's own quoting is read")
    run(config, email="alarms@inferexai.in")
    check('parameter_overrides = "StageName=v1 AlarmEmail=alarms@inferexai.in"' in config.read_text()
          and config.read_text().count("parameter_overrides") == 1, "other kept overrides stay, on one line")
    equals = run(config, "--parameter-overrides=InferenceReservedConcurrency=0")
    check(equals.stdout.split() == ["--parameter-overrides", "InferenceReservedConcurrency=0",
                                    "AlarmEmail=alarms@inferexai.in"], f"the --opt=value form too ({equals.stdout.strip()})")
    backslash = run(config, email="a\\q@inferexai.in")
    check(backslash.returncode != 0, "an address that would break the file is refused")

steps = subprocess.run(["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
first = next((i for i, s in enumerate(steps) if "alarm-address.py" in s), None)
build = next((i for i, s in enumerate(steps) if s.strip().startswith("sam build")), None)
check(first is not None and build is not None and first < build, "make deploy asks for the address before anything else")

print(f"deploy: {sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
