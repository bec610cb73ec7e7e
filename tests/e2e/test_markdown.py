"""The page's Markdown renderer (static/js/markdown.js) in real headless Chromium.

It renders every message each time a thread opens, so a crafted message must not
freeze the tab: each pathological input is rendered at growing sizes up to
200,000 characters, timed in the page with performance.now(); a renderer that
backtracks stops at the first size over the budget (so a slow one fails in
seconds instead of hanging).  Normal Markdown renders as it always did, and
always as DOM nodes (text stays text).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Pages
from tests.process.proc import Server

BUDGET_MS = 500
SIZES = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 100_000, 200_000]

# name, prefix, unit repeated to the size, suffix; `literal`: the whole input stays text
PATHOLOGICAL: list[tuple[str, str, str, str, bool]] = [
    ("backticks", "", "`", "", True),
    ("backticks between words", "", "``a", "", False),
    ("growing backtick runs", "", "`a``b```c", "", False),
    ("stars", "", "*", "x", True),
    ("bold openers", "", "**a", "", False),
    ("underscores", "", "_", "x", True),
    ("underscore words", "", " _a", "", False),
    ("tildes", "", "~", "x", True),
    ("open brackets", "", "[", "", True),
    ("nested brackets", "", "[[a]", "", True),
    ("unclosed links", "", "[a](", "", True),
    ("unclosed link targets", "", "[a](x", "", True),
    ("nested emphasis", "", "[~~**__a", "", False),
    ("url punctuation", "http://a", ".", "", False),
    ("urls", "", "http://", " ", False),
    ("many unclosed fences", "", "```\n~~~ a\n", "", False),
    ("fence then blanks", "```", " ", "!", True),
    ("heading then blanks", "# ", " ", "a\u2028b", False),
    ("list item then blanks", "- ", " ", "a\u2028b", False),
    ("rule then text", "", "- ", "x", False),
    ("digits", "", "1", ". x", False),
    ("quote markers", "", ">", "a", False),
    ("quoted lines", "", "> > > a\n", "", False),
    ("many emphases", "", "*a* ", "", False),
]

TIMINGS_JS = """async ({cases, sizes, budget}) => {
  const { renderMarkdown } = await import('/ui/js/markdown.js');
  const box = document.createElement('div');
  const results = [];
  for (const [name, prefix, unit, suffix, literal] of cases) {
    const result = { name, chars: 0, ms: 0, error: null, literalKept: true };
    for (const size of sizes) {
      const source = prefix + unit.repeat(Math.ceil(size / unit.length)) + suffix;
      const t0 = performance.now();
      try {
        box.replaceChildren(renderMarkdown(source));
      } catch (e) {
        result.error = String(e);
        break;
      }
      result.ms = performance.now() - t0;
      result.chars = source.length;
      if (literal) result.literalKept = box.textContent === source && box.querySelectorAll('code,strong,em,del,a').length === 0;
      if (result.ms > budget) break;
    }
    results.push(result);
  }
  return results;
}"""

RENDER_JS = """async (sources) => {
  const { renderMarkdown } = await import('/ui/js/markdown.js');
  return sources.map((source) => {
    const box = document.createElement('div');
    box.append(renderMarkdown(source));
    return box.innerHTML;
  });
}"""

A = 'target="_blank" rel="noopener noreferrer nofollow"'
NORMAL: list[tuple[str, str]] = [
    ("Hello **Parley**, *you* and __them__ or _us_ ~~not~~ `x = 1` and ``a`b``.",
     "<p>Hello <strong>Parley</strong>, <em>you</em> and <strong>them</strong> or <em>us</em> <del>not</del> "
     "<code>x = 1</code> and <code>a`b</code>.</p>"),
    ("# Title\n## Sub *em*\n\nText with [a link](https://example.com/a_b) and https://example.com/path_(x), "
     "see http://x.org/a.b.",
     f'<h3>Title</h3><h4>Sub <em>em</em></h4><p>Text with <a href="https://example.com/a_b" {A}>a link</a> and '
     f'<a href="https://example.com/path_" {A}>https://example.com/path_</a>(x), see '
     f'<a href="http://x.org/a.b" {A}>http://x.org/a.b</a>.</p>'),
    ('```python\nprint("<b>hi</b>")\n```\nafter',
     '<pre><code data-lang="python">print("&lt;b&gt;hi&lt;/b&gt;")</code></pre><p>after</p>'),
    ("- one\n- **two**\n  continued `code`\n- three\n\n1. first\n2) second",
     "<ul><li>one</li><li><strong>two</strong> continued <code>code</code></li><li>three</li></ul>"
     "<ol><li>first</li><li>second</li></ol>"),
    ("> quoted *text*\n> > nested\n\n---\n\n* * *",
     "<blockquote><p>quoted <em>text</em></p><blockquote><p>nested</p></blockquote></blockquote><hr><hr>"),
    ("snake_case_name and 2*3*4 and a * b and [x](javascript:alert(1)) <img src=x onerror=alert(1)>",
     "<p>snake_case_name and 2<em>3</em>4 and a * b and [x](javascript:alert(1)) "
     "&lt;img src=x onerror=alert(1)&gt;</p>"),
    ("line one\nline two\n~~~\nraw *not em*\n~~~",
     "<p>line one<br>line two</p><pre><code>raw *not em*</code></pre>"),
    ("**[`a`](http://x.test/y) ~~_b_~~**",
     f'<p><strong><a href="http://x.test/y" {A}><code>a</code></a> <del><em>b</em></del></strong></p>'),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A plain server for the page's files (overrides the module fixture of conftest.py)."""
    base = tmp_path_factory.mktemp("markdown")
    srv = Server(base / "data", base / "server.log", demo_delay_ms=0)
    yield srv
    srv.close()


def test_pathological_inputs_render_in_linear_time(pages: Pages) -> None:
    page = pages.new()
    page.goto("/ui/")
    results: list[dict[str, Any]] = page.evaluate(TIMINGS_JS, {"cases": PATHOLOGICAL, "sizes": SIZES, "budget": BUDGET_MS})
    slow = [r for r in results if r["error"] or r["chars"] < SIZES[-1] or r["ms"] >= BUDGET_MS]
    assert not slow, slow
    assert [r["name"] for r in results if not r["literalKept"]] == []


def test_normal_markdown_renders_as_before(pages: Pages) -> None:
    page = pages.new()
    page.goto("/ui/")
    html = page.evaluate(RENDER_JS, [source for source, _ in NORMAL])
    assert html == [expected for _, expected in NORMAL]
