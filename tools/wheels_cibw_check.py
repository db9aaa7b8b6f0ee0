"""Check the ``[tool.cibuildwheel]`` configuration here, where no CI runner can run it.

Run with a venv that holds the cibuildwheel version the workflow pins, plus
``jsonschema`` (``make wheels-config`` makes it).  It fails unless:

- the table validates against the JSON schema cibuildwheel ships;
- on each runner of ``.github/workflows/wheels.yml`` (manylinux x86_64 and
  aarch64, macOS x86_64 and arm64, Windows AMD64), cibuildwheel selects exactly
  CPython 3.10-3.14 and the free-threaded 3.14t: 30 builds;
- every build requires the extension (``PPP_REQUIRE_EXTENSIONS=1``), installs the
  test dependencies and runs the installed-package check, the typed sample and
  the test suite; the free-threaded builds skip only the greenlet tests;
- the workflow pins the same cibuildwheel version and uses those runners;
- every ``test-sources`` path is in the sdist (the workflow builds from it).
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path, PurePosixPath

import cibuildwheel
import jsonschema
import tomllib
from cibuildwheel.architecture import Architecture
from cibuildwheel.options import CommandLineArguments, compute_options
from cibuildwheel.platforms import ALL_PLATFORM_MODULES, get_build_identifiers

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "wheels.yml"
# Runner label in the workflow -> (cibuildwheel platform, native arch, identifier suffix).
RUNNERS = {
    "ubuntu-24.04": ("linux", "x86_64", "manylinux_x86_64"),
    "ubuntu-24.04-arm": ("linux", "aarch64", "manylinux_aarch64"),
    "macos-15-intel": ("macos", "x86_64", "macosx_x86_64"),
    "macos-15": ("macos", "arm64", "macosx_arm64"),
    "windows-2025": ("windows", "AMD64", "win_amd64"),
}
PYTHONS = ("cp310", "cp311", "cp312", "cp313", "cp314", "cp314t")


def fail(message: str) -> None:
    sys.exit(f"wheels_cibw_check: {message}")


def check_schema(table: dict[str, object]) -> None:
    schema_path = Path(cibuildwheel.__file__).parent / "resources" / "cibuildwheel.schema.json"
    schema = json.loads(schema_path.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(table), key=str)
    if errors:
        fail("[tool.cibuildwheel] does not match the schema:\n" + "\n".join(map(str, errors)))


def check_workflow(version: str) -> None:
    text = WORKFLOW.read_text()
    pinned = re.findall(r"uses:\s*pypa/cibuildwheel@v([\d.]+)", text)
    if pinned != [version]:
        fail(f"{WORKFLOW.name} pins cibuildwheel {pinned}, this check runs {version}")
    for runner in RUNNERS:
        if not re.search(rf"os:\s*{re.escape(runner)}\s*(#.*)?$", text, re.M):
            fail(f"{WORKFLOW.name} has no matrix entry `os: {runner}`")


def check_builds(table: dict[str, object]) -> int:
    """The builds each runner makes.  ``archs = auto64`` means the runner's native 64-bit
    architecture, so each runner is computed with that one architecture."""
    if table.get("archs") != ["auto64"]:
        fail(f"archs is {table.get('archs')!r}: the runners rely on ['auto64']")
    args = CommandLineArguments.defaults()
    args.package_dir = ROOT
    total = 0
    for runner, (platform, arch, suffix) in RUNNERS.items():
        options = compute_options(platform, args, env={})  # type: ignore[arg-type]
        chosen = get_build_identifiers(
            platform_module=ALL_PLATFORM_MODULES[platform],  # type: ignore[index]
            build_selector=options.globals.build_selector,
            architectures={Architecture(arch)},
        )
        expected = [f"{py}-{suffix}" for py in PYTHONS]
        if sorted(chosen) != sorted(expected):
            fail(f"{runner}: cibuildwheel selects {chosen}, expected {expected}")
        for identifier in chosen:
            build = options.build_options(identifier)
            env = build.environment.as_dictionary(prev_environment={})
            if env.get("PPP_REQUIRE_EXTENSIONS") != "1":
                fail(f"{identifier}: PPP_REQUIRE_EXTENSIONS is {env.get('PPP_REQUIRE_EXTENSIONS')}")
            command = build.test_command or ""
            for step in ("wheels_check_installed.py cython", "tests/typing/usage.py", "pytest"):
                if step not in command:
                    fail(f"{identifier}: the test command lacks {step!r}: {command!r}")
            free_threaded = identifier.startswith("cp314t-")
            if free_threaded != ("--ignore=tests/test_proxy_greenlets.py" in command):
                fail(f"{identifier}: unexpected test selection: {command!r}")
            if not free_threaded and "test" not in build.test_extras:
                fail(f"{identifier}: the test extra is not installed ({build.test_extras!r})")
            if free_threaded and not any(r.startswith("pytest") for r in build.test_requires):
                fail(f"{identifier}: no pytest among {build.test_requires}")
        print(f"{runner:<17} {' '.join(sorted(chosen))}")
        total += len(chosen)
    return total


def check_sdist_sources(sources: list[str]) -> None:
    found = sorted((ROOT / "dist").glob("ppp_pool-*.tar.gz"))
    if not found:
        print("no sdist in dist/ (run `make wheels`): test-sources not checked against it")
        return
    with tarfile.open(found[-1]) as tar:
        names = {PurePosixPath(*PurePosixPath(m.name).parts[1:]).as_posix() for m in tar}
    missing = [s for s in sources if s not in names]
    if missing:
        fail(f"{found[-1].name} lacks the test-sources {missing}: fix MANIFEST.in")
    print(f"{found[-1].name} holds every test-sources path: {', '.join(sources)}")


def main() -> int:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    check_schema(table)
    check_workflow(cibuildwheel.__version__)
    total = check_builds(table)
    check_sdist_sources(list(table["test-sources"]))
    print(f"cibuildwheel {cibuildwheel.__version__}: configuration OK, {total} builds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
