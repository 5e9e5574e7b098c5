"""Turn a validated profile into server configs and command lines inside a run directory."""
from stackpanel.core.render.common import RenderedNode, RunPaths
from stackpanel.core.render.stack import RenderedStack, render_stack

__all__ = ["RenderedNode", "RenderedStack", "RunPaths", "render_stack"]
