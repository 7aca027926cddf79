"""``python -m jupyter_agentbuild.contract --check | --write``: keep the schema's states
equal to :mod:`jupyter_agentbuild.vocabulary` (see :mod:`.generate`)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from .generate import SCHEMA_PATH, generated_text, write

#: Lines of the difference shown by ``--check``: enough to see which list drifted.
DIFF_LINES = 40


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_agentbuild.contract")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 if the schema is out of date")
    action.add_argument("--write", action="store_true", help="rewrite the schema's states")
    parser.add_argument("--schema", type=Path, default=SCHEMA_PATH, help="the file (tests)")
    options = parser.parse_args(argv)
    path: Path = options.schema
    if options.write:
        changed = write(path)
        print(f"{path}: {'rewritten' if changed else 'already current'}")
        return 0
    current, wanted = path.read_text(encoding="utf-8"), generated_text(path)
    if current == wanted:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(),
        wanted.splitlines(),
        f"{path.name} (as it is)",
        f"{path.name} (from vocabulary.py)",
        lineterm="",
    )
    print("\n".join(list(diff)[:DIFF_LINES]), file=sys.stderr)
    print(
        f"{path} is out of date with jupyter_agentbuild/vocabulary.py: "
        "run `python -m jupyter_agentbuild.contract --write`",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
