// The chat page: sessions in the sidebar, a conversation, replies streamed through the
// `chat` subscription. It uses the public GraphQL API only.

import { GraphQLClient } from "./graphql.js";
import { renderMarkdown } from "./markdown.js";

const TOKEN_KEY = "chat.adminToken";
const PAGE = 30;

const Q = {
  info: "query { serverInfo { model adminRequired maxMessageChars } }",
  sessions: `query Sessions($first: Int!, $after: String) {
    sessions(first: $first, after: $after) {
      edges { node { id title updatedAt messageCount } }
      pageInfo { hasNextPage endCursor }
    }
  }`,
  session: `query Session($id: ID!) {
    session(id: $id) { id title messages { role content createdAt } }
  }`,
  create: `mutation Create($input: CreateSessionInput) {
    createSession(input: $input) { id title updatedAt messageCount }
  }`,
  remove: "mutation Delete($id: ID!) { deleteSession(id: $id) }",
  chat: `subscription Chat($sessionId: ID!, $message: String!) {
    chat(sessionId: $sessionId, message: $message) { token done message { role content createdAt } }
  }`,
};

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
};

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"), sidebar: $("sidebar"), scrim: $("scrim"), menu: $("menu"),
  sessions: $("sessions"), empty: $("sessions-empty"), more: $("sessions-more"),
  newForm: $("new-chat-form"), newTitle: $("new-title"),
  adminForm: $("admin-form"), adminToken: $("admin-token"), adminError: $("admin-error"),
  title: $("chat-title"), model: $("model"), conn: $("conn"), del: $("delete"),
  messages: $("messages"), welcome: $("welcome"), notice: $("notice"),
  composer: $("composer"), input: $("input"), send: $("send"),
};

const state = {
  current: null, // session id
  streaming: false,
  sessionsAfter: null,
  listSeq: 0,
  maxChars: 32000,
  drafts: new Map(), // session id ("" for no chat) -> text waiting in that chat's input
  notes: new Map(), // session id -> [code, message] to show when that chat is opened
  pending: new Map(), // session id -> {text, baseline, node}: a turn whose reply was cut off
};

// How long a turn cut off by a lost connection is looked for in the history: as long
// as the server waits for the model by default (LLM_TIMEOUT_SECONDS).
const RECOVERY_MS = 60000;

const client = new GraphQLClient({
  httpUrl: "/graphql",
  wsUrl: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
  token: () => localStorage.getItem(TOKEN_KEY),
  onStatus: (status) => {
    ui.conn.dataset.state = status;
    ui.conn.textContent = { open: "connected", connecting: "connecting", closed: "reconnecting" }[status];
    if (status === "open" && ui.notice.dataset.code === "CONNECTION_LOST") hideNotice();
    if (status === "closed" && !ui.notice.hidden) return;
    if (status === "closed") showNotice("CONNECTION_LOST");
  },
});

// ---------- helpers ----------

function showNotice(code, fallback) {
  ui.notice.textContent = MESSAGES_OF_CODE[code] ?? fallback ?? "Something went wrong.";
  ui.notice.dataset.code = code;
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = "";
  delete ui.notice.dataset.code;
}

function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function setStreaming(on) {
  state.streaming = on;
  ui.input.disabled = on;
  ui.send.disabled = on;
  ui.composer.setAttribute("aria-busy", String(on));
  if (!on) ui.input.focus();
}

function sessionFromHash() {
  const match = location.hash.match(/^#\/s\/([0-9a-f-]{36})$/);
  return match ? match[1] : null;
}

function openDrawer(open) {
  ui.app.classList.toggle("drawer-open", open);
  ui.scrim.hidden = !open;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// ---------- per-chat input ----------
// The input belongs to the open chat: what is typed in one waits there while another
// is open, and a message that was not stored goes back into the chat it was sent in.

const draftKey = (id) => id ?? "";

function switchDraft(from, to) {
  if (from === to) return;
  if (ui.input.value) state.drafts.set(draftKey(from), ui.input.value);
  else state.drafts.delete(draftKey(from));
  ui.input.value = state.drafts.get(draftKey(to)) ?? "";
  state.drafts.delete(draftKey(to));
  autosize();
}

function giveBack(sessionId, text) {
  const join = (draft) => (draft ? `${text}\n${draft}` : text);
  if (sessionId === state.current) {
    ui.input.value = join(ui.input.value);
    autosize();
  } else {
    state.drafts.set(draftKey(sessionId), join(state.drafts.get(draftKey(sessionId))));
  }
}

// A notice about one chat: shown now if it is open, else when it is opened next.
function tell(sessionId, code, message) {
  if (sessionId === state.current) showNotice(code, message);
  else state.notes.set(sessionId, [code, message]);
}

// ---------- messages ----------

function messageNode(role, content, createdAt) {
  const item = document.createElement("article");
  item.className = `msg ${role.toLowerCase()}`;
  item.dataset.role = role;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const meta = document.createElement("time");
  meta.className = "meta";
  item.append(bubble, meta);
  fillMessage(item, content, createdAt);
  return item;
}

function fillMessage(item, content, createdAt) {
  const bubble = item.querySelector(".bubble");
  if (item.dataset.role === "USER") bubble.textContent = content;
  else renderMarkdown(content, bubble);
  const meta = item.querySelector(".meta");
  if (createdAt) {
    meta.dateTime = createdAt;
    meta.textContent = formatTime(createdAt);
    meta.title = new Date(createdAt).toLocaleString();
  }
}

// The messages stored in a chat; then the message of a cut-off turn still awaited.
function showMessages(messages, sessionId = null) {
  const pending = state.pending.get(sessionId);
  const waiting = pending && !holdsTurn(messages, pending) ? pending.node : null;
  ui.messages.replaceChildren();
  if (!messages.length && !waiting) {
    ui.messages.append(ui.welcome);
    return;
  }
  for (const m of messages) ui.messages.append(messageNode(m.role, m.content, m.createdAt));
  if (waiting) ui.messages.append(waiting);
  scrollToEnd();
}

// How many stored messages the open chat shows: where the next turn will be stored.
function storedCount() {
  return ui.messages.querySelectorAll(".msg:not(.failed):not(.pending)").length;
}

// ---------- sessions ----------

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

async function loadSessions({ append = false } = {}) {
  const seq = ++state.listSeq; // only the newest answer is shown
  let data;
  try {
    data = await client.request(Q.sessions, { first: PAGE, after: append ? state.sessionsAfter : null });
    if (seq !== state.listSeq) return;
  } catch (error) {
    if (seq !== state.listSeq) return;
    if (error.code === "UNAUTHENTICATED") {
      ui.adminForm.hidden = false;
      ui.adminError.textContent = localStorage.getItem(TOKEN_KEY) ? "That token was not accepted." : "";
      ui.sessions.replaceChildren();
      ui.empty.hidden = true;
      ui.more.hidden = true;
      return;
    }
    showNotice(error.code, error.message);
    return;
  }
  ui.adminForm.hidden = true;
  const { edges, pageInfo } = data.sessions;
  if (!append) ui.sessions.replaceChildren();
  for (const { node } of edges) ui.sessions.append(sessionItem(node));
  state.sessionsAfter = pageInfo.endCursor;
  ui.more.hidden = !pageInfo.hasNextPage;
  ui.empty.hidden = ui.sessions.children.length > 0;
}

function markCurrentInList() {
  for (const link of ui.sessions.querySelectorAll("a")) {
    if (link.dataset.id === state.current) link.setAttribute("aria-current", "true");
    else link.removeAttribute("aria-current");
  }
}

async function openSession(id) {
  switchDraft(state.current, id);
  state.current = id;
  markCurrentInList();
  hideNotice();
  if (!id) {
    ui.title.textContent = "New chat";
    ui.del.hidden = true;
    showMessages([]);
    return;
  }
  let data;
  try {
    data = await client.request(Q.session, { id });
  } catch (error) {
    showNotice(error.code, error.message);
    return;
  }
  if (state.current !== id) return; // another session was opened meanwhile
  if (!data.session) {
    showNotice("NOT_FOUND");
    history.replaceState(null, "", location.pathname);
    state.current = null;
    ui.del.hidden = true;
    showMessages([]);
    return;
  }
  ui.title.textContent = data.session.title || "New chat";
  ui.del.hidden = false;
  showMessages(data.session.messages, id);
  const note = state.notes.get(id);
  state.notes.delete(id);
  if (note) showNotice(...note);
}

async function createSession(title) {
  const input = title ? { title } : null;
  const data = await client.request(Q.create, { input });
  const session = data.createSession;
  if (state.current) switchDraft(state.current, session.id); // from no chat, the text comes along
  state.current = session.id;
  history.pushState(null, "", `#/s/${session.id}`);
  ui.title.textContent = session.title || "New chat";
  ui.del.hidden = false;
  showMessages([]);
  await loadSessions();
  return session.id;
}

// ---------- a turn ----------

async function send(text) {
  if (state.streaming) return;
  if (!text.trim()) return;
  if (text.length > state.maxChars) {
    showNotice("BAD_USER_INPUT", `A message can be at most ${state.maxChars} characters.`);
    return;
  }
  hideNotice();
  setStreaming(true);
  let sessionId = state.current;
  try {
    if (!sessionId) sessionId = await createSession(ui.newTitle.value.trim() || null);
    await client.ready();
  } catch (error) {
    showNotice(error.code, error.message);
    setStreaming(false);
    return;
  }
  if (sessionId !== state.current) {
    // Another chat was opened while this one connected: the text waits in its draft.
    setStreaming(false);
    return;
  }
  ui.input.value = "";
  autosize();
  if (ui.welcome.isConnected) ui.welcome.remove();
  const baseline = storedCount();
  const mine = messageNode("USER", text, new Date().toISOString());
  const reply = messageNode("ASSISTANT", "", null);
  reply.classList.add("streaming");
  ui.messages.append(mine, reply);
  scrollToEnd();

  let content = "";
  let frame = 0;
  let finished = false;
  const paint = () => {
    frame = 0;
    fillMessage(reply, content, null);
    scrollToEnd();
  };
  const settle = () => {
    setStreaming(false);
    if (sessionId === state.current) loadSessions().then(markCurrentInList);
    refreshTitle(sessionId);
  };
  client.subscribe(Q.chat, { sessionId, message: text }, {
    next: (data) => {
      const event = data.chat;
      if (event.done) {
        finished = true;
        cancelAnimationFrame(frame);
        content = event.message?.content ?? content;
        reply.classList.remove("streaming");
        fillMessage(reply, content, event.message?.createdAt ?? new Date().toISOString());
        scrollToEnd();
        return;
      }
      content += event.token;
      if (!frame) frame = requestAnimationFrame(paint);
    },
    error: (error) => {
      cancelAnimationFrame(frame);
      if (finished) { settle(); return; } // the whole reply came; only its end was lost
      reply.remove();
      if (error.code === "CONNECTION_LOST" && error.sent !== false) {
        // The turn goes on on the server and is stored when complete: keep the message,
        // and show the stored reply once the history has it.
        awaitStoredTurn({ sessionId, text, baseline, node: mine }).then(settle);
        return;
      }
      // Nothing was stored: the text goes back into the chat it was written in.
      giveBack(sessionId, text);
      if (error.code === "CONNECTION_LOST") { // it never left
        mine.remove();
        if (sessionId === state.current) showNotice("CONNECTION_LOST");
      } else {
        mine.classList.add("failed");
        tell(sessionId, error.code, error.message);
      }
      setStreaming(false);
    },
    complete: settle,
  });
}

// ---------- a turn cut off by a lost connection ----------

// Whether `messages` holds the turn: its text as a user message at or after where it
// was sent (`baseline`), answered.
function holdsTurn(messages, { text, baseline }) {
  for (let i = baseline; i < messages.length - 1; i += 1) {
    const [asked, answer] = [messages[i], messages[i + 1]];
    if (asked.role === "USER" && asked.content === text && answer.role === "ASSISTANT") return true;
  }
  return false;
}

// Polls the chat's history, at growing intervals for up to RECOVERY_MS, for the turn:
// {session} once it holds it, else {reached} telling whether the server answered last.
async function storedSession(sessionId, turn) {
  const deadline = Date.now() + RECOVERY_MS;
  let reached = false;
  for (let wait = 1000; Date.now() < deadline; wait = Math.min(wait * 1.25, 4000)) {
    await sleep(wait);
    let data;
    try {
      data = await client.request(Q.session, { id: sessionId });
    } catch {
      reached = false; // the server cannot be reached (yet)
      continue;
    }
    reached = true;
    if (!data.session) break;
    if (holdsTurn(data.session.messages, turn)) return { session: data.session };
  }
  return { reached };
}

async function awaitStoredTurn(turn) {
  const { sessionId, text, node } = turn;
  node.classList.add("pending");
  state.pending.set(sessionId, turn);
  const { session, reached } = await storedSession(sessionId, turn);
  state.pending.delete(sessionId);
  node.classList.remove("pending");
  if (session) {
    if (sessionId === state.current) showMessages(session.messages, sessionId);
    return;
  }
  // Not stored in time (or not known, if the server stayed out of reach): the text goes
  // back, so it can be sent again.
  node.classList.add("failed");
  giveBack(sessionId, text);
  tell(sessionId, reached ? "NOT_STORED" : "NETWORK");
}

async function refreshTitle(sessionId) {
  try {
    const data = await client.request(Q.session, { id: sessionId });
    if (data.session && sessionId === state.current) ui.title.textContent = data.session.title || "New chat";
  } catch { /* the title can wait for the next load */ }
}

// ---------- events ----------

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
}

ui.input.addEventListener("input", autosize);
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.input.value);
  }
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.input.value);
});

ui.newForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.streaming) return;
  try {
    await createSession(ui.newTitle.value.trim() || null);
    ui.newTitle.value = "";
    openDrawer(false);
    ui.input.focus();
  } catch (error) {
    showNotice(error.code, error.message);
  }
});

ui.del.addEventListener("click", async () => {
  const id = state.current;
  if (!id || state.streaming) return;
  if (!window.confirm("Delete this chat and all of its messages?")) return;
  try {
    await client.request(Q.remove, { id });
  } catch (error) {
    showNotice(error.code, error.message);
    return;
  }
  history.pushState(null, "", location.pathname);
  await openSession(null);
  await loadSessions();
});

ui.adminForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.adminToken.value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  ui.adminToken.value = "";
  client.reconnect();
  loadSessions();
});

ui.more.addEventListener("click", () => loadSessions({ append: true }));
ui.menu.addEventListener("click", () => openDrawer(!ui.app.classList.contains("drawer-open")));
ui.scrim.addEventListener("click", () => openDrawer(false));
ui.sessions.addEventListener("click", (event) => {
  if (event.target.closest("a")) openDrawer(false);
});
// Switching chats while a reply streams is fine: the turn goes on on the server.
window.addEventListener("popstate", () => openSession(sessionFromHash()));
window.addEventListener("hashchange", () => {
  const id = sessionFromHash();
  if (id !== state.current) openSession(id);
});

// ---------- start ----------

async function start() {
  client.connect();
  // Open the chat in the address first, so nothing the person does meanwhile (a new
  // chat, a click in the list) is undone when a slower request comes back.
  const opening = openSession(sessionFromHash());
  const listing = loadSessions();
  try {
    const { serverInfo } = await client.request(Q.info);
    ui.model.textContent = serverInfo.model;
    state.maxChars = serverInfo.maxMessageChars;
  } catch (error) {
    showNotice(error.code, error.message);
  }
  await Promise.all([opening, listing]);
  ui.input.focus();
}

start();
