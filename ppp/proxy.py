from __future__ import annotations
Proxy = None  # replaced by the Proxy issue
