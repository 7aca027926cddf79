"""IPython magics: ``%%agentbuild`` runs a cell as a build, ``%agentbuild`` manages builds.

Load with ``%load_ext jupyter_agentbuild`` (or ``jupyter_agentbuild.magics``). Argument
errors raise IPython's ``UsageError`` (a message and the usage, no traceback); server errors
show their code and message only.

- :mod:`.arguments`: the command lines, their help and parsers;
- :mod:`.cell_spec`: the BuildSpec a cell sends;
- :mod:`.cell` and :mod:`.commands`: what ``%%agentbuild`` and each subcommand do;
- :mod:`.display`: one-line errors and the log as text;
- :mod:`.agentbuild`: the IPython ``Magics`` class that dispatches to them.
"""

from __future__ import annotations

from typing import Any

from .agentbuild import AgentBuildMagics
from .display import MagicError

__all__ = ["AgentBuildMagics", "MagicError", "load_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_agentbuild``"""
    ipython.register_magics(AgentBuildMagics)
