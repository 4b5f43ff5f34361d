// A small Markdown renderer that is safe by construction: it builds DOM nodes and sets
// only textContent and a vetted href, never innerHTML, so no text a model writes can
// become markup. It covers what chat replies use: paragraphs, headings, lists, block
// quotes, fenced and indented code, inline code, emphasis and links.

const SAFE_SCHEMES = ["http:", "https:", "mailto:"];

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

export function safeHref(raw) {
  const text = raw.trim();
  try {
    const url = new URL(text, window.location.href);
    return SAFE_SCHEMES.includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// Inline spans: `code`, **strong** / __strong__, *em* / _em_, [text](url), bare URLs.
// Underscores only count at word edges, so snake_case and __dunder__-like text in
// identifiers stays as written.
const INLINE = new RegExp(
  [
    // The run of backticks starts where no backtick precedes it: without that, a reply
    // full of backticks makes the search cubic and freezes the tab while it streams.
    /(?<!`)(`+)(?!`)([\s\S]*?[^`])\1(?!`)/.source,
    /\*\*(?=\S)([^*]+?)(?<=\S)\*\*/.source,
    /(?<!\w)__(?=\S)([^_]+?)(?<=\S)__(?!\w)/.source,
    /\*(?=\S)([^*]+?)(?<=\S)\*/.source,
    /(?<!\w)_(?=\S)([^_]+?)(?<=\S)_(?!\w)/.source,
    /\[([^\]]+)\]\(([^)\s]+)\)/.source,
    /(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/.source,
  ].join("|"),
  "g",
);

function renderInline(text, parent) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) parent.append(document.createTextNode(text.slice(last, match.index)));
    const [whole, , code, strong1, strong2, em1, em2, linkText, linkUrl, bare] = match;
    if (code !== undefined) {
      const node = el("code");
      node.textContent = code.trim() === "" ? code : code.replace(/^ (.*) $/, "$1");
      parent.append(node);
    } else if (strong1 !== undefined || strong2 !== undefined) {
      const node = el("strong");
      renderInline(strong1 ?? strong2, node);
      parent.append(node);
    } else if (em1 !== undefined || em2 !== undefined) {
      const node = el("em");
      renderInline(em1 ?? em2, node);
      parent.append(node);
    } else if (linkText !== undefined) {
      const href = safeHref(linkUrl);
      if (href) {
        const node = el("a");
        node.href = href;
        node.rel = "noopener noreferrer nofollow";
        node.target = "_blank";
        renderInline(linkText, node);
        parent.append(node);
      } else {
        parent.append(document.createTextNode(whole));
      }
    } else if (bare !== undefined) {
      const node = el("a");
      node.href = safeHref(bare) ?? "#";
      node.rel = "noopener noreferrer nofollow";
      node.target = "_blank";
      node.textContent = bare;
      parent.append(node);
    }
    last = match.index + whole.length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

function renderLines(lines, parent) {
  lines.forEach((line, i) => {
    if (i > 0) parent.append(el("br"));
    renderInline(line, parent);
  });
}

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+.-]*)\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

export function renderMarkdown(source, target) {
  target.replaceChildren();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") { i += 1; continue; }

    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { body.push(lines[i]); i += 1; }
      i += 1; // the closing fence (or the end of a reply still streaming)
      const pre = el("pre");
      const code = el("code");
      if (fence[2]) code.dataset.lang = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      target.append(pre);
      continue;
    }
    if (/^( {4}|\t)/.test(line)) {
      const body = [];
      while (i < lines.length && (/^( {4}|\t)/.test(lines[i]) || lines[i].trim() === "")) {
        body.push(lines[i].replace(/^( {4}|\t)/, ""));
        i += 1;
      }
      const pre = el("pre");
      const code = el("code");
      code.textContent = body.join("\n").replace(/\n+$/, "");
      pre.append(code);
      target.append(pre);
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      const node = el(`h${Math.min(heading[1].length + 2, 6)}`);
      renderInline(heading[2], node);
      target.append(node);
      i += 1;
      continue;
    }
    if (RULE.test(line)) { target.append(el("hr")); i += 1; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) { body.push(lines[i].match(QUOTE)[1]); i += 1; }
      const node = el("blockquote");
      renderMarkdown(body.join("\n"), node);
      target.append(node);
      continue;
    }
    const bullet = line.match(BULLET);
    const ordered = line.match(ORDERED);
    if (bullet || ordered) {
      const pattern = bullet ? BULLET : ORDERED;
      const list = el(bullet ? "ul" : "ol");
      if (ordered && ordered[1] !== "1") list.start = Number(ordered[1]);
      let item = null;
      while (i < lines.length) {
        const current = lines[i];
        const m = current.match(pattern);
        if (m) {
          item = el("li");
          renderInline(bullet ? m[1] : m[2], item);
          list.append(item);
        } else if (item && /^\s+\S/.test(current)) {
          item.append(el("br"));
          renderInline(current.trim(), item);
        } else {
          break;
        }
        i += 1;
      }
      target.append(list);
      continue;
    }
    const para = [];
    while (
      i < lines.length && lines[i].trim() !== "" && !FENCE.test(lines[i]) &&
      !HEADING.test(lines[i]) && !BULLET.test(lines[i]) && !ORDERED.test(lines[i]) &&
      !QUOTE.test(lines[i])
    ) { para.push(lines[i]); i += 1; }
    const node = el("p");
    renderLines(para, node);
    target.append(node);
  }
}
