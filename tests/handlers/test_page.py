"""The static page at /ui/: served as is, with headers that keep it fresh and unframeable."""
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "static"


async def test_page_files(alice):
    resp = await alice.request("GET", "/ui/", headers={})
    assert resp.code == 200 and resp.headers["Content-Type"].startswith("text/html")
    html = resp.body.decode()
    assert '<script type="module" src="js/app.js">' in html
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    for module in ("app", "api", "chat", "markdown", "stream"):
        js = await alice.request("GET", f"/ui/js/{module}.js")
        assert js.code == 200 and "javascript" in js.headers["Content-Type"], module
    assert (await alice.request("GET", "/ui/app.css")).headers["Content-Type"].startswith("text/css")
    assert (await alice.request("GET", "/ui")).headers["Location"] == "/ui/"


async def test_page_is_self_contained_and_small():
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    # 60 KiB until the linear-time Markdown scanner (issue 9) added 7 KB; still no library, no build step
    assert sum(p.stat().st_size for p in files) < 70 * 1024
    for path in files:
        text = path.read_text()
        # nothing fetched from elsewhere at run time (works offline); no HTML parsing of data
        assert not re.search(r"""(src|href)=["']https?://|@import|url\(["']?https?:""", text), path
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path


async def test_nothing_outside_static(alice):
    for path in ("/ui/../server.py", "/ui/%2e%2e/server.py", "/ui/js/../../server.py", "/ui/missing.js"):
        resp = await alice.request("GET", path)
        assert resp.code in (403, 404), (path, resp.code)
        assert b"import" not in resp.body
