"""Dispatch between the twins, PPP_NO_EXTENSIONS parsing, python -m ppp."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import ppp
from ppp._backend import extensions_disabled


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("No", False),
        (" off ", False),
        ("1", True),
        ("true", True),
        ("yes", True),
        ("anything", True),
    ],
)
def test_no_extensions_parsing(value: str | None, disabled: bool) -> None:
    env = {} if value is None else {"PPP_NO_EXTENSIONS": value}
    assert extensions_disabled(env) is disabled


def test_backend_matches_environment() -> None:
    if extensions_disabled():
        assert ppp.BACKEND == "python"
        assert ppp.Pool.__module__ == "ppp._pool_py"
    else:
        assert ppp.BACKEND == "cython"
        assert ppp.Pool.__module__ == "ppp._pool"


def run_ppp(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("PPP_NO_EXTENSIONS", None)
    if env_value is not None:
        env["PPP_NO_EXTENSIONS"] = env_value
    out = subprocess.run(
        [sys.executable, "-m", "ppp"], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_python_m_ppp_prints_version_and_backend() -> None:
    assert f"ppp {ppp.__version__} backend=python" in run_ppp("1")


@pytest.mark.cython
def test_python_m_ppp_uses_the_compiled_twin_when_allowed() -> None:
    assert f"ppp {ppp.__version__} backend=cython" in run_ppp("0")
    assert "backend=cython" in run_ppp(None)


def test_exceptions_hierarchy() -> None:
    assert issubclass(ppp.TimeOut, ppp.PoolException)
    assert issubclass(ppp.PoolException, ppp.PPPException)
    assert issubclass(ppp.ProxyException, ppp.PPPException)
    assert not issubclass(ppp.ProxyException, ppp.PoolException)


def test_one_set_of_cold_parts_under_both_twins(backend: Any) -> None:
    from ppp._common import PoolBase

    assert issubclass(backend.Pool, PoolBase)
