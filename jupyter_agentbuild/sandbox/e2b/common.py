"""What the E2B sandbox and its provider share: the VM's layout and the key's redaction."""

from __future__ import annotations

import re

#: What an E2B key looks like, to blank out of error texts whatever its quoting.
_KEY_SHAPE = re.compile(r"e2b_[A-Za-z0-9_\-]+")

#: The default user's home in the VM (E2B's default user is ``user``).
HOME = "/home/user"
#: The steps' working directory in the VM.
WORK_DIR = f"{HOME}/work"


def redacted(exc: BaseException, key: str = "") -> str:
    """An SDK error's text with the key (and anything shaped like one) blanked out: every
    E2B error that reaches a log or a build's error goes through here."""
    text = str(exc).replace(key, "***") if key else str(exc)
    return _KEY_SHAPE.sub("e2b_***", text)
