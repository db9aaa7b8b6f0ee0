"""Exception classes, shared by both Pool twins and the Proxy."""

from __future__ import annotations

__all__ = ["PPPException", "PoolException", "ProxyException", "TimeOut"]


class PPPException(Exception):
    """Base class of every exception raised by ppp."""


class PoolException(PPPException):
    """A pool cannot serve the request (shut down, bad object from ``fun``, ...)."""


class TimeOut(PoolException):
    """No object became available within the timeout of ``Pool.get``."""


class ProxyException(PPPException):
    """A Proxy is misused or not initialised."""
