"""Build logic for the optional Cython extension; metadata lives in pyproject.toml.

- ``PPP_NO_EXTENSIONS`` (any value but empty, 0, false, no, off) builds the pure twin only.
- ``PPP_REQUIRE_EXTENSIONS=1`` turns a failed compile into a failed install.
- Otherwise a failed compile prints a warning and installs the pure twin.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FALSY = {"", "0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in FALSY


NO_EXTENSIONS = env_flag("PPP_NO_EXTENSIONS") or platform.python_implementation() != "CPython"
REQUIRE_EXTENSIONS = env_flag("PPP_REQUIRE_EXTENSIONS")


def warn(message: str) -> None:
    bar = "*" * 75
    print(f"\n{bar}\nWARNING: {message}\n{bar}\n", file=sys.stderr)


class optional_build_ext(build_ext):
    """Build the extension, or fall back to the pure twin with a warning."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._failed(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if REQUIRE_EXTENSIONS:
            raise
        warn(
            f"ppp: compiling the Cython extension failed ({exc!s}); "
            "installing the pure-Python backend instead (set PPP_REQUIRE_EXTENSIONS=1 "
            "to make this an error)."
        )


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        if REQUIRE_EXTENSIONS:
            raise SystemExit("PPP_NO_EXTENSIONS and PPP_REQUIRE_EXTENSIONS are both set")
        return []
    sources = sorted(glob.glob(os.path.join("ppp", "*.pyx")))
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise
        warn("ppp: Cython is not available; installing the pure-Python backend.")
        return []
    exts = [
        Extension(f"ppp.{os.path.splitext(os.path.basename(src))[0]}", [src])
        for src in sources
    ]
    try:
        return list(
            cythonize(
                exts,
                compiler_directives={"language_level": "3", "freethreading_compatible": True},
            )
        )
    except Exception as exc:
        if REQUIRE_EXTENSIONS:
            raise
        warn(f"ppp: cythonize failed ({exc!s}); installing the pure-Python backend.")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
