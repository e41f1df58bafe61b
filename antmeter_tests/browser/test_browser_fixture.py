"""The shared browser fixtures work: Debian Chromium renders a page served on loopback."""

from __future__ import annotations

import http.server
import threading


def test_chromium_renders_a_loopback_page(page):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"<html><body><h1 id='t'>antmeter</h1><script>document.title='ok'</script></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        assert page.inner_text("#t") == "antmeter"
        assert page.title() == "ok"
        assert page.console_errors == []
    finally:
        server.shutdown()
