"""Own-origin previews: the capability label, the host names that carry it, the URL.

A preview is served on an origin of its own, whose host name carries a capability:
``p{build_id}-{secret}`` (the *label*), the secret 130 random bits in lowercase base32
(DNS-safe), minted at each preview start and forgotten when it stops. Knowing the label
is what lets a browser reach the preview there: no Jupyter cookie or token is involved
(it works in a cross-site iframe whose third-party cookies are blocked), and the page is
a separate site from Jupyter, so it can never act as the user in Jupyter.

Which host names are preview hosts (:class:`PreviewOrigins`):

- ``{label}.localhost`` always: Chromium, Firefox and Edge resolve ``*.localhost`` to
  loopback, so a personal server needs no configuration;
- the host of ``preview_origin_template`` (``https://{label}.previews.example.org``) in a
  deployment with wildcard DNS and TLS in front.

The URL a client is given (:meth:`PreviewOrigins.url`) is computed per request: the
template when there is one; else ``{scheme}://{label}.localhost:{port}/`` when the
request that reads the build came to a loopback name; else nothing (the caller falls
back to the path proxy's URL).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Random bytes in a label's secret: 130 bits once base32-encoded in 26 characters.
SECRET_BYTES = 17
SECRET_CHARS = 26
#: A label: ``p`` + the build id (lowercase hex, as the service makes them) + ``-`` + the
#: secret. At most 63 characters: one DNS label.
LABEL_RE = rf"p[0-9a-z]{{1,32}}-[a-z2-7]{{{SECRET_CHARS}}}"
_LABEL = re.compile(rf"p(?P<build_id>[0-9a-z]{{1,32}})-(?P<secret>[a-z2-7]{{{SECRET_CHARS}}})")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def mint_label(build_id: str) -> str:
    """A fresh label for a preview of ``build_id`` (a new secret at every start)."""
    raw = base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")
    return f"p{build_id.lower()}-{raw[:SECRET_CHARS].lower()}"


def parse_label(label: str) -> tuple[str, str] | None:
    """``(build_id, label)`` of a well-formed label, else None."""
    match = _LABEL.fullmatch(label)
    return (match["build_id"], label) if match else None


def same_label(known: str | None, given: str) -> bool:
    """Constant-time comparison: timing never tells how much of a guess was right."""
    return known is not None and hmac.compare_digest(known.encode(), given.encode())


class TemplateError(ValueError):
    """``preview_origin_template`` cannot give preview origins."""


@dataclass(frozen=True)
class PreviewOrigins:
    """Which host names are preview hosts, and what URL a client is given."""

    #: ``scheme://host[:port]`` with ``{label}`` in the host, or "" (loopback only).
    template: str = ""

    @staticmethod
    def check_template(template: str) -> str:
        """The template normalised (no trailing slash), or TemplateError saying why not."""
        template = template.strip()
        if not template:
            return ""
        if template.count("{label}") != 1:
            raise TemplateError("it must contain {label} exactly once, in the host name")
        try:
            parts = urlsplit(template.replace("{label}", "plabel"))
            _ = parts.port
        except ValueError as exc:
            raise TemplateError(f"it is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise TemplateError("it must start with http:// or https://")
        host = re.sub(r":\d*$", "", parts.netloc)  # as written (hostname lowercases)
        if "plabel" not in host or "@" in parts.netloc:
            raise TemplateError("{label} must be in the host name")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise TemplateError("the app is served at /: no path, query or fragment")
        pattern = host.replace("plabel", "{label}")
        if not re.fullmatch(r"[a-z0-9.{}-]+", pattern) or not host.replace("plabel", "").strip("."):
            raise TemplateError("the host name must be lowercase DNS: letters, digits, '-', '.'")
        return template.rstrip("/")

    @property
    def host_pattern(self) -> str:
        """A regular expression for tornado's host matching (the host name, no port):
        ``{label}.localhost`` and the template's host."""
        hosts = [rf"(?:{LABEL_RE})\.localhost"]
        if self.template:
            host = urlsplit(self.template.replace("{label}", "plabel")).hostname or ""
            escaped = re.escape(host).replace("plabel", f"(?:{LABEL_RE})")
            if escaped != hosts[0]:
                hosts.append(escaped)
        return "^(?:" + "|".join(hosts) + ")$"

    def label_of(self, host_name: str) -> str | None:
        """The label a preview host name carries (its first DNS label), or None."""
        label = host_name.lower().split(".", 1)[0]
        return label if parse_label(label) is not None else None

    def url(self, label: str, *, scheme: str, request_host: str) -> str | None:
        """The own-origin URL of the preview for a client whose request came to
        ``request_host`` (``host[:port]``); None when there is no usable origin."""
        if self.template:
            return self.template.replace("{label}", label) + "/"
        host, port = _split_host(request_host)
        if host not in _LOOPBACK_NAMES and not is_loopback_ip(host):
            return None
        scheme = scheme if scheme in ("http", "https") else "http"
        suffix = f":{port}" if port else ""
        return f"{scheme}://{label}.localhost{suffix}/"


def _split_host(netloc: str) -> tuple[str, str]:
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        return host, rest[1:] if rest.startswith(":") and rest[1:].isdigit() else ""
    host, _, port = netloc.partition(":")
    return host, port if port.isdigit() else ""


def is_loopback_ip(host: str) -> bool:
    """Is ``host`` a loopback address? Brackets, an IPv6 zone and the IPv4-mapped form
    (``::ffff:127.0.0.1``, which Python before 3.13 does not call loopback) allowed."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


__all__ = [
    "LABEL_RE",
    "is_loopback_ip",
    "PreviewOrigins",
    "TemplateError",
    "mint_label",
    "parse_label",
    "same_label",
]
