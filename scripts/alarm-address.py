#!/usr/bin/env python3
"""Before `sam deploy`: the alarms must reach a person. Takes the address from `ALARM_EMAIL`, else from
`AlarmEmail=` in `sam deploy`'s extra arguments (DEPLOY_ARGS), else from samconfig.toml, where it keeps it
for the next `make deploy` (`parameter_overrides` of `[default.deploy.parameters]`, the other overrides
left as they are). Refuses to go on without one. Prints the arguments for `sam deploy`: DEPLOY_ARGS with
`AlarmEmail=` added to their `--parameter-overrides` (sam takes those instead of samconfig.toml's).

    scripts/alarm-address.py samconfig.toml [sam deploy arguments ...]
"""

import os
import re
import sys
from pathlib import Path

ADDRESS = re.compile(r"^[^@\s\"'=]+@[^@\s\"'=]+\.[A-Za-z]{2,}$")
SECTION = "[default.deploy.parameters]"


def overrides_of(config):
    """The `parameter_overrides` string of the deploy section, or ''."""
    section = config.split(SECTION, 1)[1] if SECTION in config else ""
    section = section.split("\n[", 1)[0]
    found = re.search(r'^parameter_overrides = "(.*)"$', section, re.M)
    return found.group(1) if found else ""


def with_alarm_email(overrides, address):
    kept = [part for part in overrides.split() if not part.startswith("AlarmEmail=")]
    return " ".join(kept + [f"AlarmEmail={address}"])


def save(config, overrides):
    line = f'parameter_overrides = "{overrides}"'
    if SECTION not in config:
        return config.rstrip("\n") + f"\n\n{SECTION}\n{line}\n"
    head, rest = config.split(SECTION, 1)
    section, tail = (rest.split("\n[", 1) + [None])[:2]
    if re.search(r"^parameter_overrides = ", section, re.M):
        section = re.sub(r"^parameter_overrides = .*$", line, section, flags=re.M)
    else:
        section = section.rstrip("\n") + f"\n{line}\n"
    return head + SECTION + section + ("\n[" + tail if tail is not None else "")


def main():
    path = Path(sys.argv[1])
    arguments = " ".join(sys.argv[2:])
    config = path.read_text()
    given = os.environ.get("ALARM_EMAIL", "").strip()
    if not given and (m := re.search(r"\bAlarmEmail=(\S+)", arguments)):
        given = m.group(1).strip("\"'")
    if not given and (m := re.search(r"\bAlarmEmail=(\S+)", overrides_of(config))):
        given = m.group(1)
    if not given:
        sys.exit(
            "make deploy needs an address for the alarms (money-path failures page someone): "
            "ALARM_EMAIL=ops@example.in make deploy (kept in samconfig.toml for the next deploy)"
        )
    if not ADDRESS.match(given):
        sys.exit(f"ALARM_EMAIL is not an e-mail address: {given!r}")
    updated = save(config, with_alarm_email(overrides_of(config), given))
    if updated != config:
        path.write_text(updated)
    print(f"alarms go to {given} (kept in {path.name})", file=sys.stderr)
    print(" ".join(deploy_arguments(sys.argv[2:], given)))


def deploy_arguments(arguments, address):
    """`sam deploy`'s extra arguments, with the address among their parameter overrides, if they have any."""
    out, overriding = [], False
    for argument in arguments:
        if argument.startswith("--"):
            if overriding:
                out.append(f"AlarmEmail={address}")
            overriding = argument == "--parameter-overrides"
        if not argument.startswith("AlarmEmail="):
            out.append(argument)
    if overriding:
        out.append(f"AlarmEmail={address}")
    return out


if __name__ == "__main__":
    main()
