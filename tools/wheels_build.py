"""``make wheels``: an sdist, then from that sdist one manylinux wheel per CPython.

1. ``python -m build --sdist`` into ``dist/``, then a check that the sdist holds
   every file a wheel build needs (each git-tracked file of ``ppp/``, the build
   configuration) and no generated C or binaries.
2. For each CPython (3.10 to 3.13 by default): unpack the sdist afresh, build a
   wheel from it with ``python -m build --wheel`` (its own isolated build
   environment) and ``PPP_REQUIRE_EXTENSIONS=1``, so a failed compile is an error.
3. ``auditwheel repair --strip`` each wheel into ``wheelhouse/`` and print its tags.

Run it with the tools venv: ``.venv-wheels/tools/bin/python tools/wheels_build.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path, PurePosixPath

from wheels_common import (
    DIST,
    PROJECT,
    PYTHONS,
    ROOT,
    WHEELHOUSE,
    WORK,
    Failure,
    builder,
    clean_env,
    extension_files,
    extract_sdist,
    run,
    say,
    tracked,
    wheel_names,
    wheel_tags,
)

TOOLS_BIN = Path(sys.executable).parent
# Suffixes of the files under ppp/ that a wheel build reads or ships.
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd", ".pyi", ".typed")
GENERATED_SUFFIXES = (".c", ".so", ".pyd", ".html")


def tracked_package_files() -> list[str]:
    """Files of ``ppp/`` that the sdist must carry: git-tracked ones (the working tree's
    when this is not a git checkout)."""
    names = tracked("ppp")
    if names is None:
        names = [p.relative_to(ROOT).as_posix() for p in (ROOT / "ppp").iterdir() if p.is_file()]
    return sorted(n for n in names if n.endswith(SOURCE_SUFFIXES))


def check_sdist(sdist: Path) -> list[str]:
    """Fail unless ``sdist`` has what a wheel build needs; return its ``.pyx`` modules."""
    with tarfile.open(sdist) as tar:
        members = [PurePosixPath(m.name) for m in tar.getmembers() if m.isfile()]
    names = {PurePosixPath(*m.parts[1:]).as_posix() for m in members if len(m.parts) > 1}
    needed = ["PKG-INFO", "pyproject.toml", "setup.py", "README.md", "ppp/py.typed"]
    needed += tracked_package_files()
    missing = [n for n in needed if n not in names]
    if missing:
        raise Failure(f"{sdist.name} lacks {missing}: fix MANIFEST.in")
    generated = sorted(n for n in names if n.startswith("ppp/") and n.endswith(GENERATED_SUFFIXES))
    if generated:
        raise Failure(f"{sdist.name} ships generated files {generated}: fix MANIFEST.in")
    pyx = sorted(n for n in names if n.startswith("ppp/") and n.endswith(".pyx"))
    if not pyx:
        raise Failure(f"{sdist.name} has no ppp/*.pyx: nothing to compile")
    if "ppp/_pool.pyi" not in names:
        raise Failure(f"{sdist.name} lacks ppp/_pool.pyi (the compiled twin's stub)")
    say(f"sdist {sdist.name}: {len(names)} files, compiles {', '.join(pyx)}")
    return pyx


def check_wheel(wheel: Path, version: str, pyx: list[str]) -> None:
    """Fail unless ``wheel`` is a CPython ``version`` wheel with one extension per ``.pyx``
    and the typing files."""
    names = wheel_names(wheel)
    abi = f"cp{version.replace('.', '')}"
    exts = extension_files(names)
    for src in pyx:
        module = src[: -len(".pyx")]
        if not any(e.startswith(f"{module}.cpython-{abi[2:]}") for e in exts):
            raise Failure(f"{wheel.name} lacks the compiled {module} for {abi} (has {exts})")
    for typing_file in ("ppp/py.typed", "ppp/_pool.pyi"):
        if typing_file not in names:
            raise Failure(f"{wheel.name} lacks {typing_file}")
    tags = wheel_tags(wheel)
    if not all(t.startswith(f"{abi}-{abi}-") for t in tags):
        raise Failure(f"{wheel.name} has tags {tags}, expected {abi}-{abi}-*")


def build_sdist(tools_python: Path) -> Path:
    """``python -m build --sdist``.  PPP_NO_EXTENSIONS keeps setup.py from cythonizing
    into the working tree (MANIFEST.in, not the extension list, decides the contents)."""
    say("building the sdist (python -m build --sdist)")
    run(
        [tools_python, "-m", "build", "--sdist", "--outdir", DIST, ROOT],
        env=clean_env(PPP_NO_EXTENSIONS="1"),
        log=WORK / "logs" / "sdist.log",
    )
    found = sorted(DIST.glob(f"{PROJECT}-*.tar.gz"))
    if len(found) != 1:
        raise Failure(f"expected one sdist in {DIST}, found {found}")
    return found[0]


def build_wheel(sdist: Path, version: str, pyx: list[str]) -> Path:
    """Build the CPython ``version`` wheel from ``sdist`` and repair it into the wheelhouse."""
    python = builder(version)
    src = extract_sdist(sdist, WORK / f"src-{version}")
    raw_dir = WORK / f"raw-{version}"
    shutil.rmtree(raw_dir, ignore_errors=True)
    say(f"CPython {version}: building a wheel from {sdist.name}")
    run(
        [python, "-m", "build", "--wheel", "--outdir", raw_dir, src],
        env=clean_env(PPP_REQUIRE_EXTENSIONS="1"),
        log=WORK / "logs" / f"wheel-{version}.log",
    )
    (raw,) = raw_dir.glob("*.whl")
    check_wheel(raw, version, pyx)
    before = set(WHEELHOUSE.glob("*.whl"))
    env = clean_env(PATH=f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    run(
        [TOOLS_BIN / "auditwheel", "repair", "--strip", "-w", WHEELHOUSE, raw],
        env=env,
        log=WORK / "logs" / f"repair-{version}.log",
    )
    new = sorted(set(WHEELHOUSE.glob("*.whl")) - before)
    if len(new) != 1:
        raise Failure(f"auditwheel repair of {raw.name} wrote {new}, expected one wheel")
    wheel = new[0]
    check_wheel(wheel, version, pyx)
    if not any("manylinux" in t for t in wheel_tags(wheel)):
        raise Failure(f"{wheel.name} is not a manylinux wheel: {wheel_tags(wheel)}")
    show = run([TOOLS_BIN / "auditwheel", "show", wheel], env=env)
    if "is consistent with" not in show.stdout:
        raise Failure(f"auditwheel show {wheel.name}:\n{show.stdout}")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", nargs="+", default=list(PYTHONS), metavar="X.Y")
    args = parser.parse_args(argv)
    for folder in (DIST, WHEELHOUSE):
        folder.mkdir(exist_ok=True)
        for old in folder.glob(f"{PROJECT}-*"):
            old.unlink()
    shutil.rmtree(WORK, ignore_errors=True)
    try:
        sdist = build_sdist(Path(sys.executable))
        pyx = check_sdist(sdist)
        wheels = [build_wheel(sdist, version, pyx) for version in args.pythons]
    except (Failure, subprocess.SubprocessError, OSError) as exc:
        print(f"make wheels: FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"sdist  {sdist.relative_to(ROOT)}  {sdist.stat().st_size:,} bytes")
    for wheel in wheels:
        size = wheel.stat().st_size
        print(f"wheel  {wheel.relative_to(ROOT)}  {size:,} bytes")
        print(f"       tags: {', '.join(wheel_tags(wheel))}")
    print(f"make wheels: {len(wheels)} manylinux wheels in {WHEELHOUSE.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
