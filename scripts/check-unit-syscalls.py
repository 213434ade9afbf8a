#!/usr/bin/env python3
"""Checks that a systemd unit's system-call filter lets the daemon make the calls it
needs: every `SystemCallFilter=` line of the unit applied as systemd applies them (the
first line, without `~`, is the allow list; later lines add to it, or remove from it
with `~`), groups expanded by `systemd-analyze syscall-filter`.

    scripts/check-unit-syscalls.py deploy/orderbridge.service prctl setpriority

A call the filter refuses fails with EPERM under the unit (`SystemCallErrorNumber`):
the daemon goes on, but without what the call was for, so only this check sees it.
"""
import functools
import subprocess
import sys


@functools.cache
def expand(name):
    """The system calls a name stands for: itself, or a group's, nested groups too."""
    if not name.startswith("@"):
        return frozenset([name])
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True, capture_output=True, text=True)
    calls = set()
    for line in out.stdout.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            calls |= expand(line)
    return frozenset(calls)


def allowed(unit):
    allow = None
    with open(unit, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            key, _, value = line.strip().partition("=")
            if key != "SystemCallFilter":
                continue
            deny = value.startswith("~")
            names = set()
            for word in value.lstrip("~").split():
                names |= expand(word)
            if allow is None:
                if deny:
                    sys.exit(f"{unit}:{n}: a deny list first: this check reads allow lists only")
                allow = names
            elif deny:
                allow -= names
            else:
                allow |= names
    if allow is None:
        sys.exit(f"{unit}: no SystemCallFilter= line")
    return allow


def main():
    unit, needed = sys.argv[1], sys.argv[2:]
    refused = [c for c in needed if c not in allowed(unit)]
    if refused:
        sys.exit(f"{unit}: its SystemCallFilter= refuses {', '.join(refused)}, which the daemon calls")
    print(f"{unit}: {', '.join(needed)} allowed")


if __name__ == "__main__":
    main()
