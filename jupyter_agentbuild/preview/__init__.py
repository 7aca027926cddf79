"""Previews: a build's web server kept running after its steps, behind a reverse proxy."""

from .manager import PreviewManager
from .model import Preview

__all__ = ["Preview", "PreviewManager"]
