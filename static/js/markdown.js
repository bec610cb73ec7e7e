// A small Markdown renderer that builds DOM nodes and never parses HTML: every
// piece of text becomes a text node, so a message can never inject markup.
// Blocks: paragraphs, headings, fenced code, lists, block quotes, rules.
// Inline: `code`, **bold**, *italic*, ~~strike~~, [links](http…) and bare URLs.
//
// It runs in time linear in the input, whatever the input: a message is
// rendered every time its thread opens, so one crafted message (100,000
// backticks, an endless run of "[") must not freeze the tab. No regular
// expression here can backtrack over more than one line, and the inline
// scanner looks each delimiter up in tables built in one pass.

const SAFE_URL = /^(https?:|mailto:)/i;
const MAX_QUOTE_DEPTH = 16; // deeper ">" lines stay text (and the recursion stays shallow)

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const c of children) node.append(c);
  return node;
}

/** Render `source` into a DocumentFragment. */
export function renderMarkdown(source) {
  return renderBlocks(String(source).replace(/\r\n?/g, "\n").split("\n"), 0);
}

function renderBlocks(lines, depth) {
  const out = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = fenceOf(line);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence.marker); i++) body.push(lines[i]);
      i++;
      const code = el("code", body.join("\n"));
      if (fence.lang) code.dataset.lang = fence.lang;
      out.append(el("pre", code));
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const heading = headingOf(line);
    if (heading) {
      out.append(inline(el(`h${Math.min(6, heading.level + 2)}`), heading.text));
      i++;
      continue;
    }
    if (isRule(line)) { out.append(el("hr")); i++; continue; }
    if (depth < MAX_QUOTE_DEPTH && /^\s*>/.test(line)) {
      const quoted = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i++) quoted.push(lines[i].replace(/^\s*>\s?/, ""));
      out.append(el("blockquote", renderBlocks(quoted, depth + 1)));
      continue;
    }
    const first = listItemOf(line);
    if (first) {
      const list = el(first.ordered ? "ol" : "ul");
      for (; i < lines.length; i++) {
        const item = listItemOf(lines[i]);
        if (item && item.ordered === first.ordered) list.append(inline(el("li"), item.text));
        else if (lines[i].trim() && /^\s{2,}/.test(lines[i]) && list.lastChild) {
          list.lastChild.append(" ");
          inline(list.lastChild, lines[i].trim());
        } else break;
      }
      out.append(list);
      continue;
    }
    const para = [];
    for (; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) para.push(lines[i]);
    if (!para.length) { para.push(line); i++; }
    const p = el("p");
    para.forEach((text, n) => {
      if (n) p.append(el("br"));
      inline(p, text);
    });
    out.append(p);
  }
  return out;
}

/** A fence line: ``` or ~~~, then at most a language name. */
function fenceOf(line) {
  const t = line.trim();
  const marker = t.slice(0, 3);
  if (marker !== "```" && marker !== "~~~") return null;
  const lang = t.slice(3).trim();
  return /^[\w+-]*$/.test(lang) ? { marker, lang } : null;
}

// The text of a heading or list item runs to the end of the line; a line that
// holds a line separator (U+2028/9) is neither (as `.` never matches one).
const SEPARATOR = /[\u2028\u2029]/;

function headingOf(line) {
  const m = /^#{1,6}(?=\s)/.exec(line);
  if (!m) return null;
  const text = line.slice(m[0].length).trimStart();
  return SEPARATOR.test(text) ? null : { level: m[0].length, text };
}

function listItemOf(line) {
  const m = /^\s*(?:[-*+]|(\d+)[.)])(?=\s)/.exec(line);
  if (!m) return null;
  const text = line.slice(m[0].length).trimStart();
  return SEPARATOR.test(text) ? null : { ordered: Boolean(m[1]), text };
}

/** Three or more of one of - * _ and nothing else but blanks. */
function isRule(line) {
  const t = line.replace(/\s+/g, "");
  return t.length >= 3 && /^(?:-+|\*+|_+)$/.test(t);
}

function startsBlock(line) {
  return /^\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d+[.)]\s)/.test(line);
}

function inline(node, text) {
  new InlineScanner(text).render(node, 0, text.length);
  return node;
}

// -- inline ----------------------------------------------------------------------------
//
// At each position, in this order, the first that fits wins (leftmost first):
//   `code`            a run of N backticks up to the next run of exactly N (else the run is text)
//   **strong**        up to the next "*", which must start "**"; no "*" inside
//   *em*              its first character neither "*" nor a blank; up to the next "*"
//   __strong__ _em_   likewise with "_", not inside a word (no word character just before or after)
//   ~~del~~           up to the next "~", which must start "~~"
//   [text](url)       text up to the next "]", url up to the next ")" with no blank
//   http(s)://…       up to a blank or <>(), trailing punctuation left out
// Word boundaries are those of the text being scanned: the start and end of the
// line, of an element's content, and the end of the previous element.

const WORD = /\w/;
const BLANK = /\s/;
const URL_STOP = /[\s<>()]/;
const URL_LAST = /[^\s<>().,;:!?'"]/;
const NONE = -1;

class InlineScanner {
  constructor(text) {
    this.text = text;
    this.tables = new Map(); // kind -> Int32Array, built on first use
    this.closers = null;     // start of a backtick run -> start of its closing run
  }

  /** The first index >= i whose character passes `test` (text.length if none); a table built once per kind. */
  next(kind, test, i) {
    let table = this.tables.get(kind);
    if (!table) {
      const n = this.text.length;
      table = new Int32Array(n + 1);
      table[n] = n;
      for (let j = n - 1; j >= 0; j--) table[j] = test(this.text[j]) ? j : table[j + 1];
      this.tables.set(kind, table);
    }
    return table[Math.min(i, this.text.length)];
  }

  /** The last index <= i that may end a bare URL (NONE if none). */
  lastUrlEnd(i) {
    let table = this.tables.get("url-last");
    if (!table) {
      const n = this.text.length;
      table = new Int32Array(n);
      let last = NONE;
      for (let j = 0; j < n; j++) table[j] = last = URL_LAST.test(this.text[j]) ? j : last;
      this.tables.set("url-last", table);
    }
    return table[i];
  }

  /** For a run of backticks starting at i: where the next run of the same length starts (NONE if none). */
  closingRun(i) {
    let closers = this.closers;
    if (!closers) {
      closers = this.closers = new Map();
      const t = this.text;
      const nearest = new Map(); // run length -> start of the nearest run to the right
      let j = t.length - 1;
      while (j >= 0) {
        if (t[j] !== "`") { j--; continue; }
        const end = j + 1;
        while (j >= 0 && t[j] === "`") j--;
        const start = j + 1;
        const len = end - start;
        closers.set(start, nearest.has(len) ? nearest.get(len) : NONE);
        nearest.set(len, start);
      }
    }
    return closers.get(i) ?? NONE; // NONE too inside a run (never asked: runs are skipped whole)
  }

  runLength(i) {
    let j = i;
    while (this.text[j] === "`") j++;
    return j - i;
  }

  /** Append the nodes of text[start, end) to `parent`. */
  render(parent, start, end) {
    const t = this.text;
    let segment = start; // where the text not yet appended starts (a word boundary, like `start`)
    let p = start;
    while (p < end) {
      const c = t[p];
      let found = null; // [node, index after the match]
      if (c === "`") {
        const len = this.runLength(p);
        const close = this.closingRun(p);
        if (close === NONE || close + len > end) { p += len; continue; }
        found = [el("code", t.slice(p + len, close)), close + len];
      } else if (c === "*") {
        found = this.delimited(p, end, "*", "strong") || this.emphasis(p, end, "*", null);
      } else if (c === "_") {
        const afterWord = p > segment && WORD.test(t[p - 1]);
        if (!afterWord) found = this.delimited(p, end, "_", "strong", true) || this.emphasis(p, end, "_", WORD);
      } else if (c === "~") {
        found = this.delimited(p, end, "~", "del");
      } else if (c === "[") {
        found = this.link(p, end);
      } else if (c === "h") {
        found = this.bareUrl(p, end);
      }
      if (!found) { p++; continue; }
      if (p > segment) parent.append(t.slice(segment, p));
      parent.append(found[0]);
      p = segment = found[1];
    }
    if (end > segment) parent.append(t.slice(segment, end));
  }

  /** `cc…cc` around at least one character that is not c (** strong **, __strong__, ~~del~~). */
  delimited(p, end, c, tag, wordBound = false) {
    const t = this.text;
    if (p + 1 >= end || t[p + 1] !== c) return null;
    const close = this.next(c, (x) => x === c, p + 2);
    if (close === p + 2 || close + 1 >= end || t[close + 1] !== c) return null;
    if (wordBound && close + 2 < end && WORD.test(t[close + 2])) return null;
    return [this.element(tag, p + 2, close), close + 2];
  }

  /** `c…c` whose first character is neither c nor a blank (*em*, _em_); `after` may not follow. */
  emphasis(p, end, c, after) {
    const t = this.text;
    if (p + 1 >= end || t[p + 1] === c || BLANK.test(t[p + 1])) return null;
    const close = this.next(c, (x) => x === c, p + 1);
    if (close >= end) return null;
    if (after && close + 1 < end && after.test(t[close + 1])) return null;
    return [this.element("em", p + 1, close), close + 1];
  }

  link(p, end) {
    const t = this.text;
    const close = this.next("]", (x) => x === "]", p + 1);
    if (close === p + 1 || close + 1 >= end || t[close + 1] !== "(") return null;
    const stop = this.next("href-stop", (x) => x === ")" || BLANK.test(x), close + 2);
    if (stop === close + 2 || stop >= end || t[stop] !== ")") return null;
    const href = t.slice(close + 2, stop);
    const node = SAFE_URL.test(href) ? anchor(href, this.element(null, p + 1, close)) : document.createTextNode(t.slice(p, stop + 1));
    return [node, stop + 1];
  }

  bareUrl(p, end) {
    const t = this.text;
    const scheme = t.startsWith("https://", p) ? 8 : t.startsWith("http://", p) ? 7 : 0;
    if (!scheme) return null;
    const body = p + scheme;
    const stop = Math.min(this.next("url-stop", (x) => URL_STOP.test(x), body), end);
    if (stop < body + 2) return null;
    const last = this.lastUrlEnd(stop - 1);
    if (last < body + 1) return null;
    const url = t.slice(p, last + 1);
    return [anchor(url, document.createTextNode(url)), last + 1];
  }

  /** An element (a fragment when `tag` is null) holding the inline nodes of text[start, end). */
  element(tag, start, end) {
    const node = tag ? document.createElement(tag) : document.createDocumentFragment();
    this.render(node, start, end);
    return node;
  }
}

function anchor(href, content) {
  const a = el("a", content);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}
