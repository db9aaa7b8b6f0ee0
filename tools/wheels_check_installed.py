"""Check the ppp that this interpreter imports: run it where no ``ppp/`` folder is in sight.

``python tools/wheels_check_installed.py cython`` (or ``python``) fails unless:

- ``ppp`` comes from an installed distribution (site-packages), not a checkout;
- ``ppp.BACKEND`` is the expected one and, for ``cython``, every ``.pyx`` shipped
  in the package has its compiled module next to it, and they all import;
- the typing files ``py.typed`` and ``_pool.pyi`` are installed;
- on a free-threaded CPython, importing every ppp module leaves the GIL disabled
  (an extension that does not declare ``freethreading_compatible`` turns it on).

It prints one line of JSON describing what it found.  ``make wheels-test`` and the
cibuildwheel ``test-command`` (pyproject.toml) both run it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import pkgutil
import sys
import sysconfig


def fail(message: str) -> None:
    sys.exit(f"wheels_check_installed: {message}")


def real(path: str) -> str:
    """A path made comparable: symlinks resolved (macOS /var), case folded (Windows)."""
    return os.path.normcase(os.path.realpath(path))


def main(expected: str) -> dict[str, object]:
    import ppp

    package = os.path.dirname(os.path.abspath(ppp.__file__))
    site_dirs = {real(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    if real(os.path.dirname(package)) not in site_dirs:
        fail(f"ppp was imported from {package}, not from site-packages {sorted(site_dirs)}")
    if expected != ppp.BACKEND:
        fail(f"ppp.BACKEND is {ppp.BACKEND!r}, expected {expected!r}")
    files = sorted(os.listdir(package))
    for needed in ("py.typed", "_pool.pyi", "_pool_py.py"):
        if needed not in files:
            fail(f"the installed package lacks {needed} ({files})")
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    extensions = [f for f in files if f.endswith(suffixes)]
    sources = [f[: -len(".pyx")] for f in files if f.endswith(".pyx")]
    if expected == "cython":
        missing = [s for s in sources if not any(e.startswith(f"{s}.") for e in extensions)]
        if missing or not sources:
            fail(f"no compiled module for {missing or 'any .pyx'} in {package} ({files})")
        active = os.path.abspath(str(ppp._impl.__file__))
        if real(os.path.dirname(active)) != real(package) or not active.endswith(suffixes):
            fail(f"the active twin is {active}, not a compiled module of {package}")
    elif extensions:
        fail(f"a pure install holds compiled modules {extensions}")
    modules = sorted(m.name for m in pkgutil.iter_modules([package]) if m.name != "__main__")
    for name in modules:
        try:
            importlib.import_module(f"ppp.{name}")
        except ImportError as exc:
            if expected == "cython" or name not in sources:
                fail(f"ppp.{name} does not import: {exc}")
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    if free_threaded and gil:
        fail(f"importing ppp ({', '.join(modules)}) enabled the GIL on a free-threaded build")
    return {
        "backend": ppp.BACKEND,
        "version": ppp.__version__,
        "package": package,
        "active": ppp._impl.__file__,
        "extensions": extensions,
        "modules": modules,
        "python": sys.version.split()[0],
        "free_threaded": free_threaded,
        "gil_enabled": gil,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("cython", "python"):
        sys.exit("usage: python tools/wheels_check_installed.py cython|python")
    print(json.dumps(main(sys.argv[1])))
