// A small Markdown renderer that builds DOM nodes and never parses HTML: every
// piece of text becomes a text node, so a message can never inject markup.
// Blocks: paragraphs, headings, fenced code, lists, block quotes, rules.
// Inline: `code`, **bold**, *italic*, ~~strike~~, [links](http…) and bare URLs.

const SAFE_URL = /^(https?:|mailto:)/i;

function el(tag, ...children) {
  const node = document.createElement(tag);
  for (const c of children) node.append(c);
  return node;
}

/** Render `source` into a DocumentFragment. */
export function renderMarkdown(source) {
  const out = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) body.push(lines[i]);
      i++;
      const code = el("code", body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      out.append(el("pre", code));
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      out.append(inline(el(`h${Math.min(6, heading[1].length + 2)}`), heading[2]));
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) { out.append(el("hr")); i++; continue; }
    if (/^\s*>/.test(line)) {
      const quoted = [];
      for (; i < lines.length && /^\s*>/.test(lines[i]); i++) quoted.push(lines[i].replace(/^\s*>\s?/, ""));
      out.append(el("blockquote", renderMarkdown(quoted.join("\n"))));
      continue;
    }
    const item = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/;
    if (item.test(line)) {
      const ordered = Boolean(line.match(item)[2]);
      const list = el(ordered ? "ol" : "ul");
      for (; i < lines.length; i++) {
        const m = lines[i].match(item);
        if (m && Boolean(m[2]) === ordered) list.append(inline(el("li"), m[3]));
        else if (lines[i].trim() && /^\s{2,}/.test(lines[i]) && list.lastChild) list.lastChild.append(" ", ...inlineNodes(lines[i].trim()));
        else break;
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
      p.append(...inlineNodes(text));
    });
    out.append(p);
  }
  return out;
}

function startsBlock(line) {
  return /^\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d+[.)]\s)/.test(line);
}

function inline(node, text) {
  node.append(...inlineNodes(text));
  return node;
}

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|(?<!\w)__([^_]+?)__(?!\w)|\*([^*\s][^*]*?)\*|(?<![\w])_([^_\s][^_]*?)_(?![\w])|~~([^~]+?)~~|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/;

/** Inline Markdown of one line as nodes (text nodes and a few safe elements). */
export function inlineNodes(text) {
  const nodes = [];
  let rest = text;
  while (rest) {
    const m = rest.match(INLINE);
    if (!m) { nodes.push(document.createTextNode(rest)); break; }
    if (m.index) nodes.push(document.createTextNode(rest.slice(0, m.index)));
    if (m[1]) nodes.push(el("code", m[2]));
    else if (m[3] || m[4]) nodes.push(el("strong", ...inlineNodes(m[3] || m[4])));
    else if (m[5] || m[6]) nodes.push(el("em", ...inlineNodes(m[5] || m[6])));
    else if (m[7]) nodes.push(el("del", ...inlineNodes(m[7])));
    else if (m[8]) nodes.push(link(m[9], inlineNodes(m[8]), m[0]));
    else if (m[10]) nodes.push(link(m[10], [document.createTextNode(m[10])], m[10]));
    rest = rest.slice(m.index + m[0].length);
  }
  return nodes;
}

function link(href, children, raw) {
  if (!SAFE_URL.test(href)) return document.createTextNode(raw); // javascript:, data:, … stay text
  const a = el("a", ...children);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}
