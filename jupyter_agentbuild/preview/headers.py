"""What crosses the proxy: request and response headers, cookies, query, redirects.

Pure functions, so every rule of the security model (docs/security.md and docs/previews.md) has a unit
test: hop-by-hop headers never cross; the user's Jupyter credentials (``Authorization``,
the ``token`` query argument, the ``_xsrf``, login and JupyterHub cookies, Jupyter's XSRF
header) never reach the sandbox, and the sandbox cannot set those cookies; the
``X-Forwarded-*`` headers are the same for plain requests and WebSocket upgrades; a
redirect to the upstream's own address comes back under the public prefix; a response
header crosses only when it is on the allow-list (nothing that acts on Jupyter's origin:
``Clear-Site-Data``, ``Access-Control-*``...); a state-changing request from another site
with Jupyter's cookies is told apart from one with a token.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

from tornado.httputil import HTTPHeaders

#: RFC 9110 §7.6.1 connection-specific fields, plus the de-facto ``Proxy-Connection``.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

#: Request headers the proxy never forwards: credentials, the client's own idea of the
#: forwarding chain (replaced by ours), ``Expect`` (the proxy streams bodies itself).
_DROP_REQUEST = frozenset(
    {
        "host",
        "authorization",
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-proto",
        "x-real-ip",
        "x-xsrftoken",
        "x-csrftoken",
    }
)
#: Response headers a preview may send, by name: what real apps (Vite, Next.js, Django,
#: Flask, FastAPI, static servers) need to be shown and cached. Everything else is dropped
#: (an allow-list, so a header a browser learns to obey tomorrow does not cross by default).
#: Never here: headers whose effect reaches beyond the preview's own responses, to the
#: Jupyter origin or host: ``Clear-Site-Data`` (wipes Jupyter's cookies and storage),
#: ``Access-Control-*`` / ``Timing-Allow-Origin`` (open Jupyter's origin to other sites),
#: ``Strict-Transport-Security``, ``Alt-Svc``, ``NEL`` / ``Report-To``, ``Accept-CH``,
#: ``Origin-Agent-Cluster``, ``Service-Worker-Allowed`` (origin- or host-wide state),
#: ``WWW-Authenticate`` (a credentials prompt in Jupyter's name), ``Refresh``.
_ALLOW_RESPONSE = frozenset(
    {
        # the representation
        "content-type",
        "content-length",
        "content-encoding",
        "content-language",
        "content-disposition",
        "content-range",
        "content-location",  # rewritten like Location
        "accept-ranges",
        "digest",
        "repr-digest",
        "content-digest",
        # caching and validation
        "cache-control",
        "expires",
        "pragma",
        "age",
        "etag",
        "last-modified",
        "vary",
        # redirects (rewritten), cookies (confined to the prefix), retries
        "location",
        "set-cookie",
        "retry-after",
        "allow",
        # what only describes the response or restricts the page further
        "date",
        "server",
        "link",
        "server-timing",
        "sourcemap",
        "content-security-policy",  # the app's own: added to ours, both apply
        "content-security-policy-report-only",
        "permissions-policy",
        "feature-policy",
        "cross-origin-opener-policy",
        "cross-origin-embedder-policy",
        "cross-origin-resource-policy",
        "referrer-policy",  # only its restrictive values (_REFERRER_POLICIES)
        # a WebSocket upgrade's answer (the proxy sets Upgrade and Connection itself)
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)
#: ``X-*`` fields are the apps' own (``X-Request-Id``, ``X-Total-Count``, ``X-Nextjs-Cache``,
#: ``X-Frame-Options``): browsers give no new powers to such names (RFC 6648). They cross,
#: except ours (``X-Content-Type-Options`` is set by the proxy) and those a front proxy in
#: front of Jupyter (nginx, Apache, lighttpd, LiteSpeed, Envoy) would obey: an
#: ``X-Accel-Redirect`` from a preview must never make nginx serve a file of the host.
_DENY_X_PREFIXES = (
    "x-content-type-options",
    "x-accel-",
    "x-sendfile",
    "x-lighttpd-",
    "x-litespeed-",
    "x-envoy-",
)
#: ``Referrer-Policy`` values that send no more than the browser's default does.
_REFERRER_POLICIES = frozenset(
    {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
)
# What is dropped whatever ``Connection`` names: one set lookup per header.
_NEVER_REQUEST = HOP_BY_HOP | _DROP_REQUEST
_CACHE_ALLOWED: dict[str, bool] = {}


def response_header_allowed(name: str, value: str = "") -> bool:
    """May a preview's response header ``name: value`` reach the browser? (Hop-by-hop
    fields are not: the proxy frames its own response.)"""
    lname = name.lower()
    if lname == "referrer-policy":
        tokens = {t.strip().lower() for t in value.split(",") if t.strip()}
        return bool(tokens) and tokens <= _REFERRER_POLICIES
    allowed = _CACHE_ALLOWED.get(lname)
    if allowed is None:
        allowed = lname not in HOP_BY_HOP and (
            lname in _ALLOW_RESPONSE
            or (lname.startswith("x-") and not lname.startswith(_DENY_X_PREFIXES))
        )
        if len(_CACHE_ALLOWED) < 4096:  # names come from previews: the cache stays bounded
            _CACHE_ALLOWED[lname] = allowed
    return allowed


#: Methods that change state. A browser may send them with Jupyter's cookies from another
#: site (a form, a ``fetch`` with credentials): on the path-proxied preview, which lives
#: on Jupyter's own origin, such a request is refused unless it carries a token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_request(method: str, headers: HTTPHeaders, *, host: str) -> bool:
    """Does this state-changing request come from a page of another site or origin?
    ``Sec-Fetch-Site`` says so when the browser sends it (anything but ``same-origin`` or
    ``none``: a same-site subdomain is another origin too); otherwise an ``Origin`` whose
    host is not ``host`` (``null`` included: a sandboxed page). The scheme is not compared:
    behind a TLS-terminating front proxy the server sees ``http`` for an ``https`` page.
    Without either header the client is not a browser page (curl with a cookie jar)."""
    if method.upper() in SAFE_METHODS:
        return False
    site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if site:
        return site not in ("same-origin", "none")
    origin = headers.get("Origin")
    if origin is None:
        return False
    try:
        netloc = urlsplit(origin.strip()).netloc
    except ValueError:
        return True
    return not netloc or netloc.lower() != host.lower()


#: Query arguments that carry Jupyter credentials.
CREDENTIAL_ARGS = frozenset({"token"})


def is_jupyter_cookie(name: str, extra: Collection[str] = ()) -> bool:
    """Is ``name`` one of Jupyter's cookies: ``_xsrf``, ``username-*`` (the login cookie),
    ``jupyterhub-*``, or a configured name in ``extra`` (also behind ``__Host-``/``__Secure-``)?"""
    name = name.strip()
    bare = name
    for prefix in ("__Host-", "__Secure-"):
        if bare.startswith(prefix):
            bare = bare[len(prefix) :]
    return (
        bare == "_xsrf"
        or bare.startswith(("username-", "jupyterhub-"))
        or name in extra
        or bare in extra
    )


def filter_cookie_header(value: str, extra: Collection[str] = ()) -> str:
    """A ``Cookie`` header without Jupyter's cookies (order and spelling of the rest kept)."""
    kept = []
    for part in value.split(";"):
        item = part.strip()
        if not item:
            continue
        name = item.split("=", 1)[0]
        if not is_jupyter_cookie(name, extra):
            kept.append(item)
    return "; ".join(kept)


def strip_credentials(query: str) -> str:
    """The query string without ``token=`` arguments; everything else byte for byte."""
    if not query:
        return ""
    parts = query.split("&")
    kept = [p for p in parts if unquote_plus(p.split("=", 1)[0]) not in CREDENTIAL_ARGS]
    return query if len(kept) == len(parts) else "&".join(kept)


def _connection_tokens(headers: HTTPHeaders) -> set[str]:
    tokens: set[str] = set()
    for value in headers.get_list("Connection"):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def forwarded_headers(
    *, remote_ip: str | None, protocol: str, host: str, prefix: str
) -> dict[str, str]:
    """The ``X-Forwarded-*`` set, built once per request and used alike for HTTP and
    WebSocket upgrades. ``prefix`` is the public path without its trailing slash."""
    out = {
        "X-Forwarded-Proto": protocol,
        "X-Forwarded-Host": host,
        "X-Forwarded-Prefix": prefix,
    }
    if remote_ip:
        out["X-Forwarded-For"] = remote_ip
    return out


def request_headers(
    incoming: HTTPHeaders,
    *,
    upstream_host: str,
    forwarded: Mapping[str, str],
    cookie_names: Collection[str] = (),
    websocket: bool = False,
    extra: Mapping[str, str] | None = None,
) -> HTTPHeaders:
    """The headers sent upstream for ``incoming``: hop-by-hop fields (and those named by
    ``Connection``) removed, credentials removed, ``Host`` = the upstream's own address
    (what dev servers' host checks accept), ``X-Forwarded-*`` from ``forwarded``."""
    drop = _connection_tokens(incoming)
    out = HTTPHeaders()
    for name, value in incoming.get_all():
        lname = name.lower()
        if lname in _NEVER_REQUEST or lname in drop:
            continue
        if lname == "cookie":
            value = filter_cookie_header(value, cookie_names)
            if not value:
                continue
        out.add(name, value)
    out["Host"] = upstream_host
    if websocket:
        # the browser's handshake goes on as it is (key, version, protocols, extensions):
        # the preview's answer is the browser's, and the connection becomes a tunnel
        out["Connection"] = "Upgrade"
        out["Upgrade"] = "websocket"
    for name, value in forwarded.items():
        out[name] = value
    for name, value in (extra or {}).items():  # the sandbox's own (a cloud traffic token)
        out[name] = value
    return out


@dataclass(frozen=True)
class ResponseRewriter:
    """Rewrites what comes back: redirects under the prefix, cookies confined to it."""

    #: The public path of the preview, without its trailing slash: ``/base/agentbuild/preview/ID``.
    prefix: str
    #: ``host:port`` spellings of the upstream (``127.0.0.1:8000``, ``localhost:8000``).
    upstream_netlocs: frozenset[str]
    cookie_names: frozenset[str] = frozenset()
    #: Response headers passed on as they are besides the allow-list (none on Jupyter's
    #: origin).
    also_allowed: frozenset[str] = frozenset()

    def headers(self, upstream: HTTPHeaders) -> Iterable[tuple[str, str]]:
        """The response headers to pass on, rewritten, in their order (duplicates kept)."""
        drop = _connection_tokens(upstream)
        for name, value in upstream.get_all():
            lname = name.lower()
            if lname in drop:
                continue
            if lname in self.also_allowed:
                yield name, value
                continue
            if not response_header_allowed(lname, value):
                continue
            if lname in ("location", "content-location"):
                value = self.location(value)
            elif lname == "set-cookie":
                rewritten = self.set_cookie(value)
                if rewritten is None:
                    continue
                value = rewritten
            yield name, value

    def _under_prefix(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    def location(self, value: str) -> str:
        """``http://127.0.0.1:PORT/x`` and ``/x`` (the app's own root) become ``PREFIX/x``;
        other hosts, relative references and paths already under the prefix are kept."""
        try:
            parts = urlsplit(value.strip())
        except ValueError:
            return value
        if parts.netloc:
            if parts.scheme not in ("", "http", "https", "ws", "wss"):
                return value
            if parts.netloc.lower() not in self.upstream_netlocs:
                return value
        elif parts.scheme or not parts.path.startswith("/"):
            return value  # relative reference: the browser resolves it under the prefix
        path = parts.path or "/"
        if self._under_prefix(path):
            if not parts.netloc:
                return value
            out = path  # an app that knows its prefix, but not the public host
        else:
            out = self.prefix + path
        if parts.query:
            out += "?" + parts.query
        if parts.fragment:
            out += "#" + parts.fragment
        return out

    def set_cookie(self, value: str) -> str | None:
        """None for a cookie named like Jupyter's (the sandbox may not set those); else the
        cookie with its ``Path`` moved under the prefix so it never reaches Jupyter itself."""
        attrs = value.split(";")
        name = attrs[0].split("=", 1)[0]
        if is_jupyter_cookie(name, self.cookie_names):
            return None
        for index, attr in enumerate(attrs[1:], start=1):
            key, _, path = attr.partition("=")
            if key.strip().lower() != "path":
                continue
            path = path.strip()
            if path.startswith("/") and not self._under_prefix(path):
                attrs[index] = f" Path={self.prefix}{path}"
        return ";".join(attrs)


#: Response headers refused on Jupyter's origin (where they would act on Jupyter) that an
#: app may send on its own origin, where they only concern the app: CORS for its API, its
#: service worker's scope. (Not ``Clear-Site-Data``: its "cookies" reach the whole
#: registrable domain, other previews' and perhaps Jupyter's.)
OWN_ORIGIN_ALLOW = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
        "timing-allow-origin",
        "service-worker-allowed",
        "origin-agent-cluster",
    }
)


@dataclass(frozen=True)
class OwnOriginRewriter(ResponseRewriter):
    """On a preview's own origin: redirects to the upstream's address become paths of
    this origin; cookies keep their path but lose any ``Domain`` (host-only: a preview
    cannot toss a cookie to a sibling or parent domain, where Jupyter may live). The
    response header allow-list is the path proxy's plus :data:`OWN_ORIGIN_ALLOW`."""

    also_allowed: frozenset[str] = OWN_ORIGIN_ALLOW

    def set_cookie(self, value: str) -> str | None:
        kept = super().set_cookie(value)
        if kept is None:
            return None
        attrs = kept.split(";")
        return ";".join(
            [attrs[0]] + [a for a in attrs[1:] if a.split("=", 1)[0].strip().lower() != "domain"]
        )


__all__ = [
    "CREDENTIAL_ARGS",
    "HOP_BY_HOP",
    "OWN_ORIGIN_ALLOW",
    "SAFE_METHODS",
    "OwnOriginRewriter",
    "ResponseRewriter",
    "cross_site_request",
    "filter_cookie_header",
    "forwarded_headers",
    "is_jupyter_cookie",
    "request_headers",
    "response_header_allowed",
    "strip_credentials",
]
