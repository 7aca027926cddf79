"""``python -m jupyter_agentbuild.contract --check | --write``: keep the schema's states
equal to :mod:`jupyter_agentbuild.vocabulary` (see :mod:`.generate`)."""

from __future__ import annotations

import argparse
import sys

from .generate import SCHEMA_PATH, is_current, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_agentbuild.contract")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="exit 1 if the schema is out of date")
    action.add_argument("--write", action="store_true", help="rewrite the schema's states")
    options = parser.parse_args(argv)
    if options.write:
        changed = write()
        print(f"{SCHEMA_PATH}: {'rewritten' if changed else 'already current'}")
        return 0
    if is_current():
        return 0
    print(
        f"{SCHEMA_PATH} is out of date with jupyter_agentbuild/vocabulary.py: "
        "run `python -m jupyter_agentbuild.contract --write`",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
