"""What a preview may not do to Jupyter, through the real proxy and a real preview process:
send headers that act on Jupyter's origin, or receive a cross-site request as the user."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tests.preview.conftest import Previews

#: Headers whose effect reaches Jupyter's origin or host: none may cross.
HOSTILE = [
    ("Clear-Site-Data", '"cookies", "storage"'),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Allow-Methods", "POST"),
    ("Access-Control-Expose-Headers", "*"),
    ("Timing-Allow-Origin", "*"),
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
    ("Alt-Svc", 'h3=":443"'),
    ("NEL", '{"report_to":"x","max_age":1}'),
    ("Report-To", '{"group":"x","max_age":1,"endpoints":[{"url":"https://evil.example"}]}'),
    ("Accept-CH", "Sec-CH-UA-Full-Version-List"),
    ("Origin-Agent-Cluster", "?1"),
    ("Service-Worker-Allowed", "/"),
    ("WWW-Authenticate", 'Basic realm="jupyter"'),
    ("Refresh", "0; url=https://evil.example"),
    ("X-Accel-Redirect", "/etc/passwd"),
    ("X-Sendfile", "/etc/passwd"),
    ("Referrer-Policy", "unsafe-url"),
    ("Some-Future-Header", "1"),
]
#: What real apps (Vite, Next.js, Django, static servers) send and need.
NEEDED = [
    ("Cache-Control", "public, max-age=31536000, immutable"),
    ("ETag", 'W/"5-abc"'),
    ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ("Vary", "Accept-Encoding"),
    ("Content-Disposition", 'attachment; filename="report.csv"'),
    ("Content-Language", "en"),
    ("Link", "</assets/app.js>; rel=modulepreload"),
    ("X-Request-Id", "42"),
    ("X-Nextjs-Cache", "HIT"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Server-Timing", "db;dur=53"),
    ("Retry-After", "5"),
]


async def test_only_allowed_response_headers_reach_the_browser(previews: Previews) -> None:
    build = await previews.start()
    # as a browser that logged in asks (Jupyter adds CORS headers of its own to answers to
    # a token, whatever the preview sends)
    cookie = {"Cookie": _login_cookie(await previews.fetch(build["id"], "/tiny"), previews.port)}
    query = urlencode([("h", f"{name}: {value}") for name, value in HOSTILE + NEEDED])
    response = await previews.fetch(build["id"], f"/headers?{query}", headers=cookie, auth=False)
    assert response.code == 200, response.body
    assert response.body == b"headers"
    for name, _ in HOSTILE:
        if name == "Referrer-Policy":
            continue  # the restrictive one of NEEDED passes, the loosening one does not
        assert name not in response.headers, name
    assert response.headers.get_list("Referrer-Policy") == ["no-referrer"]
    for name, value in NEEDED:
        assert response.headers.get_list(name) == [value], name
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == "7"


def _login_cookie(response: Any, port: int) -> str:
    """The login cookie Jupyter sets for a token-authenticated request: what a browser
    that logged in holds, and sends with every request to the Jupyter origin."""
    for value in response.headers.get_list("Set-Cookie"):
        pair = value.split(";", 1)[0]
        if pair.startswith(f"username-127-0-0-1-{port}="):
            return pair
    raise AssertionError(response.headers.get_list("Set-Cookie"))


async def test_cross_site_requests_with_jupyter_cookies_are_refused(previews: Previews) -> None:
    build = await previews.start()
    bid = build["id"]
    first = await previews.fetch(bid, "/tiny")
    cookie = {"Cookie": _login_cookie(first, previews.port)}
    own = f"http://127.0.0.1:{previews.port}"
    body = b'{"delete": "everything"}'

    async def cookie_post(method: str = "POST", **headers: str) -> Any:
        return await previews.fetch(
            bid, "/echo", method=method, headers={**cookie, **headers}, body=body, auth=False
        )

    # From another site, another origin, or a sandboxed page: refused, never forwarded.
    for method, headers in [
        ("POST", {"Origin": "https://evil.example"}),
        ("PUT", {"Origin": "null"}),
        ("DELETE", {"Origin": "http://127.0.0.1:1"}),
        ("PATCH", {"Sec-Fetch-Site": "cross-site", "Origin": own}),
        ("POST", {"Sec-Fetch-Site": "same-site"}),
    ]:
        refused = await cookie_post(method, **headers)
        assert refused.code == 403, (method, headers, refused.body)
        error = json.loads(refused.body)["error"]
        assert error["code"] == "cross_site_request", error
        assert b"delete" not in refused.body

    # The same requests from Jupyter's own origin, or without browser headers, pass.
    for headers in [
        {"Origin": own},
        {"Sec-Fetch-Site": "same-origin", "Origin": own},
        {"Sec-Fetch-Site": "none"},
        {},
    ]:
        passed = await cookie_post(**headers)
        assert passed.code == 200, (headers, passed.body)
        assert json.loads(passed.body)["body_size"] == len(body)

    # Reading stays possible from anywhere (the response is the sandboxed page's own).
    read = await previews.fetch(
        bid, "/echo", headers={**cookie, "Sec-Fetch-Site": "cross-site"}, auth=False
    )
    assert read.code == 200

    # A token (curl, agents) is no ambient credential: its requests pass from anywhere.
    token = await previews.fetch(
        bid,
        "/echo",
        method="POST",
        headers={"Origin": "https://elsewhere.example", "Sec-Fetch-Site": "cross-site"},
        body=body,
    )
    assert token.code == 200, token.body
    assert json.loads(token.body)["body_size"] == len(body)
