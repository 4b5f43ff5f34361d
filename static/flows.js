// @ts-check
// What the page does: loads the list of chats, opens, creates and deletes a chat, sends
// a message and streams its reply through the `chat` subscription, and recovers a turn
// whose reply a lost connection cut off.

import {
  checkIdentity, client, identityReady, mutateCreateSession, mutateDeleteSession, querySession,
  querySessions, saveAdminToken, subscribeChat,
} from "./queries.js";
import { state } from "./state.js";
import {
  clearInput, giveBack, hideNotice, markCurrentInList, openDrawer, showAdminRejected, showBusy,
  showDeletable, showError, showListMode, showMessages, showNotice, showReply, showSessions,
  showTitle, showTurn, storedCount, switchDraft, tell, ui,
} from "./view.js";

/** @import { GraphQLError } from "./graphql.js" */
/** @import { Message, Session } from "./queries.js" */
/** @import { PendingTurn } from "./state.js" */

// How long a turn cut off by a lost connection is looked for in the history: as long
// as the server waits for the model by default (LLM_TIMEOUT_SECONDS).
const RECOVERY_MS = 60000;

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** @param {boolean} on whether a reply is on its way */
function setStreaming(on) {
  state.streaming = on;
  showBusy(on);
}

// The messages stored in a chat; then the message of a cut-off turn still awaited.
/**
 * @param {Message[]} messages
 * @param {string | null} [sessionId]
 */
function showChat(messages, sessionId = null) {
  const pending = sessionId === null ? undefined : state.pending.get(sessionId);
  const waiting = pending && !holdsTurn(messages, pending) ? pending.node : null;
  showMessages(messages, waiting);
}

// ---------- sessions ----------

/**
 * Loads the list of chats (the page's own, or everyone's in admin mode): its first page
 * in place of what it shows, or (`append`) the next page after it.
 * @param {{ append?: boolean }} [options]
 */
export async function loadSessions({ append = false } = {}) {
  const seq = ++state.listSeq; // only the newest answer is shown
  let data;
  try {
    data = await querySessions(append ? state.sessionsAfter : null);
    if (seq !== state.listSeq) return;
  } catch (error) {
    if (seq !== state.listSeq) return;
    showError(error);
    return;
  }
  showListMode(data.admin);
  showSessions(data.page, append);
  state.sessionsAfter = data.page.pageInfo.endCursor;
}

/**
 * Admin mode with `token` (the list shows every chat, requests go with the admin token);
 * an empty token: back to the page's own chats. A token the server rejects is forgotten.
 * @param {string} token
 */
export function useAdminToken(token) {
  saveAdminToken(token);
  client.reconnect();
  loadSessions();
}

/**
 * The page's identity changed under it: the list follows (a new guest has no chats; a
 * rejected admin token leaves the page's own chats, and the form says so).
 * @param {import("./queries.js").IdentityChange} change
 */
export function identityChanged(change) {
  if (change === "admin-rejected") showAdminRejected();
  loadSessions();
}

/**
 * Opens the chat `id` (null: no chat, a new one starts with the first message).
 * @param {string | null} id
 */
export async function openSession(id) {
  switchDraft(state.current, id);
  state.current = id;
  markCurrentInList();
  hideNotice();
  if (!id) {
    showTitle(null);
    showDeletable(false);
    showChat([]);
    return;
  }
  let session;
  try {
    session = (await querySession(id)).session;
  } catch (error) {
    if (/** @type {GraphQLError} */ (error).code !== "NOT_FOUND") {
      if (state.current === id) showError(error);
      return;
    }
    session = null; // not this page's to see: as if there were no such chat
  }
  if (state.current !== id) return; // another session was opened meanwhile
  if (!session) {
    showNotice("NOT_FOUND");
    history.replaceState(null, "", location.pathname);
    state.current = null;
    showDeletable(false);
    showChat([]);
    return;
  }
  showTitle(session.title);
  showDeletable(true);
  showChat(session.messages, id);
  const note = state.notes.get(id);
  state.notes.delete(id);
  if (note) showNotice(...note);
}

/**
 * Creates a chat and opens it.
 * @param {string | null} title
 * @returns {Promise<string>} its id
 */
async function createSession(title) {
  const data = await mutateCreateSession(title);
  const session = data.createSession;
  if (state.current) switchDraft(state.current, session.id); // from no chat, the text comes along
  state.current = session.id;
  history.pushState(null, "", `#/s/${session.id}`);
  showTitle(session.title);
  showDeletable(true);
  showChat([]);
  await loadSessions();
  return session.id;
}

/** The "New chat" form: a chat with the title typed there, if any. */
export async function newChat() {
  if (state.streaming) return;
  try {
    await createSession(ui.newTitle.value.trim() || null);
    ui.newTitle.value = "";
    openDrawer(false);
    ui.input.focus();
  } catch (error) {
    showError(error);
  }
}

/** Deletes the open chat, once the person confirms it. */
export async function deleteOpenSession() {
  const id = state.current;
  if (!id || state.streaming) return;
  if (!window.confirm("Delete this chat and all of its messages?")) return;
  try {
    await mutateDeleteSession(id);
  } catch (error) {
    showError(error);
    return;
  }
  history.pushState(null, "", location.pathname);
  await openSession(null);
  await loadSessions();
}

/**
 * Shows the chat's title as stored (the server may have named it from the first message).
 * @param {string} sessionId
 */
async function refreshTitle(sessionId) {
  try {
    const data = await querySession(sessionId);
    if (data.session && sessionId === state.current) showTitle(data.session.title);
  } catch { /* the title can wait for the next load */ }
}

// ---------- a turn ----------

/**
 * Sends `text` in the open chat (creating one if none is open) and streams the reply.
 * @param {string} text
 */
export async function send(text) {
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
    await identityReady(); // the socket sends the page's token when it opens
    await client.ready();
  } catch (error) {
    showError(error);
    setStreaming(false);
    return;
  }
  if (sessionId !== state.current) {
    // Another chat was opened while this one connected: the text waits in its draft.
    setStreaming(false);
    return;
  }
  streamTurn(sessionId, text);
}

/**
 * The turn itself, once the chat exists and the socket is open: the message, then the
 * reply token by token, painted once per frame.
 * @param {string} sessionId
 * @param {string} text
 * @param {boolean} [retried] whether the socket's identity was renewed for this turn
 */
function streamTurn(sessionId, text, retried = false) {
  clearInput();
  const baseline = storedCount();
  const { mine, reply } = showTurn(text);

  let content = "";
  let frame = 0;
  let finished = false;
  const paint = () => {
    frame = 0;
    showReply(reply, content, null);
  };
  const settle = () => {
    setStreaming(false);
    if (sessionId === state.current) loadSessions().then(markCurrentInList);
    refreshTitle(sessionId);
  };
  subscribeChat(sessionId, text, {
    next: (data) => {
      const event = data.chat;
      if (event.done) {
        finished = true;
        cancelAnimationFrame(frame);
        content = event.message?.content ?? content;
        reply.classList.remove("streaming");
        showReply(reply, content, event.message?.createdAt ?? new Date().toISOString());
        return;
      }
      content += event.token;
      if (!frame) frame = requestAnimationFrame(paint);
    },
    error: (error) => {
      cancelAnimationFrame(frame);
      if (finished) { settle(); return; } // the whole reply came; only its end was lost
      reply.remove();
      if (error.code === "UNAUTHENTICATED" && !retried) {
        // The server did not accept the socket's token (nothing was stored): the page
        // renews its identity as for any request, then sends the message once more.
        mine.remove();
        checkIdentity().then(() => {
          if (sessionId === state.current) { streamTurn(sessionId, text, true); return; }
          giveBack(sessionId, text);
          setStreaming(false);
        });
        return;
      }
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

/**
 * Whether `messages` holds the turn: its text as a user message at or after where it
 * was sent (`baseline`), answered.
 * @param {Message[]} messages
 * @param {{ text: string, baseline: number }} turn
 * @returns {boolean}
 */
function holdsTurn(messages, { text, baseline }) {
  for (let i = baseline; i < messages.length - 1; i += 1) {
    const [asked, answer] = [messages[i], messages[i + 1]];
    if (asked.role === "USER" && asked.content === text && answer.role === "ASSISTANT") return true;
  }
  return false;
}

/**
 * Polls the chat's history, at growing intervals for up to RECOVERY_MS, for the turn:
 * {session} once it holds it, else {reached} telling whether the server answered last.
 * @param {string} sessionId
 * @param {{ text: string, baseline: number }} turn
 * @returns {Promise<{ session: Session, reached?: undefined } | { session?: undefined, reached: boolean }>}
 */
async function storedSession(sessionId, turn) {
  const deadline = Date.now() + RECOVERY_MS;
  let reached = false;
  for (let wait = 1000; Date.now() < deadline; wait = Math.min(wait * 1.25, 4000)) {
    await sleep(wait);
    let data;
    try {
      data = await querySession(sessionId);
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

/**
 * Keeps the message of a turn cut off by a lost connection, as pending, until the
 * history holds the turn (then shows it) or RECOVERY_MS pass (then gives the text back).
 * @param {PendingTurn} turn
 */
async function awaitStoredTurn(turn) {
  const { sessionId, text, node } = turn;
  node.classList.add("pending");
  state.pending.set(sessionId, turn);
  const { session, reached } = await storedSession(sessionId, turn);
  state.pending.delete(sessionId);
  node.classList.remove("pending");
  if (session) {
    if (sessionId === state.current) showChat(session.messages, sessionId);
    return;
  }
  // Not stored in time (or not known, if the server stayed out of reach): the text goes
  // back, so it can be sent again.
  node.classList.add("failed");
  giveBack(sessionId, text);
  tell(sessionId, reached ? "NOT_STORED" : "NETWORK");
}
