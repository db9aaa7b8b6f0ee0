"""``make wheels-test`` and ``make wheels-pure``: install the built artifacts the way a
user does, outside the source tree, and check them.

``binary``: for each CPython, a fresh venv of that Python in a temporary folder
gets ``wheelhouse/<its wheel>[test]``; then ``ppp.BACKEND`` must be ``cython``
with the extension loaded from the venv, the wheel must hold the ``.so``, the
test suite (taken from the sdist the wheels were built from, without its
``ppp/``, so only the installed package is importable) must pass, and
``tests/typing/usage.py`` must run and pass ``mypy --strict --warn-unused-ignores``
against the installed wheel.

``pure``: ``PPP_NO_EXTENSIONS=1`` builds a ``py3-none-any`` wheel from the sdist
(into ``dist/``), which installs with ``ppp.BACKEND == "python"`` and passes the
suite's pure leg; an sdist install with no working compiler (``CC=false``)
succeeds with the pure twin and prints the fallback warning, and fails when
``PPP_REQUIRE_EXTENSIONS=1`` is set.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wheels_common import (
    DIST,
    FALLBACK_TAIL,
    FALLBACK_WARNING,
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
    find_python,
    make_venv,
    run,
    say,
    the_sdist,
    wheel_names,
    wheel_tags,
)

CHECKER = ROOT / "tools" / "wheels_check_installed.py"
PACKAGE_DIRS = {"ppp", "ppp_pool.egg-info", "PKG-INFO", "setup.cfg"}
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|deselected)")


@dataclass
class Result:
    """One installed artifact and what its test-suite run counted."""

    label: str
    artifact: str
    size: int
    backend: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def counts_text(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts.items()) or "-"


@contextmanager
def scratch(label: str, keep: bool) -> Iterator[Path]:
    """A fresh temporary folder outside the source tree, removed afterwards unless
    ``keep`` (the logs stay in build/wheels/logs)."""
    path = Path(tempfile.mkdtemp(prefix=f"ppp-wheels-{label}-"))
    if ROOT in path.resolve().parents:
        raise Failure(f"temporary folder {path} is inside the source tree {ROOT}")
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_installed(vpy: Path, cwd: Path, backend: str) -> dict[str, Any]:
    """Run ``tools/wheels_check_installed.py`` with the venv's python from ``cwd`` (no
    ``ppp/`` there): the package comes from site-packages with the expected backend."""
    proc = run([vpy, CHECKER, backend], cwd=cwd, env=clean_env())
    info: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if cwd.resolve() not in Path(info["package"]).resolve().parents:
        raise Failure(f"ppp imported from {info['package']}, not from the venv in {cwd}")
    return info


def copy_project(into: Path) -> None:
    """The sdist's files without its ``ppp/`` package: the suite, its pytest
    configuration and what tests read (README examples, ``examples/``), so that
    ``import ppp`` can only find the installed wheel.  Taken from the sdist the
    wheels were built from (as cibuildwheel's ``test-sources`` are), so tests and
    code are one snapshot even while the checkout moves on."""
    top = extract_sdist(the_sdist(), into / "sdist")
    for item in top.iterdir():
        if item.name not in PACKAGE_DIRS:
            shutil.move(str(item), str(into / item.name))
    shutil.rmtree(into / "sdist")
    if not (into / "tests" / "conftest.py").exists():
        raise Failure(f"the sdist has no tests/conftest.py: fix MANIFEST.in ({into})")


@dataclass
class Suite:
    """What one run of the suite counted, and why it failed (``None`` if it passed)."""

    counts: dict[str, int]
    seconds: float
    error: str | None


def run_suite(vpy: Path, cwd: Path, label: str, args: argparse.Namespace, **env: str) -> Suite:
    """Run the copied suite with ``vpy`` against the installed ppp (fails outright if the
    pytest header shows any other ppp)."""
    log = WORK / "logs" / f"test-{label}.log"
    say(f"{label}: running the test suite against the installed package ({log.name})")
    pytest = ["-X", "dev", "-m", "pytest", "-p", "no:cacheprovider"]
    cmd: list[str | Path] = [vpy, *pytest, *shlex.split(args.pytest_args), "tests"]
    proc = run(cmd, cwd=cwd, env=clean_env(**env), log=log, check=False, timeout=args.timeout)
    lines = proc.stdout.splitlines()
    header = next((ln for ln in lines if "BACKEND=" in ln), "")
    where = re.search(r"BACKEND=(\w+) \((.*)\)", header)
    quiet = any(a in ("-q", "--quiet", "-qq") for a in shlex.split(args.pytest_args))
    if where is None and not quiet or where and cwd not in Path(where.group(2)).parents:
        raise Failure(f"{label}: the suite did not test the installed package: {header!r}")
    tail = next((ln for ln in reversed(lines) if SUMMARY.search(ln)), "")
    counts = {what: int(n) for n, what in SUMMARY.findall(tail)}
    seconds = re.search(r" in ([\d.]+)s", tail)
    error = None
    if proc.returncode != 0 or not counts.get("passed"):
        failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))][:10]
        error = f"{label}: test suite failed (exit {proc.returncode}, log {log}): {tail.strip()}"
        error += "".join(f"\n    {ln}" for ln in failed)
    return Suite(counts, float(seconds.group(1)) if seconds else 0.0, error)


def check_typing(vpy: Path, version: str, tmp: Path, mypy_python: Path) -> None:
    """Run the typed sample, then ``mypy --strict`` on it against the wheel's site-packages."""
    sample_dir = tmp / "typing"
    shutil.copytree(tmp / "tests" / "typing", sample_dir, ignore=shutil.ignore_patterns("__*"))
    samples = sorted(p.name for p in sample_dir.glob("*.py"))
    for sample in samples:
        run([vpy, sample], cwd=sample_dir, env=clean_env())
    log = WORK / "logs" / f"mypy-{version}.log"
    # An explicit empty configuration: mypy must not pick up the project's (it would
    # forgive a missing ppp._pool stub), found by walking up from the sample's folder.
    config = sample_dir / "mypy.ini"
    config.write_text("[mypy]\n")
    mypy: list[str | Path] = [mypy_python, "-m", "mypy", "--config-file", config]
    mypy += ["--strict", "--warn-unused-ignores", "--python-executable", vpy]
    mypy += ["--python-version", version, "--cache-dir", tmp / "mypy-cache", *samples]
    run(
        mypy,
        cwd=sample_dir,
        env=clean_env(),
        log=log,
    )
    say(f"CPython {version}: mypy --strict accepts {', '.join(samples)} against the wheel")


def test_binary(version: str, args: argparse.Namespace) -> Result:
    """Install the CPython ``version`` wheel in a fresh venv and check it end to end."""
    abi = f"cp{version.replace('.', '')}"
    found = sorted(WHEELHOUSE.glob(f"{PROJECT}-*-{abi}-{abi}-*.whl"))
    if len(found) != 1:
        raise Failure(f"expected one {abi} wheel in {WHEELHOUSE}, found {found}: run `make wheels`")
    wheel = found[0]
    exts = extension_files(wheel_names(wheel))
    if not any(e.startswith("ppp/_pool.cpython-") for e in exts):
        raise Failure(f"{wheel.name} holds no compiled ppp/_pool extension: {exts}")
    with scratch(version, args.keep) as tmp:
        say(f"CPython {version}: installing {wheel.name}[test] into {tmp}/venv")
        vpy = make_venv(find_python(version), tmp / "venv", f"{wheel}[test]")
        info = check_installed(vpy, tmp, "cython")
        shown = run([vpy, "-m", "ppp"], cwd=tmp, env=clean_env()).stdout.strip()
        if "backend=cython" not in shown:
            raise Failure(f"python -m ppp says {shown!r}")
        say(f"CPython {version}: {shown}; compiled: {', '.join(info['extensions'])}")
        copy_project(tmp)
        suite = run_suite(vpy, tmp, abi, args)
        errors = [suite.error] if suite.error else []
        try:  # the typing check runs even when a test failed
            check_typing(vpy, version, tmp, args.mypy)
        except Failure as exc:
            errors.append(f"CPython {version}: typed sample: {exc}")
    result = Result(
        version, wheel.name, wheel.stat().st_size, "cython", suite.counts, suite.seconds
    )
    if errors:
        raise Failure("\n".join(errors), result)
    return result


def build_pure_wheel(sdist: Path, version: str) -> Path:
    """``PPP_NO_EXTENSIONS=1 python -m build --wheel`` from the unpacked sdist into dist/."""
    for old in DIST.glob(f"{PROJECT}-*-py3-none-any.whl"):
        old.unlink()
    src = extract_sdist(sdist, WORK / "src-pure")
    run(
        [builder(version), "-m", "build", "--wheel", "--outdir", DIST, src],
        env=clean_env(PPP_NO_EXTENSIONS="1"),
        log=WORK / "logs" / "wheel-pure.log",
    )
    (wheel,) = DIST.glob(f"{PROJECT}-*-py3-none-any.whl")
    tags = wheel_tags(wheel)
    if tags != ["py3-none-any"]:
        raise Failure(f"{wheel.name}: tags {tags}, expected py3-none-any")
    names = wheel_names(wheel)
    if extension_files(names):
        raise Failure(f"{wheel.name} holds compiled modules {extension_files(names)}")
    for needed in ("ppp/py.typed", "ppp/_pool.pyi", "ppp/_pool_py.py"):
        if needed not in names:
            raise Failure(f"{wheel.name} lacks {needed}")
    say(f"pure wheel {wheel.name} ({wheel.stat().st_size:,} bytes), tag {tags[0]}")
    return wheel


def test_pure_wheel(sdist: Path, version: str, args: argparse.Namespace) -> Result:
    """The pure wheel installs as the pure twin (with PPP_NO_EXTENSIONS unset: nothing is
    compiled) and passes the suite's pure leg."""
    wheel = build_pure_wheel(sdist, version)
    with scratch("pure", args.keep) as tmp:
        vpy = make_venv(find_python(version), tmp / "venv", f"{wheel}[test]")
        check_installed(vpy, tmp, "python")
        no_ext = run([vpy, "-c", "import ppp._pool"], cwd=tmp, env=clean_env(), check=False)
        if no_ext.returncode == 0 or "ModuleNotFoundError" not in no_ext.stdout:
            raise Failure(f"ppp._pool should not exist in the pure install: {no_ext.stdout}")
        copy_project(tmp)
        suite = run_suite(vpy, tmp, "pure", args, PPP_NO_EXTENSIONS="1")
    size = wheel.stat().st_size
    result = Result(f"{version} pure", wheel.name, size, "python", suite.counts, suite.seconds)
    if suite.error:
        raise Failure(suite.error, result)
    return result


def test_no_compiler(sdist: Path, version: str, args: argparse.Namespace) -> None:
    """``CC=false pip install <sdist>``: succeeds with the pure twin and the warning;
    with PPP_REQUIRE_EXTENSIONS=1 the same install fails."""
    python = find_python(version)
    pip_install = ["-m", "pip", "install", "-v", "--no-cache-dir", "--no-binary", "ppp-pool"]
    with scratch("cc-false", args.keep) as tmp:
        vpy = make_venv(python, tmp / "venv")
        log = WORK / "logs" / "sdist-cc-false.log"
        say(f"CPython {version}: CC=false pip install -v {sdist.name} (no working compiler)")
        proc = run([vpy, *pip_install, sdist], cwd=tmp, env=clean_env(CC="false"), log=log)
        lines = [ln.strip() for ln in proc.stdout.splitlines()]
        warning = next((ln for ln in lines if FALLBACK_WARNING in ln), "")
        if FALLBACK_TAIL not in warning:
            raise Failure(f"no fallback warning in the CC=false install (log {log})")
        say(f"  it printed: {warning[:100]}...")
        info = check_installed(vpy, tmp, "python")
        say(f"  and installed ppp {info['version']} with ppp.BACKEND={info['backend']!r}")

        strict = make_venv(python, tmp / "venv-strict")
        log = WORK / "logs" / "sdist-cc-false-required.log"
        env = clean_env(CC="false", PPP_REQUIRE_EXTENSIONS="1")
        proc = run([strict, *pip_install, sdist], cwd=tmp, env=env, log=log, check=False)
        if proc.returncode == 0:
            raise Failure(f"CC=false PPP_REQUIRE_EXTENSIONS=1 install succeeded (log {log})")
        gone = run([strict, "-c", "import ppp"], cwd=tmp, env=clean_env(), check=False)
        if gone.returncode == 0:
            raise Failure("the failed PPP_REQUIRE_EXTENSIONS=1 install left ppp importable")
        say("  with PPP_REQUIRE_EXTENSIONS=1 the same install fails, as it must")


def report(results: list[Result]) -> None:
    print()
    print(f"{'python':<12} {'backend':<8} {'size':>9}  tests{'':<30} artifact")
    for r in results:
        tests = f"{r.counts_text()} ({r.seconds:.0f} s)"
        print(f"{r.label:<12} {r.backend:<8} {r.size:>9,}  {tests:<35} {r.artifact}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["binary", "pure"])
    parser.add_argument("--pythons", nargs="+", default=list(PYTHONS), metavar="X.Y")
    parser.add_argument("--pure-python", default="3.10", metavar="X.Y")
    parser.add_argument("--no-compiler-python", default="3.13", metavar="X.Y")
    parser.add_argument("--mypy", type=Path, help="a Python that has mypy (for binary)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per suite run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary venvs")
    args = parser.parse_args(argv)
    results: list[Result] = []
    failures: list[str] = []
    target = f"make wheels-{'test' if args.mode == 'binary' else 'pure'}"
    if args.mode == "binary":
        if args.mypy is None:
            parser.error("--mypy PYTHON is needed to type-check the sample")
        args.mypy = args.mypy.absolute()  # not resolve(): that would leave the venv
        for version in args.pythons:  # every Python, even after a failure: the full picture
            try:
                results.append(test_binary(version, args))
            except (Failure, subprocess.SubprocessError, OSError) as exc:
                if isinstance(exc, Failure) and len(exc.args) > 1:
                    results.append(exc.args[1])
                failures.append(f"CPython {version}: {exc.args[0]}")
                print(f"{target}: CPython {version} FAILED: {exc.args[0]}", flush=True)
    else:
        try:
            sdist = the_sdist()
            try:
                results.append(test_pure_wheel(sdist, args.pure_python, args))
            except Failure as exc:
                if len(exc.args) > 1:
                    results.append(exc.args[1])
                failures.append(str(exc.args[0]))
            test_no_compiler(sdist, args.no_compiler_python, args)
        except (Failure, subprocess.SubprocessError, OSError) as exc:
            failures.append(str(exc.args[0] if exc.args else exc))
    report(results)
    if failures:
        print(f"{target}: FAILED ({len(failures)}):")
        for failure in failures:
            print("  " + "\n  ".join(failure.splitlines()[:12]))
        return 1
    what = "wheels" if args.mode == "binary" else "pure wheel and no-compiler sdist install"
    print(f"{target}: {what} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
