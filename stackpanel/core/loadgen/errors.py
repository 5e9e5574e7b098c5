"""Errors of the load-generator area (one base, per-cause subclasses)."""
from __future__ import annotations

from stackpanel.core.errors import StackpanelError


class LoadgenError(StackpanelError):
    """Base of every load-generator error."""


class LoadTargetError(LoadgenError, ValueError):
    """The URL may not be loaded: not http://, not loopback, or malformed. The message says which."""


class LoadConfigError(LoadgenError, ValueError):
    """A load-run setting is out of range (e.g. zero connections, neither duration nor count)."""


class WrkError(LoadgenError):
    """wrk is missing, failed, or printed something we cannot read."""
