"""JupyterHub support for previews on origins of their own.

Under JupyterHub, browsers reach single-user servers only through the hub's proxy
(configurable-http-proxy), which routes by exact host and path. A preview's host
(``{label}.{domain}``) is new for every preview, so something must add its route:
:mod:`.routes_service`, a hub-managed service holding the proxy's API token, adds a route
from that host to the asking user's own server, and removes it when the preview stops
(:mod:`.routes_client` is what the single-user server calls).
"""
