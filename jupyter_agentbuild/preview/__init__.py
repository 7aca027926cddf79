"""Previews: a build's web server, its life cycle and the proxy's upstream client."""

from .manager import Preview, PreviewConfig, PreviewManager
from .upstream import UpstreamLimits

__all__ = ["Preview", "PreviewConfig", "PreviewManager", "UpstreamLimits"]
