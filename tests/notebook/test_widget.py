"""The build widget without a kernel: values it sets, links it writes, what it never embeds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jupyter_agentbuild.client import Build, ServerInfo
from jupyter_agentbuild.widgets import BuildWidget, PreviewPanel

SERVER = ServerInfo("http://127.0.0.1:9999/user/alice/", "s3cret-token")


def make_build(**fields: Any) -> Build:
    base = {
        "id": "b-123",
        "name": "site <b>",
        "status": "running",
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": "2026-01-01T00:00:01Z",
        "finished_at": None,
        "last_seq": 0,
        "spec": {"steps": [{"run": "make"}]},
    }
    base.update(fields)
    return Build(base)


def all_html(widget: BuildWidget) -> str:
    parts = [
        widget.title_html.value,
        widget.badge_html.value,
        widget.hidden_html.value,
        widget.artifacts_html.value,
    ]
    parts += [b.value for b in widget.log_box.children]
    parts += [getattr(c, "value", "") for c in widget.preview.children]
    return "\n".join(parts)


def test_header_and_log_rendering() -> None:
    widget = BuildWidget(make_build(), SERVER, block_lines=2, max_blocks=2)
    assert "site &lt;b&gt;" in widget.title_html.value
    assert "running" in widget.badge_html.value
    widget.add_entries(
        [
            {
                "seq": 1,
                "kind": "event",
                "type": "step_started",
                "data": {"step": 0, "name": "make"},
            },
            {"seq": 2, "kind": "log", "stream": "stdout", "text": "\x1b[31m<i>red</i>\x1b[0m"},
        ]
    )
    widget.flush()
    assert widget.step_text.value == "step 1/1 make"
    blocks = widget.log_box.children
    assert len(blocks) == 1
    assert "&lt;i&gt;red&lt;/i&gt;" in blocks[0].value
    assert "<i>" not in blocks[0].value
    widget.close()


def test_cap_hidden_count_and_full_log_link() -> None:
    widget = BuildWidget(make_build(), SERVER, block_lines=10, max_blocks=3)
    widget.add_entries(
        [{"seq": i, "kind": "log", "stream": "stdout", "text": f"l{i}"} for i in range(1, 101)]
    )
    widget.flush()
    assert widget.log_buffer.shown == 30
    assert "70 earlier lines" in widget.hidden_html.value
    assert 'href="/user/alice/agentbuild/api/builds/b-123/logs' in widget.hidden_html.value
    # Newest block first: the column-reverse box shows it at the bottom.
    assert "l100" in widget.log_box.children[0].value
    assert len(widget.log_box.children) == 3
    widget.close()


def test_terminal_status_hides_cancel_and_shows_badge() -> None:
    widget = BuildWidget(make_build(), SERVER)
    widget.add_entries(
        [{"seq": 1, "kind": "event", "type": "status", "data": {"status": "failed"}}]
    )
    widget.flush()
    assert "failed" in widget.badge_html.value
    assert "#c62828" in widget.badge_html.value
    assert widget.cancel_button.layout.display == "none"
    widget.close()


def test_artifacts_and_preview_links_are_relative_and_tokenless() -> None:
    # A path-like or non-http ``url`` (an older server, or anything odd) is never an
    # origin of its own: the frame falls back to the path proxy in an opaque origin.
    build = make_build(
        status="succeeded",
        finished_at="2026-01-01T00:00:05Z",
        artifacts={"count": 1, "total_size": 10},
        preview={"state": "ready", "url": "javascript:alert(1)//http://evil.example/"},
    )
    widget = BuildWidget(build, SERVER)
    widget.show_artifacts([{"path": "dist/<a>.html", "size": 10, "sha256": "ab" * 32}], 10)
    widget.preview.update(build.get("preview"), "/index.html")
    html = all_html(widget)
    assert 'href="/user/alice/agentbuild/api/builds/b-123/artifacts/dist/%3Ca%3E.html"' in html
    assert "artifacts.zip" in html and "artifacts.tar.gz" in html
    assert 'src="/user/alice/agentbuild/preview/b-123/index.html"' in html
    assert 'sandbox="allow-scripts' in html and "allow-same-origin" not in html
    assert "evil.example" not in html
    assert "s3cret-token" not in html
    assert "token" not in html
    widget.close()


OWN = "http://p7-abcdefghijklmnopqrstuvwxyz.localhost:9999/"


def test_preview_on_its_own_origin_keeps_its_origin_and_hints_at_the_tab() -> None:
    panel = PreviewPanel(SERVER, "b-7")
    path_url = "/user/alice/agentbuild/preview/b-7/"
    panel.update({"state": "ready", "url": OWN, "path_url": path_url}, "/app/index.html")
    assert panel.src == OWN + "app/index.html"
    frame = panel.frame_html.value
    assert f'src="{OWN}app/index.html"' in frame
    sandbox = frame.split('sandbox="', 1)[1].split('"', 1)[0].split()
    assert sorted(sandbox) == sorted(
        "allow-scripts allow-same-origin allow-forms allow-popups allow-modals "
        "allow-downloads".split()
    )
    assert f'href="{OWN}app/index.html"' in panel.bar_html.value  # "open in new tab"
    assert 'target="_blank"' in panel.bar_html.value
    assert "third-party storage" in panel.hint_html.value and panel.hint_html in panel.children
    assert "s3cret-token" not in frame + panel.bar_html.value
    panel.close()


@pytest.mark.parametrize(
    "url",
    [
        None,  # no usable origin: the server leaves it out
        "/user/alice/agentbuild/preview/b-7/",  # older servers: the path as ``url``
        "http://127.0.0.1:9999/user/alice/agentbuild/preview/b-7/",  # not at ``/``
        "http://user@p7-x.localhost:9999/",  # userinfo: not a plain origin
        "javascript:alert(1)",
    ],
)
def test_preview_without_an_own_origin_uses_the_path_proxy_in_an_opaque_origin(
    url: str | None,
) -> None:
    panel = PreviewPanel(SERVER, "b-7")
    panel.update({"state": "ready", "url": url, "path_url": "/user/alice/agentbuild/preview/b-7/"})
    frame = panel.frame_html.value
    assert 'src="/user/alice/agentbuild/preview/b-7/"' in frame
    assert "allow-scripts" in frame and "allow-same-origin" not in frame
    assert "Jupyter&#x27;s origin" in panel.hint_html.value
    panel.close()


def test_preview_states() -> None:
    panel = PreviewPanel(SERVER, "b-1")
    panel.update(None)
    assert len(panel.children) == 0
    panel.update({"state": "starting"})
    assert "starting" in panel.bar_html.value and panel.bar_html in panel.children
    assert "iframe" not in panel.frame_html.value
    panel.update({"state": "ready"})
    assert "<iframe" in panel.frame_html.value
    panel.update({"state": "stopped"})
    assert panel.frame_html.value == ""
    panel.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_close_cancels_the_follower() -> None:
    widget = BuildWidget(make_build(), SERVER)
    started = asyncio.Event()

    async def forever() -> Any:
        started.set()
        await asyncio.Event().wait()

    widget.run = forever  # type: ignore[method-assign]
    widget.follow()
    task = widget.task
    assert task is not None
    await started.wait()
    widget.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
