"""The web page (`static/`, SPEC section 12) at /ui/: files served as they are, no build step."""
from __future__ import annotations

from pathlib import Path

from tornado import web

# beside the packages, in the checkout and in an install alike (the wheel lays static/ beside handlers/: setup.cfg)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page talks only to its own origin and never runs inline code; images, audio and
# video may be data: URLs (generated media) or links a tool returned.
CSP = ("default-src 'self'; img-src 'self' data: https: http:; media-src 'self' data: https: http:; "
       "style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class PageHandler(web.StaticFileHandler):
    def set_extra_headers(self, path: str) -> None:
        # Revalidate every time (a cheap 304): after an upgrade a browser must not mix
        # a cached old module with new ones.
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")


default_handlers = [
    (r"/ui", web.RedirectHandler, {"url": "/ui/"}),
    (r"/ui/(.*)", PageHandler, {"path": str(STATIC_DIR), "default_filename": "index.html"}),
]
