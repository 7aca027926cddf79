"""Artifact selection: include globs with ``**``, excludes, default excludes, pruning."""

from __future__ import annotations

import pytest

from jupyter_agentbuild.artifacts.select import DEFAULT_EXCLUDES, Selection


@pytest.mark.parametrize(
    ("path", "selected"),
    [
        ("dist/index.html", True),
        ("dist/assets/deep/a.js", True),
        ("build/x", True),
        (".next/static/chunks/main.js", True),
        ("out/index.html", True),
        ("a/b/page.html", True),
        ("page.html", True),
        ("reports/junit.xml", True),
        ("reports/sub/junit.xml", False),
        ("src/main.ts", False),
        ("node_modules/pkg/index.js", False),
        ("dist/node_modules/pkg/index.js", False),
        ("dist/.git/HEAD", False),
        ("pkg/__pycache__/m.html", False),
        ("dist/.cache/x", False),
    ],
)
def test_includes_and_default_excludes(path: str, selected: bool) -> None:
    sel = Selection(["dist", "build/", ".next", "out", "**/*.html", "reports/*.xml"])
    assert sel.selects(path) is selected


def test_build_outputs_are_never_excluded_by_default() -> None:
    everything = Selection(["**"])
    for path in ["dist/a", "build/a", ".next/a", "out/a", "target/a", "coverage/a"]:
        assert everything.selects(path), path
    assert set(DEFAULT_EXCLUDES) == {".git/", "node_modules/", "__pycache__/", ".cache/"}


def test_an_exclude_list_replaces_the_defaults() -> None:
    sel = Selection(["**"], exclude=["*.map", "dist/private/"])
    assert sel.selects("node_modules/a.js")
    assert not sel.selects("dist/app.js.map") and not sel.selects("a/b/c.map")
    assert not sel.selects("dist/private/key") and sel.selects("dist/privately")
    assert Selection(["dist"], exclude=[]).selects("dist/.git/HEAD")


def test_patterns() -> None:
    assert Selection(["a/**/z"]).selects("a/z") and Selection(["a/**/z"]).selects("a/b/c/z")
    assert not Selection(["a/**/z"]).selects("b/z")
    assert Selection(["[!x]*.txt"]).selects("a.txt") and not Selection(["[!x]*.txt"]).selects(
        "x.txt"
    )
    assert Selection(["?.txt"]).selects("a.txt") and not Selection(["?.txt"]).selects("ab.txt")
    assert Selection(["."]).selects("any/thing") and not Selection(["."]).selects(".git/x")
    assert Selection(["./dist"]).selects("dist/a")
    assert Selection(["dist/"]).selects("dist/a") and not Selection(["dist/"]).selects("dist")
    assert Selection(["a+b(c)"]).selects("a+b(c)") and not Selection(["a+b(c)"]).selects("aab(c)")


def test_pruning_skips_what_cannot_match() -> None:
    sel = Selection(["dist", "reports/*.xml"])
    assert sel.prune("src") and sel.prune("node_modules") and sel.prune("reports/sub")
    assert not sel.prune("dist") and not sel.prune("dist/a") and not sel.prune("reports")
    anywhere = Selection(["**/*.html"])
    assert not anywhere.prune("src") and anywhere.prune("node_modules") and anywhere.prune("a/.git")
