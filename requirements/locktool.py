"""The lock file's tool (README, "Dependencies: the lock and the newest releases"); the Makefile
runs it, standard library only (Python 3.11+):

  locktool.py freeze                   this interpreter's installed packages as name==version lines
                                       (all but tether itself): one Python's part of `make lock`
  locktool.py merge F... --out LOCK    the lock: freezes of several Pythons (files named X.Y.txt)
                                       merged into one constraints file; a package whose versions
                                       differ between them gets one line per Python, with a marker
  locktool.py check LOCK               fail unless every installed package is pinned by LOCK at
                                       exactly the installed version (`make test` runs it)
  locktool.py compare LOCK             list where the installed versions differ from LOCK
                                       (`make test-latest` prints it; never fails)
  locktool.py lowest LOCK --out FILE   the constraints of `make test-lowest`: each runtime dependency
                                       of tether (its dependencies, its runtime extras, the build
                                       backend) at its lower bound in pyproject.toml, everything
                                       else as LOCK pins it
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "tether"
# Extras that are not part of what a user runs: their packages come from the lock in test-lowest.
DEV_EXTRAS = {"test", "fuzz"}
LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*(?:;\s*(.+?))?\s*$")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.+?))?\s*$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def marker_applies(marker: str | None) -> bool:
    """Whether a lock line's marker holds for this interpreter: packaging's evaluation when it is
    installed (it is in every test environment), else the only form `merge` writes."""
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:
        pass
    else:
        return Marker(marker).evaluate()
    match = re.fullmatch(r"""python_version\s*==\s*["']([0-9.]+)["']""", marker.strip())
    if match is None:
        sys.exit(f"locktool: cannot evaluate the marker {marker!r} without the packaging library")
    return match.group(1) == python_version()


def same_version(a: str, b: str) -> bool:
    """Equal as PEP 440 versions (a pin `0.19` is the release 0.19.0)."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        pass
    else:
        try:
            return Version(a) == Version(b)
        except InvalidVersion:
            return a == b

    def release(version: str) -> str:
        return re.sub(r"(\.0+)+$", "", version) if re.fullmatch(r"[0-9]+(\.[0-9]+)*", version) else version

    return release(a) == release(b)


def read_lock(path: Path) -> list[tuple[str, str, str | None, str]]:
    """(normalized name, version, marker, the line) for each pin; anything else is an error."""
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LINE.match(line)
        if match is None:
            sys.exit(f"locktool: {path}:{number}: not a `name==version` pin: {raw!r}")
        pins.append((normalize(match.group(1)), match.group(2), match.group(3), line))
    return pins


def installed() -> dict[str, tuple[str, str]]:
    """normalized name -> (name as published, version) of every distribution this interpreter
    sees, the project itself left out (its editable install is not a pin)."""
    found: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or normalize(name) == PROJECT:
            continue
        found.setdefault(normalize(name), (name, dist.version))  # the first on sys.path wins
    return found


def cmd_freeze(args: argparse.Namespace) -> int:
    print(f"# python {sys.version.split()[0]}")
    for _key, (name, version) in sorted(installed().items()):
        print(f"{name}=={version}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    versions: dict[str, dict[str, str]] = {}  # normalized name -> {python X.Y: version}
    names: dict[str, str] = {}
    full: dict[str, str] = {}  # X.Y -> the full version the freeze was made on
    for file in args.freezes:
        path = Path(file)
        python = path.stem
        if not re.fullmatch(r"3\.[0-9]+", python):
            sys.exit(f"locktool: a freeze file is named after its Python (3.11.txt), not {path.name}")
        text = path.read_text()
        made_on = re.match(r"# python (\S+)", text)
        full[python] = made_on.group(1) if made_on else python
        for key, version, marker, line in read_lock(path):
            if marker:
                sys.exit(f"locktool: {path}: a freeze has no markers: {line!r}")
            versions.setdefault(key, {})[python] = version
            names.setdefault(key, line.split("==", 1)[0].strip())
    pythons = sorted(full, key=lambda v: tuple(map(int, v.split("."))))
    lines = []
    for key in sorted(versions):
        by_python = versions[key]
        if len(set(by_python.values())) == 1:
            lines.append(f"{names[key]}=={next(iter(by_python.values()))}")
        else:
            for python in pythons:
                if python in by_python:
                    lines.append(f'{names[key]}=={by_python[python]} ; python_version == "{python}"')
    header = f"""\
# The locked test environment: generated by `make lock`, do not edit by hand.
# `make test` (and test-versions, run, fuzz) installs with
#   pip install -c requirements/test.lock --build-constraint requirements/test.lock -e '.[test]'
# and `make test` fails if the installed environment has a package this file does not pin
# (requirements/locktool.py check). `make lock` installs .[test,fuzz,metrics,redis] with the
# newest releases within pyproject.toml's ranges into a fresh venv on each of Python
# {', '.join(full[p] for p in pythons)}, and merges what each has installed
# (pip and setuptools included): the union, one line per package, or one line per Python
# with a python_version marker where the versions differ.
# When and how to update it: README, "Dependencies: the lock and the newest releases".
"""
    write(Path(args.out), header + "\n".join(lines) + "\n")
    print(f"locktool: {args.out}: {len(versions)} packages from Python {', '.join(pythons)}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    lock = Path(args.lock)
    pins: dict[str, list[str]] = {}
    for key, version, marker, _line in read_lock(lock):
        if marker_applies(marker):
            pins.setdefault(key, []).append(version)
    problems = []
    have = installed()
    for key, (name, version) in sorted(have.items()):
        if key not in pins:
            problems.append(f"  {name} {version} is installed but {lock} does not pin it")
        elif not any(same_version(version, pin) for pin in pins[key]):
            problems.append(f"  {name} {version} is installed but {lock} pins {' or '.join(pins[key])}")
    if problems:
        print(f"check-lock: the environment of {sys.prefix} (Python {python_version()}) does not match "
              f"{lock}:", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        print("A dependency is missing from the lock (run `make lock`, README \"Dependencies\") or something "
              "was installed by hand (`make clean`, then `make test`).", file=sys.stderr)
        return 1
    print(f"check-lock: all {len(have)} installed packages are pinned by {lock}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    lock = Path(args.lock)
    pins: dict[str, str] = {}
    for key, version, marker, _line in read_lock(lock):
        if marker_applies(marker):
            pins[key] = version
    differences = []
    for key, (name, version) in sorted(installed().items()):
        if key not in pins:
            differences.append(f"  {name} {version} (not in the lock)")
        elif not same_version(pins[key], version):
            differences.append(f"  {name} {version} (the lock: {pins[key]})")
    if differences:
        print(f"Installed releases that differ from {lock}:")
        print("\n".join(differences))
    else:
        print(f"Every installed release is the one {lock} pins.")
    return 0


def lower_bounds() -> list[tuple[str, str, str]]:
    """(normalized name, requirement as written, lower bound) for tether's runtime requirements:
    `dependencies`, the extras a user installs (all but DEV_EXTRAS) and the build backend."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in DEV_EXTRAS:
            requirements += items
    requirements += pyproject["build-system"]["requires"]
    bounds: dict[str, tuple[str, str, str]] = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            sys.exit(f"locktool: cannot read the requirement {requirement!r}")
        name, _extras, specifier, _marker = match.groups()
        key = normalize(name)
        if key == PROJECT:
            continue
        lower = re.search(r">=\s*([^\s,]+)", specifier)
        if lower is None:
            sys.exit(f"locktool: {requirement!r} has no lower bound (>=): which release is tested?")
        if key in bounds and bounds[key][2] != lower.group(1):
            sys.exit(f"locktool: two lower bounds for {name}: {bounds[key][1]!r} and {requirement!r}")
        bounds[key] = (key, requirement, lower.group(1))
    return sorted(bounds.values())


def cmd_lowest(args: argparse.Namespace) -> int:
    bounds = lower_bounds()
    pinned = {key for key, _requirement, _bound in bounds}
    lines = [line for key, _version, _marker, line in read_lock(Path(args.lock)) if key not in pinned]
    text = (
        "# Generated by `make test-lowest` (requirements/locktool.py lowest): tether's runtime dependencies\n"
        "# and build backend at their lower bounds in pyproject.toml, everything else as the lock pins it.\n"
        + "".join(f"{key}=={bound}\n" for key, _requirement, bound in bounds)
        + f"# from {args.lock}:\n"
        + "\n".join(lines) + "\n"
    )
    write(Path(args.out), text)
    print("lower bounds: " + ", ".join(f"{key}=={bound}" for key, _requirement, bound in bounds), file=sys.stderr)
    return 0


def write(path: Path, text: str) -> None:
    """Rewrite only on a change, so that the venv stamps that depend on the file stay valid."""
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("freeze").set_defaults(run=cmd_freeze)
    merge = commands.add_parser("merge")
    merge.add_argument("freezes", nargs="+")
    merge.add_argument("--out", required=True)
    merge.set_defaults(run=cmd_merge)
    for name, run in (("check", cmd_check), ("compare", cmd_compare)):
        sub = commands.add_parser(name)
        sub.add_argument("lock")
        sub.set_defaults(run=run)
    lowest = commands.add_parser("lowest")
    lowest.add_argument("lock")
    lowest.add_argument("--out", required=True)
    lowest.set_defaults(run=cmd_lowest)
    args = parser.parse_args()
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
