"""Old ``c.AgentBuild.<name>`` settings, forwarded to the component that now owns them.

Configuration used to live on the ``AgentBuild`` app; each setting now lives on the
component that uses it (``c.Runner.default_timeout``, ``c.ArtifactService.root``, ...).
Deployments keep working: an old name found under ``AgentBuild`` is moved to the
component's section, with one deprecation warning per name, before traitlets sees it (so
it does not also warn "not recognized"). The new spelling wins when both are set.

Nothing here lists the moves: a config trait of a component answers to its ``legacy``
tag (``.tag(config=True, legacy="artifacts_root")``), or else to its own name.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from traitlets.config import Config, Configurable

#: The section old settings are found in.
APP_SECTION = "AgentBuild"


def legacy_names(
    classes: Iterable[type], package: str = __package__ or "jupyter_agentbuild"
) -> dict[str, list[tuple[str, str]]]:
    """``{old AgentBuild name: [(section, trait name), ...]}`` for the config traits of
    ``classes`` and of their configurable bases in ``package`` (a trait inherited from a
    common base is configured once, on the base's section; traitlets' and Jupyter's own
    bases never had an ``AgentBuild`` spelling)."""
    found: dict[str, list[tuple[str, str]]] = {}
    seen: set[tuple[str, str]] = set()
    for cls in classes:
        for owner in cls.__mro__:
            if not (isinstance(owner, type) and issubclass(owner, Configurable)):
                continue
            if not owner.__module__.startswith(package):
                continue
            for name, trait in owner.class_own_traits(config=True).items():
                target = (owner.__name__, name)
                if target in seen:
                    continue
                seen.add(target)
                old = str(trait.metadata.get("legacy", name))
                found.setdefault(old, []).append(target)
    return found


class LegacyForwarder:
    """Rewrites configs on their way into the app; remembers which names it warned about."""

    def __init__(
        self,
        classes: Iterable[type],
        keep: Iterable[str],
        log: logging.Logger | logging.LoggerAdapter[Any],
        package: str = __package__ or "jupyter_agentbuild",
    ) -> None:
        #: Names the app itself still has: those are its own, never forwarded.
        keep = set(keep)
        moves = legacy_names(classes, package)
        self.moves = {old: to for old, to in moves.items() if old not in keep}
        self.log = log
        self.warned: set[str] = set()

    def forward(self, incoming: Config, current: Config) -> Config:
        """``incoming`` with its old names moved to their new sections. A new name set in
        ``incoming`` or already in ``current`` (what the app loaded before) is kept."""
        section = incoming.get(APP_SECTION)
        if not isinstance(section, Config) or not any(k in self.moves for k in section):
            return incoming
        out = copy.deepcopy(incoming)
        old_section = out[APP_SECTION]
        for old in [k for k in old_section if k in self.moves]:
            value = old_section.pop(old)
            for class_name, name in self.moves[old]:
                target = out[class_name]
                shadowed = name in target or name in current.get(class_name, {})
                if not shadowed:
                    target[name] = value
                self._warn(old, class_name, name, shadowed)
        return out

    def _warn(self, old: str, class_name: str, name: str, shadowed: bool) -> None:
        if old in self.warned:
            return
        self.warned.add(old)
        ignored = f"; ignored, as c.{class_name}.{name} is set too" if shadowed else ""
        self.log.warning(
            "c.%s.%s is deprecated: use c.%s.%s%s", APP_SECTION, old, class_name, name, ignored
        )
