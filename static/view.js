// @ts-check
// What the page shows: the elements of index.html, notices, the connection state, the
// layout's drawer, the header (the title, renamed in place, and the tokens the chat
// used), the composer (with its Stop button, and the bar of an edit) and each chat's
// draft in it, the messages of a chat (a stopped reply marked so, a reply's tokens on
// hover, earlier pages put before them, Regenerate on replies and Edit on the person's
// messages, the "‹ 2 / 3 ›" picker on a message with other versions, a reply's reasoning
// in a collapsed "Thinking" block, its tool calls as cards with their results or the
// Run and Decline buttons) and the list of chats. It builds DOM nodes only; nothing here
// talks to the server.

import { renderMarkdown } from "./markdown.js";
import { state } from "./state.js";
import { CANCELLED, DECLINED, knowsTool, UNKNOWN_TOOL } from "./tools.js";

/** @import { ConnectionStatus } from "./graphql.js" */
/** @import { Message, SessionPage, SessionSummary, Share, ToolCall, Usage } from "./queries.js" */

/**
 * The element with this id, checked to be of this kind.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{ new (): T, prototype: T }} kind
 * @returns {T}
 */
function byId(id, kind) {
  const node = document.getElementById(id);
  if (!(node instanceof kind)) throw new Error(`the page has no #${id} of the kind it needs`);
  return node;
}

export const ui = {
  app: byId("app", HTMLDivElement),
  sidebar: byId("sidebar", HTMLElement),
  scrim: byId("scrim", HTMLDivElement),
  menu: byId("menu", HTMLButtonElement),
  listTitle: byId("list-title", HTMLHeadingElement),
  myChats: byId("my-chats", HTMLButtonElement),
  sessions: byId("sessions", HTMLUListElement),
  empty: byId("sessions-empty", HTMLParagraphElement),
  elsewhere: byId("sessions-elsewhere", HTMLParagraphElement),
  more: byId("sessions-more", HTMLButtonElement),
  archiveView: byId("archive-view", HTMLButtonElement),
  sharePanel: byId("share-panel", HTMLElement),
  shareAbout: byId("share-about", HTMLParagraphElement),
  shareLinks: byId("share-links", HTMLUListElement),
  shareNew: byId("share-new", HTMLButtonElement),
  shareClose: byId("share-close", HTMLButtonElement),
  shareError: byId("share-error", HTMLParagraphElement),
  newForm: byId("new-chat-form", HTMLFormElement),
  newTitle: byId("new-title", HTMLInputElement),
  adminForm: byId("admin-form", HTMLFormElement),
  adminToken: byId("admin-token", HTMLInputElement),
  adminError: byId("admin-error", HTMLParagraphElement),
  title: byId("chat-title", HTMLHeadingElement),
  titleForm: byId("title-form", HTMLFormElement),
  titleInput: byId("title-input", HTMLInputElement),
  rename: byId("rename", HTMLButtonElement),
  model: byId("model", HTMLSpanElement),
  usage: byId("usage", HTMLSpanElement),
  conn: byId("conn", HTMLSpanElement),
  del: byId("delete", HTMLButtonElement),
  messages: byId("messages", HTMLElement),
  welcome: byId("welcome", HTMLDivElement),
  notice: byId("notice", HTMLDivElement),
  editBar: byId("edit-bar", HTMLDivElement),
  editCancel: byId("edit-cancel", HTMLButtonElement),
  composer: byId("composer", HTMLFormElement),
  input: byId("input", HTMLTextAreaElement),
  send: byId("send", HTMLButtonElement),
  stop: byId("stop", HTMLButtonElement),
  demoTools: byId("demo-tools", HTMLInputElement),
};

// ---------- notices ----------

/** @type {Record<string, string | null>} error code -> what the notice says */
const MESSAGES_OF_CODE = {
  SESSION_BUSY: "This chat is already answering a message. Wait for it to finish, then send again.",
  LLM_ERROR: "The model failed to answer. Your message was not saved; try sending it again.",
  UNAVAILABLE: "The server cannot reach its storage right now. Try again in a moment.",
  NOT_FOUND: "This chat no longer exists.",
  BAD_USER_INPUT: null, // the server's own message says what was wrong
  CONNECTION_LOST: "The connection was lost. Reconnecting…",
  NOT_STORED: "The connection was lost during the reply, and the reply was not stored. " +
    "Your message is back in the input; send it again.",
  NETWORK: "The server cannot be reached.",
  REPLY_FAILED: "The reply stopped before its end and was not stored.",
  REGENERATE_FAILED: "The reply could not be regenerated; the previous reply is kept.",
  TOOLS_FAILED: "The reply to the tools' results failed and nothing was stored; the calls " +
    "wait for your answers again.",
  UNAUTHENTICATED: "The server did not accept this browser's identity. Reload the page to try again.",
};

/**
 * @param {string} code an error code (GraphQLError.code) or one of the page's own
 * @param {string} [fallback] what to say if the page has no words of its own for `code`
 */
export function showNotice(code, fallback) {
  ui.notice.textContent = MESSAGES_OF_CODE[code] ?? fallback ?? "Something went wrong.";
  ui.notice.dataset.code = code;
  ui.notice.hidden = false;
}

/**
 * The notice for what a request threw (a GraphQLError).
 * @param {unknown} error
 */
export function showError(error) {
  const { code, message } = /** @type {import("./graphql.js").GraphQLError} */ (error);
  showNotice(code, message);
}

export function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
  delete ui.notice.dataset.code;
}

// A notice about one chat: shown now if it is open, else when it is opened next.
/**
 * @param {string} sessionId
 * @param {string} code
 * @param {string} [message]
 */
export function tell(sessionId, code, message) {
  if (sessionId === state.current) showNotice(code, message);
  else state.notes.set(sessionId, [code, message]);
}

/** @param {ConnectionStatus} status */
export function showConnection(status) {
  ui.conn.dataset.state = status;
  ui.conn.textContent = { open: "connected", connecting: "connecting", closed: "reconnecting" }[status];
  if (status === "open" && ui.notice.dataset.code === "CONNECTION_LOST") hideNotice();
  if (status === "closed" && !ui.notice.hidden) return;
  if (status === "closed") showNotice("CONNECTION_LOST");
}

// ---------- layout ----------

/** @param {boolean} open whether the chat list shows over the chat (narrow screens) */
export function openDrawer(open) {
  ui.app.classList.toggle("drawer-open", open);
  ui.scrim.hidden = !open;
}

/** The open chat's title as stored (null: none), for the rename input. */
let shownTitle = /** @type {string | null} */ (null);

/** @param {string | null} title the open chat's title; none for "New chat" */
export function showTitle(title) {
  shownTitle = title;
  ui.title.textContent = title || "New chat";
}

/**
 * Whether the open chat's title shows as an input (filled with the title, focused), or
 * as the heading (the focus back on the Rename button if it was in the input).
 * @param {boolean} on
 */
export function showRenaming(on) {
  const focused = document.activeElement === ui.titleInput;
  ui.title.hidden = on;
  ui.titleForm.hidden = !on;
  ui.rename.hidden = on || state.current === null;
  if (on) {
    ui.titleInput.value = shownTitle ?? "";
    ui.titleInput.focus();
    ui.titleInput.select();
  } else if (focused) {
    ui.rename.focus();
  }
}

/**
 * @param {boolean} on whether there is an open chat (it can be deleted and renamed)
 */
export function showDeletable(on) {
  ui.del.hidden = !on;
  ui.rename.hidden = !on || !ui.titleForm.hidden;
}

/**
 * @param {Usage} usage
 * @returns {string}
 */
export function formatUsage({ inputTokens, outputTokens }) {
  return `${inputTokens.toLocaleString()} in / ${outputTokens.toLocaleString()} out tokens`;
}

/** @param {Usage | null} usage the open chat's total (null: no chat, nothing shown) */
export function showUsage(usage) {
  ui.usage.hidden = usage === null;
  ui.usage.textContent = usage ? formatUsage(usage) : "";
}

/** @param {string} model */
export function showModel(model) {
  ui.model.textContent = model;
}

/**
 * @param {string | null | undefined} iso
 * @returns {string} the time alone for today, else the date and time
 */
function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// ---------- the composer ----------

export function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

/** @param {boolean} on whether the composer waits for a reply */
export function showBusy(on) {
  ui.input.disabled = on;
  ui.send.disabled = on;
  ui.composer.setAttribute("aria-busy", String(on));
  if (!on) ui.input.focus();
}

/**
 * The Stop button: shown while the open chat's reply streams; disabled once a stop was
 * asked for (the reply ends as soon as the server has stopped it).
 * @param {boolean} shown
 * @param {boolean} [asked]
 */
export function showStop(shown, asked = false) {
  const focused = document.activeElement === ui.stop;
  ui.stop.hidden = !shown;
  ui.stop.disabled = asked;
  ui.stop.setAttribute("aria-label", asked ? "Stopping the reply" : "Stop the reply");
  // Focus does not stay on a button that went away: back to the message input.
  if (focused && !shown && !ui.input.disabled) ui.input.focus();
}

export function clearInput() {
  ui.input.value = "";
  autosize();
}

// ---------- per-chat input ----------
// The input belongs to the open chat: what is typed in one waits there while another
// is open, and a message that was not stored goes back into the chat it was sent in.

/** @param {string | null} id */
const draftKey = (id) => id ?? "";

/**
 * Keeps the input's text as the draft of chat `from` and shows the draft of `to`.
 * @param {string | null} from
 * @param {string | null} to
 */
export function switchDraft(from, to) {
  if (from === to) return;
  if (ui.input.value) state.drafts.set(draftKey(from), ui.input.value);
  else state.drafts.delete(draftKey(from));
  ui.input.value = state.drafts.get(draftKey(to)) ?? "";
  state.drafts.delete(draftKey(to));
  autosize();
}

/**
 * Puts `text` back before what is typed in the chat it was sent in.
 * @param {string} sessionId
 * @param {string} text
 */
export function giveBack(sessionId, text) {
  /** @param {string | undefined} draft */
  const join = (draft) => (draft ? `${text}\n${draft}` : text);
  if (sessionId === state.current) {
    ui.input.value = join(ui.input.value);
    autosize();
  } else {
    state.drafts.set(draftKey(sessionId), join(state.drafts.get(draftKey(sessionId))));
  }
}

// ---------- messages ----------

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/**
 * @param {string} role
 * @param {string} content
 * @param {string | null} createdAt
 * @param {string} [status] the stored message's status; STOPPED marks it so
 * @returns {HTMLElement}
 */
export function messageNode(role, content, createdAt, status = "COMPLETE") {
  const item = document.createElement("article");
  item.className = `msg ${role.toLowerCase()}`;
  item.dataset.role = role;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const meta = document.createElement("time");
  meta.className = "meta";
  // Under the bubble, on one line: the versions' picker, the time, a "stopped" note, the
  // buttons.
  const foot = document.createElement("div");
  foot.className = "foot";
  foot.append(meta);
  item.append(bubble, foot);
  fillMessage(item, content, createdAt);
  if (status === "STOPPED") markStopped(item);
  return item;
}

/**
 * A stored message's node: its id (for the Regenerate and Edit of the last turn), and a
 * reply's tokens shown on hover.
 * @param {Message} message
 * @returns {HTMLElement}
 */
function storedNode(message) {
  const item = messageNode(message.role, message.content, message.createdAt, message.status);
  markStored(item, message);
  if (message.reasoning) showThinking(item, message.reasoning, false);
  if (message.toolCalls?.length) showCalls(item, message.toolCalls);
  return item;
}

/**
 * The nodes of stored messages, oldest first. A tool's result (role TOOL) has no node of
 * its own: it shows in the card of its call, in the reply before it that asked.
 * @param {Message[]} messages
 * @returns {{ nodes: HTMLElement[], leading: Message[], asking: HTMLElement | null }}
 *   with the results before any reply of `messages` (theirs is in an earlier page), and
 *   the last reply that asks for calls when only results follow it
 */
function storedNodes(messages) {
  /** @type {HTMLElement[]} */
  const nodes = [];
  /** @type {Message[]} */
  const leading = [];
  /** @type {HTMLElement | null} */
  let asking = null;
  for (const message of messages) {
    if (message.role === "TOOL") {
      if (!asking) leading.push(message);
      else if (message.toolCallId) setCallResult(asking, message.toolCallId, message.content);
      continue;
    }
    const node = storedNode(message);
    nodes.push(node);
    // A summary written while calls waited may sit between them and their results.
    if (message.role !== "SYSTEM") asking = message.toolCalls?.length ? node : null;
  }
  return { nodes, leading, asking };
}

/** The tools' results at the top of the open chat, whose calls are in an earlier page. */
let leadingResults = /** @type {Message[]} */ ([]);

/**
 * Marks a node as the stored `message`: its id, its turn, its tokens (on hover), its
 * versions (the picker, when there are others).
 * @param {HTMLElement} item a node from messageNode
 * @param {Message} message
 */
export function markStored(item, message) {
  item.dataset.id = message.id;
  showVersions(item, message);
  if (message.turnId) item.dataset.turnId = message.turnId;
  if (message.usage) {
    const finish = message.finishReason && message.finishReason !== "stop"
      ? ` · ended by ${message.finishReason}` : "";
    item.title = `${formatUsage(message.usage)}${finish}`;
  } else {
    item.removeAttribute("title");
  }
}

/**
 * Empties a reply for a new one to stream in its place (Regenerate): no text, no time,
 * no id, no tokens, no "stopped" mark.
 * @param {HTMLElement} item a node from messageNode
 */
export function restartReply(item) {
  item.classList.remove("stopped");
  item.querySelector(".note")?.remove();
  item.querySelector(".actions")?.remove();
  item.querySelector(".versions")?.remove();
  item.querySelector(":scope > .thinking")?.remove();
  item.querySelector(":scope > .calls")?.remove();
  item.classList.remove("asks");
  delete item.dataset.id;
  delete item.dataset.turnId;
  item.removeAttribute("title");
  const meta = /** @type {HTMLTimeElement} */ (item.querySelector(".meta"));
  meta.textContent = "";
  meta.removeAttribute("datetime");
  meta.removeAttribute("title");
  /** @type {HTMLElement} */ (item.querySelector(".bubble")).replaceChildren();
  item.classList.add("streaming");
  item.setAttribute("aria-busy", "true");
}

// ---------- versions ----------
// A message with other versions (an edit or a regeneration added one; the old ones stay)
// shows "‹ 2 / 3 ›" under it: the arrows show the version before or after (the chat then
// goes on from it). They wait while a reply streams (the server would refuse).

/** Whether the arrows of the pickers can be used now. */
let versionsOn = true;

/**
 * The picker of the versions of `item`'s message, none when it has no other.
 * @param {HTMLElement} item a node from messageNode
 * @param {Pick<Message, "role" | "branch" | "branches" | "siblingIds">} message
 */
export function showVersions(item, message) {
  const { branch, branches, siblingIds } = message;
  const old = item.querySelector(".versions");
  if (!(branches > 1) || siblingIds?.length !== branches || !(branch >= 1 && branch <= branches)) {
    old?.remove();
    return;
  }
  const what = message.role === "USER" ? "message" : "reply";
  const picker = document.createElement("div");
  picker.className = "versions";
  picker.setAttribute("role", "group");
  picker.setAttribute("aria-label", `Version ${branch} of ${branches} of this ${what}`);
  const count = document.createElement("span");
  count.className = "count";
  count.textContent = `${branch} / ${branches}`;
  count.setAttribute("aria-hidden", "true");
  picker.append(
    versionButton("previous", "‹", `Previous version of this ${what}`, siblingIds[branch - 2]),
    count,
    versionButton("next", "›", `Next version of this ${what}`, siblingIds[branch]),
  );
  if (old) old.replaceWith(picker);
  else item.querySelector(".foot")?.prepend(picker);
}

/**
 * @param {"previous" | "next"} action
 * @param {string} text
 * @param {string} label
 * @param {string | undefined} target the id of the version it shows; none at either end
 * @returns {HTMLButtonElement}
 */
function versionButton(action, text, label, target) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "version";
  button.dataset.action = action;
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.title = label;
  if (target) button.dataset.target = target;
  button.disabled = !versionsOn || !target;
  return button;
}

/**
 * Whether the pickers' arrows can be used (not while a reply streams, nor while
 * another version is being shown).
 * @param {boolean} on
 */
export function enableVersions(on) {
  if (on === versionsOn) return;
  versionsOn = on;
  for (const button of ui.messages.querySelectorAll(".versions button")) {
    if (button instanceof HTMLButtonElement) button.disabled = !on || !button.dataset.target;
  }
}

/**
 * Where a message's node is on screen (its top, from the top of the messages' box).
 * @param {HTMLElement} item
 * @returns {number}
 */
export function offsetOf(item) {
  return item.getBoundingClientRect().top - ui.messages.getBoundingClientRect().top;
}

/**
 * Scrolls the messages so that `item` is where it was (`offsetOf` before the chat was
 * shown anew), and puts the focus on its picker's `action` arrow (the other one when
 * that one is disabled), if the focus was on a picker.
 * @param {HTMLElement} item
 * @param {number} offset
 * @param {"previous" | "next" | null} focus
 */
export function keepInPlace(item, offset, focus) {
  ui.messages.scrollTop += offsetOf(item) - offset;
  if (!focus) return;
  /** @type {HTMLButtonElement[]} */
  const arrows = Array.from(item.querySelectorAll(".versions button"));
  const wanted = arrows.find((b) => b.dataset.action === focus && !b.disabled)
    ?? arrows.find((b) => !b.disabled);
  wanted?.focus();
}

/**
 * Marks a reply as cut short by Stop: a small note under it says so.
 * @param {HTMLElement} item a node from messageNode
 */
export function markStopped(item) {
  if (item.classList.contains("stopped")) return;
  item.classList.add("stopped");
  const note = document.createElement("span");
  note.className = "note";
  note.textContent = "stopped";
  note.title = "The reply was stopped before its end.";
  item.querySelector(".meta")?.after(note);
}

/**
 * Shows `content` (as text from the person, as Markdown from the model) in a message.
 * @param {HTMLElement} item a node from messageNode
 * @param {string} content
 * @param {string | null} createdAt
 */
export function fillMessage(item, content, createdAt) {
  const bubble = /** @type {HTMLElement} */ (item.querySelector(".bubble"));
  if (item.dataset.role === "USER") bubble.textContent = content;
  else renderMarkdown(content, bubble);
  const meta = /** @type {HTMLTimeElement} */ (item.querySelector(".meta"));
  if (createdAt) {
    meta.dateTime = createdAt;
    meta.textContent = formatTime(createdAt);
    meta.title = new Date(createdAt).toLocaleString();
  }
}

// The messages stored in a chat; then the nodes of its turn still streaming, if any.
/**
 * @param {Message[]} messages
 * @param {HTMLElement[]} [streaming]
 */
export function showMessages(messages, streaming = []) {
  ui.messages.replaceChildren();
  const { nodes, leading } = storedNodes(messages);
  leadingResults = leading;
  if (!nodes.length && !streaming.length) {
    ui.messages.append(ui.welcome);
    return;
  }
  ui.messages.append(...nodes, ...streaming);
  scrollToEnd();
}

/** @returns {boolean} whether the messages are scrolled to (near) their top */
export function nearTop() {
  return ui.messages.scrollTop < 80;
}

/**
 * Puts earlier messages before those shown, the view staying where it was (what was on
 * screen stays there: the messages grow above it).
 * @param {Message[]} messages oldest first
 * @param {() => void} [then] what to do once they are in, before the view is put back
 *   (their buttons)
 */
export function prependMessages(messages, then) {
  if (!messages.length) return;
  const box = ui.messages;
  const fromEnd = box.scrollHeight - box.scrollTop;
  const { nodes, leading, asking } = storedNodes(messages);
  if (asking) {
    for (const result of leadingResults) {
      if (result.toolCallId) setCallResult(asking, result.toolCallId, result.content);
    }
  }
  leadingResults = leading;
  box.prepend(...nodes);
  then?.();
  box.scrollTop = box.scrollHeight - fromEnd;
}

/**
 * @param {HTMLElement} item
 * @param {"regenerate" | "edit"} action
 * @param {string} text
 * @param {string} label
 * @param {boolean} quiet whether the bar shows only on hover or focus (not the last turn's)
 */
function addAction(item, action, text, label, quiet) {
  let bar = item.querySelector(".actions");
  if (!bar) {
    bar = document.createElement("div");
    bar.className = quiet ? "actions quiet" : "actions";
    item.querySelector(".foot")?.append(bar);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "action";
  button.dataset.action = action;
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.title = label;
  bar.append(button);
}

/**
 * The node of the stored message `id` in the open chat, if it shows.
 * @param {string} id
 * @returns {HTMLElement | null}
 */
export function findMessage(id) {
  for (const node of ui.messages.querySelectorAll(":scope > .msg[data-id]")) {
    if (node instanceof HTMLElement && node.dataset.id === id) return node;
  }
  return null;
}

/**
 * The open chat's last stored turn, when it ends with a message of the person's and a
 * reply (what Regenerate runs again).
 * @returns {{ mine: HTMLElement, reply: HTMLElement } | null}
 */
export function lastTurn() {
  /** @type {HTMLElement[]} */
  const stored = Array.from(
    ui.messages.querySelectorAll(":scope > .msg[data-id]:not([data-role=SYSTEM])"),
  );
  const [mine, reply] = stored.slice(-2);
  // The reply answers the person's message, or the tools' results of the reply before.
  const asked = mine?.dataset.role === "USER" || mine?.classList.contains("asks");
  if (!asked || reply?.dataset.role !== "ASSISTANT") return null;
  return { mine, reply };
}

/** @type {Record<"regenerate" | "edit", [text: string, last: string, other: string]>} */
const ACTIONS = {
  edit: ["Edit", "Edit your last message", "Edit this message"],
  regenerate: ["Regenerate", "Regenerate the last reply", "Regenerate this reply"],
};

/**
 * The buttons of the chat's turns: Edit on each message of the person's, Regenerate on
 * each reply that answers one (either adds a version; the old one stays); those of the
 * last turn always show, the others on hover or focus. None when `on` is false (a reply
 * streams, a message is being edited).
 * @param {boolean} on
 */
export function showTurnActions(on) {
  /** @type {Array<[HTMLElement, "regenerate" | "edit", string]>} */
  const wanted = [];
  if (on) {
    const turn = lastTurn();
    /** @type {HTMLElement[]} */
    const stored = Array.from(
      ui.messages.querySelectorAll(":scope > .msg[data-id]:not([data-role=SYSTEM])"),
    );
    const lastMine = stored.filter((item) => item.dataset.role === "USER").at(-1);
    stored.forEach((item, k) => {
      const before = stored[k - 1];
      if (item.dataset.role === "USER") {
        wanted.push([item, "edit", ACTIONS.edit[item === lastMine ? 1 : 2]]);
      } else if (
        item.dataset.role === "ASSISTANT"
        // After the user's message, or after the tools' results a reply asked for (they
        // show in that reply's cards): the server answers either again.
        && (before?.dataset.role === "USER" || before?.classList.contains("asks"))
      ) {
        wanted.push([item, "regenerate", ACTIONS.regenerate[item === turn?.reply ? 1 : 2]]);
      }
    });
  }
  /** @type {HTMLButtonElement[]} */
  const shown = Array.from(ui.messages.querySelectorAll(".actions button"));
  const same = shown.length === wanted.length && wanted.every(
    ([item, action, label], k) => shown[k].closest(".msg") === item
      && shown[k].dataset.action === action && shown[k].getAttribute("aria-label") === label,
  );
  if (same) return;
  const box = ui.messages;
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  const focused = document.activeElement instanceof HTMLElement
    && document.activeElement.closest(".actions") !== null;
  for (const bar of box.querySelectorAll(".actions")) bar.remove();
  if (focused && !ui.input.disabled) ui.input.focus();
  for (const [item, action, label] of wanted) {
    addAction(item, action, ACTIONS[action][0], label, label !== ACTIONS[action][1]);
  }
  if (atEnd) scrollToEnd(); // the buttons do not push the end of the chat out of view
}

/**
 * The bar that says a message is being edited, and that message marked; none for null.
 * @param {string | null} messageId
 */
export function showEditing(messageId) {
  ui.editBar.hidden = messageId === null;
  for (const item of ui.messages.querySelectorAll(".msg.editing")) item.classList.remove("editing");
  if (messageId === null) return;
  for (const item of ui.messages.querySelectorAll(":scope > .msg[data-id]")) {
    if (/** @type {HTMLElement} */ (item).dataset.id === messageId) item.classList.add("editing");
  }
}

/**
 * Takes out of the chat the node `item` and everything shown after it (`item` too
 * unless `keep`): they are another version now, while a new one streams.
 * @param {HTMLElement} item
 * @param {boolean} [keep]
 * @returns {HTMLElement[]} the nodes taken out, in order (`putBack` shows them again)
 */
export function takeFrom(item, keep = false) {
  const nodes = /** @type {HTMLElement[]} */ (Array.from(ui.messages.children));
  const at = nodes.indexOf(item);
  if (at < 0) return [];
  const taken = nodes.slice(keep ? at + 1 : at);
  for (const node of taken) node.remove();
  return taken;
}

/**
 * Shows again at the end of the chat the nodes `takeFrom` took out.
 * @param {HTMLElement[]} nodes
 */
export function putBack(nodes) {
  ui.messages.append(...nodes);
}

/**
 * A turn as it starts: the person's message, and the reply that streams in.
 * @param {string} text
 * @param {string} [sentAt] ISO date and time the message was sent; now if not given
 * @param {boolean} [shown] whether to put the nodes in the open chat now
 * @returns {{ mine: HTMLElement, reply: HTMLElement }}
 */
export function showTurn(text, sentAt = new Date().toISOString(), shown = true) {
  const mine = messageNode("USER", text, sentAt);
  const reply = streamingReply();
  if (shown) {
    if (ui.welcome.isConnected) ui.welcome.remove();
    ui.messages.append(mine, reply);
    scrollToEnd();
  }
  return { mine, reply };
}

/**
 * The reply to tools' results as it starts: after the reply that asked for the calls.
 * @param {HTMLElement} asking the node of that reply
 * @returns {HTMLElement}
 */
export function showAnswerReply(asking) {
  const reply = streamingReply();
  asking.after(reply);
  scrollToEnd();
  return reply;
}

/** @returns {HTMLElement} a reply's node, empty, marked as streaming */
function streamingReply() {
  const reply = messageNode("ASSISTANT", "", null);
  reply.classList.add("streaming");
  reply.setAttribute("aria-busy", "true");
  return reply;
}

/**
 * The reply's end: the stored text and time, marked if it was stopped.
 * @param {HTMLElement} reply
 * @param {string} content
 * @param {string | null} createdAt
 * @param {boolean} stopped
 */
export function endReply(reply, content, createdAt, stopped) {
  reply.classList.remove("streaming");
  reply.removeAttribute("aria-busy");
  showReply(reply, content, createdAt);
  if (stopped) markStopped(reply);
}

/**
 * Shows the reply's text so far (while it streams, `createdAt` is null).
 * @param {HTMLElement} reply
 * @param {string} content
 * @param {string | null} createdAt
 */
export function showReply(reply, content, createdAt) {
  fillMessage(reply, content, createdAt);
  if (reply.isConnected) scrollToEnd();
}

// ---------- reasoning ----------

/**
 * The reply's reasoning, in a collapsed "Thinking" block above its answer (opened, it
 * stays open while the reasoning streams); none when `reasoning` is empty.
 * @param {HTMLElement} item a node from messageNode
 * @param {string} reasoning
 * @param {boolean} streaming whether the reasoning is still coming
 */
export function showThinking(item, reasoning, streaming) {
  let block = item.querySelector(":scope > .thinking");
  if (!reasoning) {
    block?.remove();
    return;
  }
  if (!block) {
    block = document.createElement("details");
    block.className = "thinking";
    const summary = document.createElement("summary");
    const text = document.createElement("div");
    text.className = "thinking-text";
    block.append(summary, text);
    item.prepend(block);
  }
  /** @type {HTMLElement} */ (block.querySelector("summary")).textContent = streaming ? "Thinking…" : "Thinking";
  /** @type {HTMLElement} */ (block.querySelector(".thinking-text")).textContent = reasoning;
}

// ---------- tool calls ----------
// A reply that asks for tool calls shows a card for each: the tool's name, its
// arguments, and its result once there is one (from the chat's history: the TOOL
// message after the reply), else, while the call waits for an answer, Run and Decline
// (the person approves each call). The buttons wait while a reply streams.

/** Whether the cards' buttons can be used now. */
let callsOn = true;

/**
 * The cards of the reply's tool calls, none answered yet (`setCallResult`,
 * `showWaitingCalls` fill them).
 * @param {HTMLElement} item a node from messageNode
 * @param {ToolCall[]} calls
 */
export function showCalls(item, calls) {
  item.querySelector(":scope > .calls")?.remove();
  item.classList.toggle("asks", calls.length > 0);
  if (!calls.length) return;
  const box = document.createElement("div");
  box.className = "calls";
  box.append(...calls.map((call, k) => callCard(call, k, calls.length)));
  item.querySelector(":scope > .foot")?.before(box);
}

/**
 * @param {ToolCall} call
 * @param {number} index
 * @param {number} count how many calls the reply asks for
 * @returns {HTMLElement}
 */
function callCard(call, index, count) {
  const card = document.createElement("div");
  card.className = "call";
  card.dataset.callId = call.id;
  card.dataset.tool = call.name;
  card.tabIndex = -1; // the focus can rest on it once its buttons are gone
  card.setAttribute("role", "group");
  const which = count > 1 ? ` (${index + 1} of ${count})` : "";
  card.setAttribute("aria-label", `Tool call${which}: ${call.name}`);
  const head = document.createElement("div");
  head.className = "call-head";
  const kind = document.createElement("span");
  kind.className = "call-kind";
  kind.textContent = "Tool";
  const name = document.createElement("code");
  name.className = "call-name";
  name.textContent = call.name;
  const status = document.createElement("span");
  status.className = "call-status";
  head.append(kind, name, status);
  const args = document.createElement("pre");
  args.className = "call-args";
  args.textContent = prettyArguments(call.arguments);
  args.setAttribute("aria-label", "Arguments");
  const body = document.createElement("div");
  body.className = "call-body";
  card.append(head, args, body);
  fillCard(card, "open");
  return card;
}

/**
 * A call's arguments as the card shows them: JSON indented, "no arguments" for none.
 * @param {string} text
 * @returns {string}
 */
function prettyArguments(text) {
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value) && !Object.keys(value).length) {
      return "(no arguments)";
    }
    return JSON.stringify(value, null, 2);
  } catch {
    return text;
  }
}

/**
 * @param {string} content a call's result
 * @returns {string} what the card's status says of it
 */
function resultStatus(content) {
  if (content === DECLINED) return "Declined";
  if (content === CANCELLED) return "Cancelled";
  if (content === UNKNOWN_TOOL) return "Unknown tool";
  if (content.startsWith("error:")) return "Error";
  return "Done";
}

/**
 * Shows a card as: "done" (its result stored), "answered" (answered here, not sent yet),
 * "waiting" (for the person: Run and Decline) or "open" (no result known).
 * @param {HTMLElement} card
 * @param {"done" | "answered" | "waiting" | "open"} how
 * @param {string} [content] the result, when there is one
 */
function fillCard(card, how, content = "") {
  const name = card.dataset.tool ?? "";
  card.dataset.state = how;
  const status = /** @type {HTMLElement} */ (card.querySelector(".call-status"));
  const body = /** @type {HTMLElement} */ (card.querySelector(".call-body"));
  body.replaceChildren();
  if (how === "waiting") {
    status.textContent = "Waiting for your approval";
    if (!knowsTool(name)) {
      const note = document.createElement("p");
      note.className = "call-note";
      note.textContent = `This page has no tool named “${name}”: Run answers “${UNKNOWN_TOOL}”.`;
      body.append(note);
    }
    const buttons = document.createElement("div");
    buttons.className = "call-buttons";
    buttons.append(
      callButton("run-tool", "Run", `Run ${name}`, true),
      callButton("decline-tool", "Decline", `Decline ${name}`, false),
    );
    body.append(buttons);
    return;
  }
  if (how === "open") {
    status.textContent = "No result";
    return;
  }
  status.textContent = how === "answered" ? "Answered" : resultStatus(content);
  const result = document.createElement("pre");
  result.className = "call-result";
  result.textContent = content;
  result.setAttribute("aria-label", "Result");
  body.append(result);
}

/**
 * @param {"run-tool" | "decline-tool"} action
 * @param {string} text
 * @param {string} label
 * @param {boolean} primary
 * @returns {HTMLButtonElement}
 */
function callButton(action, text, label, primary) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = primary ? "call-action primary" : "call-action";
  button.dataset.action = action;
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.disabled = !callsOn;
  return button;
}

/**
 * The card of the call `callId` in the reply `item`, if it shows one (call ids are only
 * unique within a reply).
 * @param {HTMLElement} item
 * @param {string} callId
 * @returns {HTMLElement | null}
 */
function cardOf(item, callId) {
  for (const card of item.querySelectorAll(":scope > .calls > .call")) {
    if (card instanceof HTMLElement && card.dataset.callId === callId) return card;
  }
  return null;
}

/**
 * The call `callId` of the reply `item` has a stored result.
 * @param {HTMLElement} item
 * @param {string} callId
 * @param {string} content
 */
export function setCallResult(item, callId, content) {
  const card = cardOf(item, callId);
  if (card) fillCard(card, "done", content);
}

/**
 * The open chat's calls that wait for results: each with the answer given (not sent
 * yet), or Run and Decline.
 */
export function showWaitingCalls() {
  const pending = state.current === null ? undefined : state.calls.get(state.current);
  const item = pending ? findMessage(pending.replyId) : null;
  if (!pending || !item) return;
  for (const call of pending.calls) {
    const card = cardOf(item, call.id);
    if (!card || card.dataset.state === "done") continue;
    const answer = pending.answers.get(call.id);
    if (answer === undefined) fillCard(card, "waiting");
    else fillCard(card, "answered", answer);
  }
}

/**
 * After a call was answered: the focus goes to the next card waiting in the reply (its
 * Run button), else stays on the card answered.
 * @param {HTMLElement} card
 */
export function focusAfterAnswer(card) {
  const item = card.closest(".msg");
  const next = item?.querySelector(".call[data-state='waiting'] button[data-action='run-tool']");
  if (next instanceof HTMLButtonElement && !next.disabled) next.focus();
  else card.focus();
}

/**
 * Whether the cards' Run and Decline can be used (not while a reply streams, nor while
 * another version is being shown).
 * @param {boolean} on
 */
export function enableCalls(on) {
  if (on === callsOn) return;
  callsOn = on;
  for (const button of ui.messages.querySelectorAll(".call-buttons button")) {
    if (button instanceof HTMLButtonElement) button.disabled = !on;
  }
}

// ---------- the list of chats ----------

/**
 * A small button of a chat in the list (pin, archive, share), its action in `data-action`.
 * @param {string} action
 * @param {string} label
 * @param {string} path the icon's SVG path
 * @param {boolean | null} pressed for a toggle, whether it is on
 * @returns {HTMLButtonElement}
 */
function itemButton(action, label, path, pressed) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon small item-action ${action}`;
  button.dataset.action = action;
  button.setAttribute("aria-label", label);
  button.title = label;
  if (pressed !== null) button.setAttribute("aria-pressed", String(pressed));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
  line.setAttribute("d", path);
  svg.append(line);
  button.append(svg);
  return button;
}

const PIN = "M9 4h6l-1 6 3 3H7l3-3-1-6zM12 13v7";
const ARCHIVE = "M4 5h16v4H4zM6 9v10h12V9M10 13h4";
const SHARE = "M10 14l10-10M14 4h6v6M18 14v6H4V6h6";

/**
 * @param {SessionSummary} session
 * @returns {HTMLLIElement}
 */
function sessionItem(session) {
  const li = document.createElement("li");
  li.dataset.id = session.id;
  if (session.pinned) li.classList.add("pinned");
  const link = document.createElement("a");
  link.href = `#/s/${session.id}`;
  link.dataset.id = session.id;
  if (session.id === state.current) link.setAttribute("aria-current", "true");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = session.title || "New chat";
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = `${formatTime(session.updatedAt)} · ${session.messageCount} messages`;
  link.append(name, when);
  const actions = document.createElement("span");
  actions.className = "item-actions";
  const pinned = Boolean(session.pinned);
  const archived = Boolean(session.archived);
  actions.append(
    itemButton("pin", pinned ? "Unpin" : "Pin", PIN, pinned),
    itemButton("archive", archived ? "Restore from the archive" : "Archive", ARCHIVE, archived),
    itemButton("share", "Share", SHARE, null),
  );
  li.append(link, actions);
  return li;
}

/**
 * A heading between the groups of the list (pinned chats, the others).
 * @param {string} text
 * @returns {HTMLLIElement}
 */
function groupLabel(text) {
  const li = document.createElement("li");
  li.className = "group-label";
  li.setAttribute("role", "presentation");
  li.textContent = text;
  return li;
}

/**
 * Shows a chat in the list as the server returned it (renamed, rewound), where it is.
 * @param {SessionSummary} session
 */
export function updateListed(session) {
  for (const link of ui.sessions.querySelectorAll("a")) {
    if (link.dataset.id === session.id) link.closest("li")?.replaceWith(sessionItem(session));
  }
}

/**
 * A page of the list: in place of what it showed, or after it (`append`). The pinned
 * chats (given with the first page) come first, under a heading of their own, and are
 * not shown again among the others.
 * @param {SessionPage} page
 * @param {boolean} append
 * @param {SessionSummary[]} [pinned]
 */
export function showSessions({ edges, pageInfo }, append, pinned = []) {
  if (!append) {
    ui.sessions.replaceChildren();
    if (pinned.length) {
      ui.sessions.append(groupLabel("Pinned"), ...pinned.map(sessionItem), groupLabel("Recent"));
    }
  }
  const shown = new Set(Array.from(ui.sessions.querySelectorAll("a"), (a) => a.dataset.id));
  for (const { node } of edges) if (!shown.has(node.id)) ui.sessions.append(sessionItem(node));
  ui.more.hidden = !pageInfo.hasNextPage;
  ui.empty.hidden = ui.sessions.querySelector("a") !== null;
  showElsewhere();
}

/**
 * Whether the list shows the archive: its heading, the toggle, the empty list's words.
 * @param {boolean} archive
 * @param {boolean} admin admin mode has no archive of its own
 */
export function showArchiveView(archive, admin) {
  ui.archiveView.hidden = admin;
  ui.archiveView.textContent = archive ? "Back to my chats" : "Archived";
  ui.archiveView.setAttribute("aria-pressed", String(archive));
  if (archive) ui.listTitle.textContent = "Archived chats";
  ui.empty.textContent = archive ? "No archived chats." : "No chats yet.";
}

// ---------- share links ----------

/**
 * The share panel for the chat `title` (null: closed): its links, each with Copy and
 * Revoke.
 * @param {string | null} title
 * @param {Share[]} [shares]
 */
export function showShares(title, shares = []) {
  ui.sharePanel.hidden = title === null;
  ui.shareError.textContent = "";
  if (title === null) return;
  ui.shareAbout.textContent =
    `Anyone with a link can read \u201c${title}\u201d as it was when the link was made.`;
  ui.shareLinks.replaceChildren(...shares.map(shareItem));
  if (!shares.length) {
    const none = document.createElement("li");
    none.className = "share-none";
    none.textContent = "No links yet.";
    ui.shareLinks.append(none);
  }
}

/**
 * @param {Share} share
 * @returns {HTMLLIElement}
 */
function shareItem(share) {
  const li = document.createElement("li");
  li.dataset.shareId = share.id;
  const url = document.createElement("input");
  url.type = "text";
  url.readOnly = true;
  url.value = share.url;
  url.className = "share-url";
  url.setAttribute("aria-label", "Share link");
  const copy = document.createElement("button");
  copy.type = "button";
  copy.dataset.action = "copy";
  copy.textContent = "Copy";
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.dataset.action = "revoke";
  revoke.className = "danger";
  revoke.textContent = "Revoke";
  li.append(url, copy, revoke);
  return li;
}

/** @param {string} text what went wrong with a share, shown in the panel */
export function showShareError(text) {
  ui.shareError.textContent = text;
}

/**
 * With the list empty, what the server saw of chats in a Redis it does not use: how to
 * serve them (the same words as its start log). Shown as text, never as markup.
 */
export function showElsewhere() {
  ui.elsewhere.textContent = state.elsewhere;
  ui.elsewhere.hidden = !state.elsewhere || ui.sessions.children.length > 0;
}

/**
 * Which chats the list shows: the page's own, or (admin mode) everyone's; the form for
 * the admin token shows with its own chats when the server has one.
 * @param {boolean} admin
 */
export function showListMode(admin) {
  ui.listTitle.textContent = admin ? "All chats" : "My chats";
  ui.myChats.hidden = !admin;
  ui.adminForm.hidden = admin || !state.adminOffered;
  if (admin) ui.adminError.textContent = "";
}

/** The admin token entered was not accepted: the form says so (the list is the page's own). */
export function showAdminRejected() {
  showListMode(false);
  ui.adminError.textContent = "That token was not accepted.";
}

export function markCurrentInList() {
  for (const link of ui.sessions.querySelectorAll("a")) {
    if (link.dataset.id === state.current) link.setAttribute("aria-current", "true");
    else link.removeAttribute("aria-current");
  }
}
