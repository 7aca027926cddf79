"""A last look at a preview that just became ready: would a browser see its page?

The sandbox calls a preview ready as soon as ``GET path`` gets any HTTP answer. An app
that answers with a redirect loop (one that expects to run under a prefix, say) or a 404
at that path is "ready" yet shows nothing: :func:`check_path` follows the redirects the
way a browser would, and says what is wrong, for a warning line in the build's log.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

#: Redirects followed before the chain is called a loop (browsers give up at ~20).
MAX_REDIRECTS = 10
#: Seconds for each request of the check.
TIMEOUT = 5.0


async def check_path(target: str, path: str, headers: Mapping[str, str]) -> str | None:
    """What a browser opening ``path`` at the preview ``target`` would run into (a
    redirect loop, a 404), or None when it gets a page (or the check cannot tell)."""
    client = SimpleAsyncHTTPClient(force_instance=True)
    base = urlsplit(target)
    url = urljoin(target, path or "/")
    seen: list[str] = []
    try:
        for _ in range(MAX_REDIRECTS + 1):
            if url in seen:
                chain = " -> ".join(urlsplit(u).path or "/" for u in [*seen, url])
                return f"the preview's page {path!r} redirects in a loop ({chain})"
            seen.append(url)
            request = HTTPRequest(
                url,
                headers=dict(headers),
                follow_redirects=False,
                request_timeout=TIMEOUT,
                connect_timeout=TIMEOUT,
            )
            response = await client.fetch(request, raise_error=False)
            if response.code in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    return None
                url = urljoin(url, location)
                if urlsplit(url).netloc != base.netloc:
                    return None  # elsewhere: not ours to follow
                continue
            if response.code == 404:
                where = urlsplit(url).path or "/"
                return (
                    f"the preview answers 404 Not Found at {where!r} (the spec's path is {path!r})"
                )
            return None
        return f"the preview's page {path!r} redirects more than {MAX_REDIRECTS} times"
    except (HTTPClientError, OSError, ValueError):
        return None  # no verdict: the sandbox already saw it answer
    finally:
        client.close()


__all__ = ["check_path"]
