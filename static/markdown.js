// @ts-check
// A small Markdown renderer that is safe by construction: it builds DOM nodes and sets
// only textContent and a vetted href, never innerHTML, so no text a model writes can
// become markup. It covers what chat replies use: paragraphs, headings, lists, block
// quotes, fenced and indented code, inline code, emphasis and links.
//
// It runs on every frame while a reply streams, on text anyone can make a model write,
// so its time is linear in the text and its stack depth does not follow the text:
// block quotes wait on a work list instead of a recursive call and nest at most
// MAX_DEPTH deep (deeper markers stay text); inline spans find their closing delimiter
// through cursors that only move forward; no regular expression here can backtrack
// over a line more than a fixed number of times.

const SAFE_SCHEMES = ["http:", "https:", "mailto:"];
const MAX_DEPTH = 20; // nested block quotes; a ">" deeper than this is shown as text
const MAX_INLINE_DEPTH = 8; // spans nest at most 3 deep by their syntax; a safety net

/**
 * An inline span: its content is text[from, to), the next span may start at `end`.
 * @typedef {{ kind: "code" | "url" | "strong" | "em", from: number, to: number, end: number }
 *   | { kind: "link", from: number, to: number, end: number, url: string }} Span
 */

/**
 * The first index at or after `start` whose character passes a test.
 * @typedef {(start: number) => number} Cursor
 */

/**
 * What the inline spans of one text look for, built once per text.
 * @typedef {object} Finders
 * @property {Map<number, [number, number]>} code an opening run's start -> [length, closing run's start]
 * @property {Cursor} star
 * @property {Cursor} underscore
 * @property {Cursor} bracket
 * @property {Cursor} urlEnd
 */

/**
 * Lines of blocks to render into `target`, at a block-quote depth.
 * @typedef {{ lines: string[], target: HTMLElement, depth: number }} Work
 */

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [className]
 * @returns {HTMLElementTagNameMap[K]}
 */
function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/**
 * The absolute URL `raw` names if its scheme is safe to link to, else null.
 * @param {string} raw
 * @returns {string | null}
 */
export function safeHref(raw) {
  const text = raw.trim();
  try {
    const url = new URL(text, window.location.href);
    return SAFE_SCHEMES.includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

// ---------- inline spans ----------
// `code`, **strong** / __strong__, *em* / _em_, [text](url), bare URLs. At each
// position the first span that fits wins, left to right. Underscores only count at
// word edges, so snake_case and __dunder__-like text in identifiers stays as written.

/** @param {string | undefined} ch */
const isSpace = (ch) => ch !== undefined && /\s/.test(ch);
/** @param {string | undefined} ch */
const isSolid = (ch) => ch !== undefined && !/\s/.test(ch); // regex \S; nothing at an end
/** @param {string | undefined} ch */
const isWord = (ch) => ch !== undefined && /\w/.test(ch);
const BARE_URL = /https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"]/y;

// The first index at or after `start` whose character passes `test` (text.length if
// none). Callers ask with a `start` that never goes back, so all the calls together
// look at each character about once.
/**
 * @param {string} text
 * @param {(ch: string) => boolean} test
 * @returns {Cursor}
 */
function cursor(text, test) {
  let from = 0;
  let hit = -1; // no match in [from, hit); text[hit] matches (or hit is the end)
  return (start) => {
    if (start < from || start > hit) {
      from = start;
      hit = start;
      while (hit < text.length && !test(text[hit])) hit += 1;
    }
    return hit;
  };
}

// Each run of backticks that opens a code span -> [its length, where the closing run
// (the next run of exactly that length) starts].
/**
 * @param {string} text
 * @returns {Map<number, [number, number]>}
 */
function codeRuns(text) {
  /** @type {Array<[number, number]>} */
  const runs = [];
  for (let at = text.indexOf("`"); at >= 0; ) {
    let end = at;
    while (text[end] === "`") end += 1;
    runs.push([at, end - at]);
    at = text.indexOf("`", end);
  }
  /** @type {Map<number, [number, number]>} */
  const closing = new Map();
  /** @type {Map<number, number>} */
  const nearest = new Map(); // run length -> start of the nearest such run to the right
  for (let k = runs.length - 1; k >= 0; k -= 1) {
    const [at, length] = runs[k];
    if (nearest.has(length)) closing.set(at, [length, /** @type {number} */ (nearest.get(length))]);
    nearest.set(length, at);
  }
  return closing;
}

/**
 * @param {string} text
 * @returns {Finders}
 */
function finders(text) {
  return {
    code: text.includes("`") ? codeRuns(text) : new Map(),
    star: cursor(text, (ch) => ch === "*"),
    underscore: cursor(text, (ch) => ch === "_"),
    bracket: cursor(text, (ch) => ch === "]"),
    urlEnd: cursor(text, (ch) => ch === ")" || isSpace(ch)),
  };
}

// The span starting at `i`, as {kind, from, to, end} (its content is text[from, to),
// the next span may start at `end`), or null.
/**
 * @param {string} text
 * @param {number} i
 * @param {Finders} find
 * @returns {Span | null | undefined}
 */
function spanAt(text, i, find) {
  switch (text[i]) {
    case "`": {
      const run = text[i - 1] === "`" ? undefined : find.code.get(i);
      return run && { kind: "code", from: i + run[0], to: run[1], end: run[1] + run[0] };
    }
    case "*":
      return text[i + 1] === "*" ? strongAt(text, i, find.star, "*") : emAt(text, i, find.star, "*");
    case "_":
      if (isWord(text[i - 1])) return null;
      return text[i + 1] === "_"
        ? strongAt(text, i, find.underscore, "_")
        : emAt(text, i, find.underscore, "_");
    case "[":
      return linkAt(text, i, find);
    case "h": {
      if (!text.startsWith("http", i)) return null;
      BARE_URL.lastIndex = i;
      const match = BARE_URL.exec(text);
      return match && { kind: "url", from: i, to: i + match[0].length, end: i + match[0].length };
    }
    default:
      return null;
  }
}

// **x** / __x__: the content holds no marker character, so the first one after the
// opening must start the closing pair.
/**
 * @param {string} text
 * @param {number} i
 * @param {Cursor} next the next `mark`
 * @param {"*" | "_"} mark
 * @returns {Span | null}
 */
function strongAt(text, i, next, mark) {
  if (!isSolid(text[i + 2]) || text[i + 2] === mark) return null;
  const close = next(i + 2);
  if (text[close + 1] !== mark || !isSolid(text[close - 1])) return null;
  if (mark === "_" && isWord(text[close + 2])) return null;
  return { kind: "strong", from: i + 2, to: close, end: close + 2 };
}

/**
 * @param {string} text
 * @param {number} i
 * @param {Cursor} next the next `mark`
 * @param {"*" | "_"} mark
 * @returns {Span | null}
 */
function emAt(text, i, next, mark) {
  if (!isSolid(text[i + 1]) || text[i + 1] === mark) return null;
  const close = next(i + 1);
  if (close >= text.length || !isSolid(text[close - 1])) return null;
  if (mark === "_" && isWord(text[close + 1])) return null;
  return { kind: "em", from: i + 1, to: close, end: close + 1 };
}

// [text](url): the text runs to the first "]", the url to the first ")" or space.
/**
 * @param {string} text
 * @param {number} i
 * @param {Finders} find
 * @returns {Span | null}
 */
function linkAt(text, i, find) {
  const close = find.bracket(i + 1);
  if (close === i + 1 || text[close + 1] !== "(") return null;
  const stop = find.urlEnd(close + 2);
  if (stop === close + 2 || text[stop] !== ")") return null;
  return { kind: "link", from: i + 1, to: close, url: text.slice(close + 2, stop), end: stop + 1 };
}

/** @param {string} code */
function codeText(code) {
  if (code.trim() === "" || code.length < 2) return code;
  return code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code;
}

/** @param {string} href */
function anchor(href) {
  const node = el("a");
  node.href = href;
  node.rel = "noopener noreferrer nofollow";
  node.target = "_blank";
  return node;
}

/**
 * @param {string} text
 * @param {Span} span
 * @param {number} depth
 * @returns {Node}
 */
function spanNode(text, span, depth) {
  const inner = text.slice(span.from, span.to);
  if (span.kind === "code") {
    const node = el("code");
    node.textContent = codeText(inner);
    return node;
  }
  if (span.kind === "url") {
    const node = anchor(safeHref(inner) ?? "#");
    node.textContent = inner;
    return node;
  }
  if (span.kind === "link") {
    const href = safeHref(span.url);
    if (!href) return document.createTextNode(text.slice(span.from - 1, span.end));
    const node = anchor(href);
    renderInline(inner, node, depth + 1);
    return node;
  }
  const node = el(span.kind); // strong, em
  renderInline(inner, node, depth + 1);
  return node;
}

/**
 * @param {string} text
 * @param {HTMLElement} parent
 * @param {number} [depth]
 */
function renderInline(text, parent, depth = 0) {
  if (depth > MAX_INLINE_DEPTH) {
    parent.append(document.createTextNode(text));
    return;
  }
  const find = finders(text);
  let last = 0;
  let i = 0;
  while (i < text.length) {
    const span = spanAt(text, i, find);
    if (!span) {
      i += 1;
      continue;
    }
    if (i > last) parent.append(document.createTextNode(text.slice(last, i)));
    parent.append(spanNode(text, span, depth));
    i = span.end;
    last = i;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
}

/**
 * @param {string[]} lines
 * @param {HTMLElement} parent
 */
function renderLines(lines, parent) {
  lines.forEach((line, i) => {
    if (i > 0) parent.append(el("br"));
    renderInline(line, parent);
  });
}

// ---------- blocks ----------
// Every pattern is anchored and has at most one unbounded part, followed by the rest
// of the line: none can try a line's characters more than a few times over.

const FENCE = /^\s{0,3}(```|~~~)([\s\S]*)$/;
const FENCE_INFO = /^[\w+.-]*$/;
const BULLET = /^\s{0,3}[-*+]\s+([\s\S]*)$/;
const ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+([\s\S]*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s([\s\S]*)$/;
const QUOTE = /^\s{0,3}>\s?([\s\S]*)$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const INDENTED = /^( {4}|\t)/;

/**
 * @param {string} line
 * @returns {{ marker: string, lang: string } | null}
 */
function fenceOf(line) {
  const match = line.match(FENCE);
  if (!match) return null;
  const info = match[2].trim();
  return FENCE_INFO.test(info) ? { marker: match[1], lang: info } : null;
}

/**
 * @param {string} text
 * @param {string} ch
 */
function dropTrailing(text, ch) {
  let end = text.length;
  while (end > 0 && text[end - 1] === ch) end -= 1;
  return text.slice(0, end);
}

// "## Title ##" -> [2, "Title"]; closing hashes and spaces are not part of the title.
/**
 * @param {string} line
 * @returns {[number, string] | null}
 */
function headingOf(line) {
  const match = line.match(HEADING);
  if (!match) return null;
  return [match[1].length, dropTrailing(match[2].trim(), "#").trimEnd()];
}

/**
 * @param {string} line
 * @param {number} depth
 */
function quoted(line, depth) {
  return depth < MAX_DEPTH && QUOTE.test(line);
}

/**
 * @param {string} line
 * @param {number} depth
 */
function startsBlock(line, depth) {
  return Boolean(
    fenceOf(line) || HEADING.test(line) || BULLET.test(line) || ORDERED.test(line) ||
    quoted(line, depth),
  );
}

/**
 * @param {string} text
 * @param {string} [lang]
 */
function codeBlock(text, lang) {
  const pre = el("pre");
  const code = el("code");
  if (lang) code.dataset.lang = lang;
  code.textContent = text;
  pre.append(code);
  return pre;
}

// One list of blocks (a reply, or the inside of a block quote) into `target`. A block
// quote's own lines go on `work` for the caller's loop rather than into a recursive
// call, so its depth costs no stack.
/**
 * @param {Work} block
 * @param {Work[]} work
 */
function renderBlocks({ lines, target, depth }, work) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") { i += 1; continue; }

    const fence = fenceOf(line);
    if (fence) {
      /** @type {string[]} */
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence.marker)) { body.push(lines[i]); i += 1; }
      i += 1; // the closing fence (or the end of a reply still streaming)
      target.append(codeBlock(body.join("\n"), fence.lang));
      continue;
    }
    if (INDENTED.test(line)) {
      /** @type {string[]} */
      const body = [];
      while (i < lines.length && (INDENTED.test(lines[i]) || lines[i].trim() === "")) {
        body.push(lines[i].replace(INDENTED, ""));
        i += 1;
      }
      target.append(codeBlock(dropTrailing(body.join("\n"), "\n")));
      continue;
    }
    const heading = headingOf(line);
    if (heading) {
      const node = el(/** @type {"h3" | "h4" | "h5" | "h6"} */ (`h${Math.min(heading[0] + 2, 6)}`));
      renderInline(heading[1], node);
      target.append(node);
      i += 1;
      continue;
    }
    if (RULE.test(line)) { target.append(el("hr")); i += 1; continue; }
    if (quoted(line, depth)) {
      /** @type {string[]} */
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(/** @type {RegExpMatchArray} */ (lines[i].match(QUOTE))[1]);
        i += 1;
      }
      const node = el("blockquote");
      target.append(node);
      work.push({ lines: body, target: node, depth: depth + 1 });
      continue;
    }
    const bullet = line.match(BULLET);
    const ordered = line.match(ORDERED);
    if (bullet || ordered) {
      const pattern = bullet ? BULLET : ORDERED;
      const list = el(bullet ? "ul" : "ol");
      if (ordered && ordered[1] !== "1") /** @type {HTMLOListElement} */ (list).start = Number(ordered[1]);
      /** @type {HTMLLIElement | null} */
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
    const para = [line];
    i += 1;
    while (i < lines.length && lines[i].trim() !== "" && !startsBlock(lines[i], depth)) {
      para.push(lines[i]);
      i += 1;
    }
    const node = el("p");
    renderLines(para, node);
    target.append(node);
  }
}

/**
 * Renders Markdown `source` into `target` (replacing what it held) as DOM nodes only.
 * @param {string} source
 * @param {HTMLElement} target
 */
export function renderMarkdown(source, target) {
  target.replaceChildren();
  /** @type {Work[]} */
  const work = [{ lines: source.replace(/\r\n?/g, "\n").split("\n"), target, depth: 0 }];
  while (work.length) renderBlocks(/** @type {Work} */ (work.pop()), work);
}
