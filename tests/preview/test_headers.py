"""The rules of what crosses the proxy, one function at a time (no server needed)."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from jupyter_agentbuild.preview.headers import (
    ResponseRewriter,
    cross_site_request,
    filter_cookie_header,
    forwarded_headers,
    is_jupyter_cookie,
    request_headers,
    response_header_allowed,
    strip_credentials,
)

PREFIX = "/user/a%40b/agentbuild/preview/abc"
REWRITER = ResponseRewriter(
    prefix=PREFIX,
    upstream_netlocs=frozenset({"127.0.0.1:8123", "localhost:8123"}),
    cookie_names=frozenset({"my-login"}),
)


@pytest.mark.parametrize(
    "name",
    [
        "_xsrf",
        "username-localhost-8888",
        "jupyterhub-session-id",
        "jupyterhub-user-alice",
        "__Host-jupyterhub-hub-login",
        "__Secure-username-x",
        "my-login",
    ],
)
def test_jupyter_cookies_are_recognised(name: str) -> None:
    assert is_jupyter_cookie(name, {"my-login"})


@pytest.mark.parametrize("name", ["session", "xsrf", "_xsrf2", "user", "hub-session", "csrftoken"])
def test_app_cookies_are_not(name: str) -> None:
    assert not is_jupyter_cookie(name, {"my-login"})


def test_cookie_header_keeps_only_app_cookies() -> None:
    value = "_xsrf=2|abc; app=1; username-localhost-8888=secret;jupyterhub-session-id=x;  b=2=3"
    assert filter_cookie_header(value) == "app=1; b=2=3"
    assert filter_cookie_header("_xsrf=1; username-h=2") == ""


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("a=1&b=2", "a=1&b=2"),
        ("token=abc", ""),
        ("a=1&token=abc&b=%2F+x&a=2", "a=1&b=%2F+x&a=2"),
        ("%74oken=abc&tokens=1&x=token", "tokens=1&x=token"),
        ("a=%20&&b", "a=%20&&b"),
    ],
)
def test_token_query_argument_is_removed_and_the_rest_kept_verbatim(
    query: str, expected: str
) -> None:
    assert strip_credentials(query) == expected


def test_request_headers_drop_hop_by_hop_and_credentials() -> None:
    incoming = HTTPHeaders()
    for name, value in [
        ("Host", "jupyter.example.org"),
        ("Authorization", "token SECRET"),
        ("Proxy-Authorization", "Basic x"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "dropped because Connection names it"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Expect", "100-continue"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-XSRFToken", "abc"),
        ("Cookie", "_xsrf=1; app=2; username-h-1=3"),
        ("X-Custom", "one"),
        ("X-Custom", "two"),
        ("Content-Length", "12"),
    ]:
        incoming.add(name, value)
    forwarded = forwarded_headers(
        remote_ip="10.0.0.7", protocol="https", host="jupyter.example.org", prefix=PREFIX
    )
    out = request_headers(incoming, upstream_host="127.0.0.1:8123", forwarded=forwarded)
    assert sorted(out.get_all()) == sorted(
        [
            ("Host", "127.0.0.1:8123"),
            ("Cookie", "app=2"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Content-Length", "12"),
            ("X-Forwarded-For", "10.0.0.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "jupyter.example.org"),
            ("X-Forwarded-Prefix", PREFIX),
        ]
    )


def test_the_websocket_handshake_goes_on_as_the_browser_sent_it() -> None:
    handshake = {
        "Sec-WebSocket-Key": "k",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Extensions": "permessage-deflate",
        "Sec-WebSocket-Protocol": "chat",
        "Origin": "http://jupyter.example.org",
    }
    incoming = HTTPHeaders(
        {"Upgrade": "websocket", "Connection": "keep-alive, Upgrade", "Keep-Alive": "5"}
    )
    for name, value in handshake.items():
        incoming.add(name, value)
    forwarded = {"X-Forwarded-Proto": "http"}
    out = request_headers(incoming, upstream_host="h:1", forwarded=forwarded, websocket=True)
    expected = {**handshake, "Host": "h:1", "Connection": "Upgrade", "Upgrade": "websocket"}
    assert {k.lower(): v for k, v in out.get_all()} == {
        k.lower(): v for k, v in {**expected, **forwarded}.items()
    }
    plain = request_headers(incoming, upstream_host="h:1", forwarded=forwarded)
    assert "Upgrade" not in plain and "Connection" not in plain


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://127.0.0.1:8123/login?next=/x#top", f"{PREFIX}/login?next=/x#top"),
        ("http://localhost:8123", f"{PREFIX}/"),
        ("//127.0.0.1:8123/a", f"{PREFIX}/a"),
        ("/login", f"{PREFIX}/login"),
        ("/", f"{PREFIX}/"),
        (f"{PREFIX}/already", f"{PREFIX}/already"),
        (f"http://127.0.0.1:8123{PREFIX}/known", f"{PREFIX}/known"),
        ("relative/path", "relative/path"),
        ("../up", "../up"),
        ("https://example.org/elsewhere", "https://example.org/elsewhere"),
        ("http://127.0.0.1:9999/other-port", "http://127.0.0.1:9999/other-port"),
        ("mailto:someone@example.org", "mailto:someone@example.org"),
    ],
)
def test_redirects_to_the_upstream_come_back_under_the_prefix(location: str, expected: str) -> None:
    assert REWRITER.location(location) == expected


def test_set_cookie_of_jupyter_names_is_dropped_and_paths_confined() -> None:
    assert REWRITER.set_cookie("_xsrf=evil; Path=/") is None
    assert REWRITER.set_cookie("username-x=evil") is None
    assert REWRITER.set_cookie("jupyterhub-session-id=evil; Path=/") is None
    assert REWRITER.set_cookie("my-login=evil") is None
    assert REWRITER.set_cookie("app=1; Path=/; HttpOnly") == f"app=1; Path={PREFIX}/; HttpOnly"
    assert REWRITER.set_cookie("a=1; path=/x") == f"a=1; Path={PREFIX}/x"
    assert REWRITER.set_cookie(f"a=1; Path={PREFIX}/y") == f"a=1; Path={PREFIX}/y"
    assert REWRITER.set_cookie("a=1") == "a=1"


def test_response_headers_keep_order_and_duplicates() -> None:
    upstream = HTTPHeaders()
    for name, value in [
        ("Connection", "X-Gone"),
        ("X-Gone", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Keep-Alive", "timeout=5"),
        ("X-Content-Type-Options", "none"),
        ("Location", "/next"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "_xsrf=2"),
        ("Set-Cookie", "b=3"),
        ("Link", "</a>; rel=preload"),
        ("Link", "</b>; rel=preload"),
    ]:
        upstream.add(name, value)
    assert list(REWRITER.headers(upstream)) == [
        ("Location", f"{PREFIX}/next"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=3"),
        ("Link", "</a>; rel=preload"),
        ("Link", "</b>; rel=preload"),
    ]


def test_the_sandboxs_own_headers_are_added_and_cannot_be_forged() -> None:
    incoming = HTTPHeaders({"E2b-Traffic-Access-Token": "forged", "Accept": "*/*"})
    extra = {"e2b-traffic-access-token": "the-real-token"}
    out = request_headers(incoming, upstream_host="h", forwarded={}, extra=extra)
    assert out.get_list("E2b-Traffic-Access-Token") == ["the-real-token"]
    plain = request_headers(incoming, upstream_host="h", forwarded={}, websocket=True, extra=extra)
    assert plain.get_list("E2b-Traffic-Access-Token") == ["the-real-token"]


@pytest.mark.parametrize(
    "name",
    [
        "Clear-Site-Data",
        "Access-Control-Allow-Origin",
        "access-control-allow-credentials",
        "Timing-Allow-Origin",
        "Strict-Transport-Security",
        "Alt-Svc",
        "NEL",
        "Report-To",
        "Reporting-Endpoints",
        "Accept-CH",
        "Origin-Agent-Cluster",
        "Service-Worker-Allowed",
        "WWW-Authenticate",
        "Refresh",
        "X-Accel-Redirect",
        "X-Accel-Buffering",
        "X-Sendfile",
        "X-LiteSpeed-Location",
        "X-Content-Type-Options",
        "Transfer-Encoding",
        "Connection",
        "A-Header-Browsers-Learn-Tomorrow",
    ],
)
def test_response_headers_off_the_allow_list_never_cross(name: str) -> None:
    headers = HTTPHeaders()
    headers.add(name, "x")
    headers.add("ETag", '"1"')
    assert list(REWRITER.headers(headers)) == [("Etag", '"1"')]


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Content-Disposition",
        "Cache-Control",
        "Expires",
        "ETag",
        "Last-Modified",
        "Vary",
        "Link",
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Request-Id",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol",
    ],
)
def test_what_apps_need_crosses(name: str) -> None:
    assert response_header_allowed(name, "x")


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("no-referrer", True),
        ("same-origin, strict-origin-when-cross-origin", True),
        ("unsafe-url", False),
        ("no-referrer-when-downgrade", False),
        ("no-referrer, unsafe-url", False),
        ("", False),
    ],
)
def test_referrer_policy_may_only_restrict(value: str, allowed: bool) -> None:
    assert response_header_allowed("Referrer-Policy", value) is allowed


OWN = {"host": "jupyter.example:8888"}


@pytest.mark.parametrize(
    ("method", "headers", "cross"),
    [
        ("POST", {"Origin": "https://evil.example"}, True),
        ("POST", {"Origin": "null"}, True),
        ("DELETE", {"Origin": "http://jupyter.example:9999"}, True),  # another port
        ("DELETE", {"Origin": "http://jupyter.example"}, True),
        ("POST", {"Origin": "not a url"}, True),
        # the scheme is not compared (a TLS-terminating front proxy)
        ("POST", {"Origin": "https://jupyter.example:8888"}, False),
        ("PUT", {"Sec-Fetch-Site": "cross-site", "Origin": "http://jupyter.example:8888"}, True),
        ("PATCH", {"Sec-Fetch-Site": "same-site"}, True),
        ("POST", {"Origin": "http://JUPYTER.example:8888"}, False),
        ("POST", {"Sec-Fetch-Site": "same-origin"}, False),
        ("POST", {"Sec-Fetch-Site": "none"}, False),
        ("POST", {}, False),
        ("GET", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, False),
        ("HEAD", {"Origin": "null"}, False),
        ("OPTIONS", {"Origin": "https://evil.example"}, False),
    ],
)
def test_cross_site_requests_are_told_apart(
    method: str, headers: dict[str, str], cross: bool
) -> None:
    assert cross_site_request(method, HTTPHeaders(headers), **OWN) is cross
