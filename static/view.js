// @ts-check
// What the page shows: the elements of index.html, notices, the connection state, the
// layout's drawer, the composer (with its Stop button) and each chat's draft in it, the
// messages of a chat (a stopped reply marked so) and the list of chats. It builds DOM
// nodes only; nothing here talks to the server.

import { renderMarkdown } from "./markdown.js";
import { state } from "./state.js";

/** @import { ConnectionStatus } from "./graphql.js" */
/** @import { Message, SessionPage, SessionSummary } from "./queries.js" */

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
  more: byId("sessions-more", HTMLButtonElement),
  newForm: byId("new-chat-form", HTMLFormElement),
  newTitle: byId("new-title", HTMLInputElement),
  adminForm: byId("admin-form", HTMLFormElement),
  adminToken: byId("admin-token", HTMLInputElement),
  adminError: byId("admin-error", HTMLParagraphElement),
  title: byId("chat-title", HTMLHeadingElement),
  model: byId("model", HTMLSpanElement),
  conn: byId("conn", HTMLSpanElement),
  del: byId("delete", HTMLButtonElement),
  messages: byId("messages", HTMLElement),
  welcome: byId("welcome", HTMLDivElement),
  notice: byId("notice", HTMLDivElement),
  composer: byId("composer", HTMLFormElement),
  input: byId("input", HTMLTextAreaElement),
  send: byId("send", HTMLButtonElement),
  stop: byId("stop", HTMLButtonElement),
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

/** @param {string | null} title the open chat's title; none for "New chat" */
export function showTitle(title) {
  ui.title.textContent = title || "New chat";
}

/** @param {boolean} on whether the open chat can be deleted (there is one) */
export function showDeletable(on) {
  ui.del.hidden = !on;
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
  item.append(bubble, meta);
  fillMessage(item, content, createdAt);
  if (status === "STOPPED") markStopped(item);
  return item;
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
  item.append(note);
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
  if (!messages.length && !streaming.length) {
    ui.messages.append(ui.welcome);
    return;
  }
  for (const m of messages) ui.messages.append(messageNode(m.role, m.content, m.createdAt, m.status));
  ui.messages.append(...streaming);
  scrollToEnd();
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
  const reply = messageNode("ASSISTANT", "", null);
  reply.classList.add("streaming");
  reply.setAttribute("aria-busy", "true");
  if (shown) {
    if (ui.welcome.isConnected) ui.welcome.remove();
    ui.messages.append(mine, reply);
    scrollToEnd();
  }
  return { mine, reply };
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

// ---------- the list of chats ----------

/**
 * @param {SessionSummary} session
 * @returns {HTMLLIElement}
 */
function sessionItem(session) {
  const li = document.createElement("li");
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
  li.append(link);
  return li;
}

/**
 * A page of the list: in place of what it showed, or after it (`append`).
 * @param {SessionPage} page
 * @param {boolean} append
 */
export function showSessions({ edges, pageInfo }, append) {
  if (!append) ui.sessions.replaceChildren();
  for (const { node } of edges) ui.sessions.append(sessionItem(node));
  ui.more.hidden = !pageInfo.hasNextPage;
  ui.empty.hidden = ui.sessions.children.length > 0;
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
