#!/usr/bin/env python3
"""Before `sam deploy`: the alarms must reach a person. Takes the address from `ALARM_EMAIL`, else from
`AlarmEmail=` in `sam deploy`'s extra arguments (DEPLOY_ARGS), else from samconfig.toml, where it keeps it
for the next `make deploy` (`parameter_overrides` of `[default.deploy.parameters]`, the other overrides
left as they are). Refuses to go on without one.

    scripts/alarm-address.py samconfig.toml [sam deploy arguments ...]
        checks and keeps the address; prints the arguments for `sam deploy` (DEPLOY_ARGS with `AlarmEmail=`
        added to their own `--parameter-overrides`, which sam takes instead of samconfig.toml's)
    scripts/alarm-address.py samconfig.toml --deploy [sam deploy arguments ...]
        the same, then runs `sam deploy` with those arguments (each argument kept whole, quotes and all)
"""

import os
import re
import sys
import tomllib
from pathlib import Path

ADDRESS = re.compile(r"^[^@\s\"'=\\]+@[^@\s\"'=\\]+\.[A-Za-z]{2,}$")
SECTION = "[default.deploy.parameters]"
OVERRIDES_LINE = re.compile(r"^parameter_overrides\s*=.*$", re.M)


def overrides_of(config):
    """The `parameter_overrides` of the deploy section, as one string of Name=Value words."""
    value = tomllib.loads(config).get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value)


def address_in(words):
    for word in words.split():
        if word.startswith("AlarmEmail="):
            return word.split("=", 1)[1].strip("\"'\\")
    return ""


def with_alarm_email(overrides, address):
    kept = [part for part in overrides.split() if not part.startswith("AlarmEmail=")]
    return " ".join(kept + [f"AlarmEmail={address}"])


def save(config, overrides):
    line = 'parameter_overrides = "' + overrides.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if SECTION not in config:
        return config.rstrip("\n") + f"\n\n{SECTION}\n{line}\n"
    head, rest = config.split(SECTION, 1)
    section, tail = (rest.split("\n[", 1) + [None])[:2]
    if OVERRIDES_LINE.search(section):
        section = OVERRIDES_LINE.sub(lambda _: line, section, count=1)
    else:
        section = section.rstrip("\n") + f"\n{line}\n"
    return head + SECTION + section + ("\n[" + tail if tail is not None else "")


def deploy_arguments(arguments, address):
    """`sam deploy`'s extra arguments, with the address among their parameter overrides, if they have any."""
    out, overriding = [], False
    for argument in arguments:
        if argument.startswith("--"):
            if overriding:
                out.append(f"AlarmEmail={address}")
            flag, _, value = argument.partition("=")
            overriding = flag == "--parameter-overrides"
            if overriding and value:
                out.append(flag)
                if not value.startswith("AlarmEmail="):
                    out.append(value)
                continue
        if not argument.startswith("AlarmEmail="):
            out.append(argument)
    if overriding:
        out.append(f"AlarmEmail={address}")
    return out


def main():
    path = Path(sys.argv[1])
    run = len(sys.argv) > 2 and sys.argv[2] == "--deploy"
    arguments = sys.argv[3:] if run else sys.argv[2:]
    config = path.read_text()
    try:
        kept = overrides_of(config)
    except tomllib.TOMLDecodeError as error:
        sys.exit(f"{path.name} is not valid TOML: {error}")
    given = os.environ.get("ALARM_EMAIL", "").strip() or address_in(" ".join(arguments)) or address_in(kept)
    if not given:
        sys.exit(
            "make deploy needs an address for the alarms (money-path failures page someone): "
            "ALARM_EMAIL=ops@example.in make deploy (kept in samconfig.toml for the next deploy)"
        )
    if not ADDRESS.match(given):
        sys.exit(f"ALARM_EMAIL is not an e-mail address: {given!r}")
    updated = save(config, with_alarm_email(kept, given))
    if updated != config:
        tomllib.loads(updated)  # never leave the file unreadable
        path.write_text(updated)
    print(f"alarms go to {given} (kept in {path.name})", file=sys.stderr)
    deploy = deploy_arguments(arguments, given)
    if run:
        os.execvp("sam", ["sam", "deploy", *deploy])
    print(" ".join(deploy))


if __name__ == "__main__":
    main()
