#!/usr/bin/env python3
"""Print the floor of every dependency range in pyproject.toml, one `name==version` a line.

`make test-floors` installs exactly what this prints into .venv-floors/ and runs the unit tests
there, so the lower bounds in pyproject.toml are tested as written and cannot drift from it.

    python3 scripts/floors.py                        # [project] dependencies
    python3 scripts/floors.py --extra quant          # ... and the quant extra
    python3 scripts/floors.py --extra quant --pinned torch torchvision pytest

--pinned NAME prints requirements.txt's exact pin for NAME instead of its floor (torch and
torchvision: the only builds this machine can install), or adds it when NAME is not a
dependency (pytest, to run the tests). Every dependency must have a `>=` lower bound: a range
without one has no floor to test, and this script fails on it.

Standard library only (Python >= 3.11, or 3.10 with tomli), so it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
# name, optional [extras], then the version specifiers (PEP 508, no URL forms); markers cut off first
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")
_FLOOR = re.compile(r"^>=\s*([0-9][A-Za-z0-9.+!-]*)$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def floor_of(requirement: str) -> tuple[str, str]:
    """("transformers", "5.2") for "transformers>=5.2" (or ">=5.2,<6", or with a marker)."""
    m = _REQ.match(requirement.split(";", 1)[0])
    if not m:
        raise ValueError(f"cannot parse the requirement {requirement!r}")
    name, _, specs = m.groups()
    floors = [f.group(1) for s in specs.split(",") if (f := _FLOOR.match(s.strip()))]
    if len(floors) != 1:
        raise ValueError(f"{requirement!r} needs exactly one '>=' lower bound (a floor to test), has {len(floors)}")
    return name, floors[0]


def requirements(pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = ()) -> list[str]:
    """The requirement strings of [project] dependencies, then of each extra named, in file order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise ValueError(f"pyproject.toml has no extra {extra!r} (it has {sorted(optional)})")
        reqs += optional[extra]
    return reqs


def pins(path: Path = ROOT / "requirements.txt") -> dict[str, tuple[str, str]]:
    """normalized name -> (name as written, version) for every `name==version` line."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("==", 1))
            out[normalize(name)] = (name, version)
    return out


def floors(extras: tuple[str, ...] = (), pinned: tuple[str, ...] = (), pyproject: Path = ROOT / "pyproject.toml",
           requirements_txt: Path = ROOT / "requirements.txt") -> list[str]:
    """`name==floor` for each dependency (and extra), a --pinned name at requirements.txt's pin."""
    pinned_versions = pins(requirements_txt) if pinned else {}
    wanted = {normalize(n) for n in pinned}
    missing = sorted(wanted - set(pinned_versions))
    if missing:
        raise ValueError(f"--pinned {missing}: not pinned with == in {requirements_txt.name}")
    lines, seen = [], set()
    for req in requirements(pyproject, extras):
        name, floor = floor_of(req)
        key = normalize(name)
        if key in seen:
            raise ValueError(f"{name} is listed twice in pyproject.toml")
        seen.add(key)
        lines.append(f"{name}=={pinned_versions[key][1] if key in wanted else floor}")
    for key in sorted(wanted - seen):  # not a dependency: the test runner, say
        name, version = pinned_versions[key]
        lines.append(f"{name}=={version}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra", action="append", default=[], metavar="NAME",
                    help="also the floors of this optional-dependencies group (repeatable)")
    ap.add_argument("--pinned", nargs="+", default=[], metavar="NAME",
                    help="print requirements.txt's pin for these instead of their floor (or add it)")
    args = ap.parse_args(argv)
    try:
        print("\n".join(floors(tuple(args.extra), tuple(args.pinned))))
    except ValueError as e:
        print(f"floors.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
