"""Preview origins: labels, host names, the URL a client is given, the template check;
and a server configured with a template, routing its host names."""

from __future__ import annotations

import re
from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_agentbuild.preview.manager import PreviewManager
from jupyter_agentbuild.preview.origin import (
    PreviewOrigins,
    TemplateError,
    is_loopback_ip,
    mint_label,
    parse_label,
    same_label,
)
from tests.conftest import server_config
from tests.preview.conftest import Previews

TEMPLATE = "http://{label}.previews.example.test"


def test_labels_are_fresh_dns_labels_carrying_the_build() -> None:
    labels = {mint_label("0123456789abcdef") for _ in range(200)}
    assert len(labels) == 200  # a new secret at every start
    for label in labels:
        assert len(label) <= 63 and re.fullmatch(r"[a-z0-9-]+", label)
        assert parse_label(label) == ("0123456789abcdef", label)
    one = next(iter(labels))
    assert same_label(one, one) and not same_label(one, one[:-1] + "x")
    assert not same_label(None, one)
    for bad in ("p-abc", "x0123-" + "a" * 26, one + "a", one[:-1], one.replace("-", "_")):
        assert parse_label(bad) is None


@pytest.mark.parametrize(
    ("request_host", "scheme", "expected"),
    [
        ("127.0.0.1:8888", "http", "http://{l}.localhost:8888/"),
        ("localhost:8888", "http", "http://{l}.localhost:8888/"),
        ("[::1]:9000", "https", "https://{l}.localhost:9000/"),
        ("localhost", "http", "http://{l}.localhost/"),
        ("127.0.0.2:8888", "http", "http://{l}.localhost:8888/"),
        ("jupyter.example.org", "https", None),  # remote and no template: the path URL
        ("10.0.0.5:8888", "http", None),
    ],
)
def test_the_url_given_to_a_client(request_host: str, scheme: str, expected: str | None) -> None:
    label = mint_label("ab12")
    got = PreviewOrigins().url(label, scheme=scheme, request_host=request_host)
    assert got == (expected.format(l=label) if expected else None)
    templated = PreviewOrigins(TEMPLATE).url(label, scheme=scheme, request_host=request_host)
    assert templated == f"http://{label}.previews.example.test/"


def test_host_names_of_previews() -> None:
    label = mint_label("ab12")
    origins = PreviewOrigins(TEMPLATE)
    pattern = re.compile(origins.host_pattern)
    assert pattern.match(f"{label}.localhost") and pattern.match(f"{label}.previews.example.test")
    for host in (
        "localhost",
        "previews.example.test",
        f"x.{label}.localhost",
        f"{label}.localhost.evil.test",
        f"{label}.previews.example.test.evil",
        f"{label}xpreviews.example.test",
    ):
        assert not pattern.match(host), host
    assert origins.label_of(f"{label.upper()}.previews.example.test") == label
    assert origins.label_of("www.localhost") is None


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("https://previews.example.org", "exactly once"),
        ("https://{label}.{label}.example.org", "exactly once"),
        ("ftp://{label}.example.org", "http"),
        ("https://example.org/{label}/", "host name"),
        ("https://{label}.example.org/sub", "no path"),
        ("https://{label}.Example.org", "lowercase"),
        ("https://{label}", "lowercase"),
        ("https://{label}.example.org:99999", "not a URL"),
    ],
)
def test_bad_templates_are_refused_at_start_up(template: str, why: str) -> None:
    with pytest.raises(TemplateError, match=why):
        PreviewOrigins.check_template(template)
    with pytest.raises(TraitError, match="PreviewManager.origin_template"):
        PreviewManager(None, {}, origin_template=template)  # type: ignore[arg-type]


def test_a_good_template_is_normalised() -> None:
    assert PreviewOrigins.check_template(" https://{label}.p.example.org:8443/ ") == (
        "https://{label}.p.example.org:8443"
    )
    manager = PreviewManager(None, {}, origin_template=TEMPLATE + "/")  # type: ignore[arg-type]
    assert manager.origin_template == TEMPLATE


@pytest.fixture
def jp_server_config(agentbuild_config: dict[str, Any]) -> Config:
    return server_config({**agentbuild_config, "preview_origin_template": TEMPLATE})


async def test_a_deployment_template_gives_the_url_and_routes_its_hosts(previews: Previews) -> None:
    build = await previews.start()
    url = build["preview"]["url"]
    match = re.fullmatch(r"http://(?P<label>[a-z0-9-]+)\.previews\.example\.test/", url)
    assert match, url
    host = f"{match['label']}.previews.example.test"
    page = await previews.own(host, "/tiny")
    assert page.code == 200 and page.body == b"ok"
    local = await previews.own(f"{match['label']}.localhost:{previews.port}", "/tiny")
    assert local.code == 200  # loopback names keep working
    other = await previews.own(f"p{'1' * 16}-{'b' * 26}.previews.example.test", "/tiny")
    assert other.code == 404


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack socket's view of an IPv4 loopback peer
        ("::ffff:192.0.2.2", False),
        ("fe80::1%eth0", False),
        ("192.0.2.2", False),
        ("localhost", False),  # a name, not an address
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback_ip(host) is loopback
