"""The README's "Request-scoped return" and "Prometheus metrics" blocks run as
they are, on both twins (``ppp.Proxy`` swapped for the twin's class)."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import ppp
from ppp import proxy as proxy_module

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- section: {section} -->(.*?)<!-- end: {section} -->", text, re.S)
    assert found, f"README has no {section} section"
    return re.findall(r"```python\n(.*?)```", found.group(1), re.S)


CASES = [(s, i) for s, n in (("request-scope", 3), ("prometheus", 1)) for i in range(n)]


def test_block_counts() -> None:
    assert len(blocks("request-scope")) == 3 and len(blocks("prometheus")) == 1


@pytest.mark.parametrize(("section", "index"), CASES)
def test_block_runs(
    backend: ModuleType, monkeypatch: pytest.MonkeyPatch, section: str, index: int
) -> None:
    monkeypatch.setattr(ppp, "Proxy", proxy_module._for_twin(backend))
    code = blocks(section)[index]
    namespace: dict[str, Any] = {"__name__": f"readme_{section.replace('-', '_')}_{index}"}
    exec(compile(code, f"README.md:{section}[{index}]", "exec"), namespace)
    assert type(namespace["db"]) is proxy_module._for_twin(backend)
