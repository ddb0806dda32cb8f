"""Credentials scoped to an origin (`http.auth = {"https://host:port" = "user:password"}`,
or `"Bearer TOKEN"`).

The `Authorization` header is added to a request whose origin (scheme, host and port,
the default port made explicit) is one of the keys, and to no other: a redirect to
another origin, even another port of the same host, is a new request that gets none.
A request that carries its own `Authorization` header keeps it. The header is built once
at start; its value is never logged (`scraper.logs` masks Authorization headers, and
`scraper settings` shows the values as `**********`).
"""

from __future__ import annotations

import base64

from ..settings import HttpSettings, origin_key
from .base import Component, Context


def authorization(credential: str) -> str:
    """The `Authorization` value for `"user:password"` or `"Bearer TOKEN"`."""
    if credential.startswith("Bearer "):
        return credential
    return "Basic " + base64.b64encode(credential.encode("utf-8")).decode("ascii")


class AuthComponent(Component):
    name = "auth"

    def __init__(self, settings: HttpSettings) -> None:
        self._headers = {origin: authorization(secret.get_secret_value())
                         for origin, secret in settings.auth.items()}

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        try:
            origin = origin_key(request.url)
        except ValueError:
            return
        value = self._headers.get(origin)
        if value is None:
            return
        headers = request.headers or {}
        if any(name.lower() == "authorization" for name in headers):
            return
        ctx.request = request.replace(headers={**headers, "Authorization": value})

    def __repr__(self) -> str:  # never the credentials
        return f"<AuthComponent for {', '.join(sorted(self._headers))}>"
