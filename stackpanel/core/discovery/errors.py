"""What discovery raises (absence itself is a value, not an error)."""
from __future__ import annotations

from stackpanel.core.errors import RenderError, StackpanelError


class DiscoveryError(StackpanelError):
    """Something about this machine stops stackpanel (a server or a module is not installed)."""


class ApacheModuleError(DiscoveryError, RenderError):
    """Apache modules a configuration needs are neither compiled in nor installed."""

    def __init__(self, missing: tuple[str, ...], message: str):
        self.missing = missing
        super().__init__(message)
