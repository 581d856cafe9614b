"""The demo business's website for ``clickacall up``: a page on another origin that embeds the
call button, as a business's own site would.

It is served by a small thread of ``up`` itself on its own loopback port, so its origin
(``http://127.0.0.1:PORT``) differs from the platform's: the button, its status request and the
call overlay cross origins exactly as they do on a real site. The page carries only the snippet
a business pastes (:func:`embed_html`), a little text, and a strict CSP that allows the
platform's origin and nothing else.
"""

from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def embed_html(control_url: str, public_id: str) -> str:
    """The snippet a business pastes into its site: the async loader and the button."""
    return (
        f'<script async src="{control_url}/embed.js"></script>\n'
        f'<clickacall-button link="{public_id}"></clickacall-button>'
    )


def page(control_url: str, public_id: str, business: str) -> bytes:
    e = html.escape
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(business)}: talk to us</title>
<link rel="icon" href="data:,">
</head>
<body>
<main>
<h1>{e(business)}</h1>
<p>This is a demo of a business's own website, on an origin of its own. The button below is
the snippet the business pasted; a click calls the demo staff member.</p>
{embed_html(control_url, public_id)}
</main>
</body>
</html>
""".encode()


def csp(control_url: str) -> str:
    """What the demo site needs to allow for the button (docs/web.md lists the same)."""
    return (
        f"default-src 'self'; script-src 'self' {control_url}; connect-src {control_url}; "
        f"frame-src {control_url}; img-src 'self' data:; style-src 'self'"
    )


class DemoSite:
    """Serves :func:`page` at ``/`` on ``host:port`` (0: a free port) in a daemon thread."""

    def __init__(self, host: str, port: int, control_url: str, public_id: str, name: str) -> None:
        body = page(control_url, public_id, name)
        policy = csp(control_url)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path.split("?")[0] != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Security-Policy", policy)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no visitor addresses in the terminal

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> DemoSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
