// @ts-check
// What the page does: loads the list of chats, opens, creates, renames and deletes a
// chat, pages back through its earlier messages, sends a message and streams its reply
// through the `chat` subscription, regenerates the last reply (`regenerate`) and edits the
// last message (`rewind`, then a new turn), follows a reply that streams on the server
// (found running when a chat is opened or the socket reconnects), takes a reply up again
// after a lost connection where it was cut off, and stops one.
//
// A regenerated reply is a turn like the others (the same streaming, following, resuming
// and stopping): it streams into the last reply's node, and the old reply comes back if
// the new one is not stored.
//
// A turn sent by the page has an id the page chooses, so nothing the page does can run
// a message twice: after a lost connection it follows the turn by that id with
// `turn(after: <the last event it showed>)`, and the one case where it sends the message
// again (the server never had the turn) sends the same id, which joins the turn if the
// server does have it after all.

import {
  MESSAGES_PAGE, checkIdentity, client, identityReady, mutateCreateSession, mutateDeleteSession,
  mutateRewind, mutateStopTurn, mutateTitle, newTurnId, queryHeader, queryOlder, querySession,
  querySessions, saveAdminToken, subscribeChat, subscribeRegenerate, subscribeTurn,
} from "./queries.js";
import { state } from "./state.js";
import {
  autosize, clearInput, endReply, findMessage, giveBack, hideNotice, lastTurn, markCurrentInList,
  markStored, nearTop, openDrawer, prependMessages, removeFrom, restartReply, showAdminRejected,
  showBusy, showDeletable, showEditing, showError, showListMode, showMessages, showNotice,
  showRenaming, showReply, showSessions, showStop, showTitle, showTurn, showTurnActions, showUsage,
  switchDraft, tell, ui, updateListed,
} from "./view.js";

/** @import { ConnectionStatus, GraphQLError, Sink } from "./graphql.js" */
/** @import { ActiveTurn, ChatEvent, Message } from "./queries.js" */
/** @import { LiveTurn } from "./state.js" */

// How long the page waits for the server again after a lost connection before it gives
// up on a reply: as long as the server waits for the model by default
// (LLM_TIMEOUT_SECONDS).
const RECOVERY_MS = 60000;

/** The composer as it is shown now: whether it waits (shown only when that changes). */
let shownBusy = false;

/**
 * Shows whether the composer waits (a message is on its way, the page's own reply
 * streams, or the open chat's reply does) and the Stop button for the open chat's reply.
 */
function updateBusy() {
  const open = state.current === null ? undefined : state.turns.get(state.current);
  let own = false;
  for (const turn of state.turns.values()) own ||= turn.own;
  const busy = state.sending || own || open !== undefined;
  state.streaming = busy;
  if (busy !== shownBusy) {
    shownBusy = busy;
    showBusy(busy);
  }
  showStop(open !== undefined, open?.stopping ?? false);
  updateActions();
}

/** Regenerate and Edit on the open chat's last turn, unless a reply streams or an edit is on. */
function updateActions() {
  showTurnActions(state.current !== null && !state.streaming && state.editing === null);
}

/**
 * The position a message id names (ids start with the message's position in the chat).
 * @param {string} id
 * @returns {number}
 */
function positionOf(id) {
  return Number.parseInt(id, 10);
}

/**
 * Whether `messages` holds a message of the turn `turnId` in the role `role` (by default
 * its reply: then the turn was stored).
 * @param {Message[]} messages
 * @param {string} turnId
 * @param {Message["role"]} [role]
 * @returns {boolean}
 */
function holdsTurn(messages, turnId, role = "ASSISTANT") {
  return messages.some((m) => m.turnId === turnId && m.role === role);
}

// The last messages stored in a chat (a page: earlier ones load as the person scrolls up);
// then its turn still streaming, unless stored meanwhile (each message once: the
// person's message is left out if the history has it; a regenerated reply streams in
// the place of the reply it replaces).
/**
 * @param {Message[]} messages the chat's last MESSAGES_PAGE messages (fewer: all of them)
 * @param {string | null} [sessionId]
 */
function showChat(messages, sessionId = null) {
  const live = sessionId === null ? undefined : state.turns.get(sessionId);
  let shown = messages;
  /** @type {HTMLElement[]} */
  let streaming = [];
  if (live && !holdsTurn(messages, live.turnId)) {
    if (live.kind === "regenerate") {
      if (messages.at(-1)?.id === live.replaces) shown = messages.slice(0, -1);
      streaming = [live.reply];
    } else {
      streaming = holdsTurn(messages, live.turnId, "USER") ? [live.reply] : [live.mine, live.reply];
    }
  }
  showMessages(shown, streaming);
  state.older = sessionId === null ? null : {
    sessionId, before: messages[0]?.id ?? null, more: messages.length >= MESSAGES_PAGE, loading: false,
  };
  if (state.editing) showEditing(state.editing.messageId);
  updateActions();
  if (nearTop()) loadOlder(); // the page does not fill the view: no scrolling would ask
}

/**
 * The page of messages before the oldest shown, put before them (the view stays where
 * it was); none once a page came back shorter than asked (the chat's first messages).
 */
export async function loadOlder() {
  const older = state.older;
  if (!older || !older.more || older.loading || older.before === null) return;
  if (older.sessionId !== state.current) return;
  older.loading = true;
  let messages;
  try {
    messages = (await queryOlder(older.sessionId, older.before)).session?.messages ?? [];
  } catch (error) {
    older.loading = false;
    // BAD_USER_INPUT: that message is gone (the chat was rewound elsewhere); NOT_FOUND:
    // the chat is.
    const code = /** @type {GraphQLError} */ (error).code;
    if (code === "BAD_USER_INPUT" || code === "NOT_FOUND") older.more = false;
    else if (state.older === older) showError(error);
    return;
  }
  older.loading = false;
  if (state.older !== older) return; // the chat was shown anew meanwhile
  older.more = messages.length >= MESSAGES_PAGE;
  if (!messages.length) return;
  older.before = messages[0].id;
  prependMessages(messages);
  if (older.more && nearTop()) loadOlder();
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
  cancelEdit();
  stopRenaming();
  switchDraft(state.current, id);
  state.current = id;
  state.older = null;
  markCurrentInList();
  hideNotice();
  updateBusy();
  if (!id) {
    showTitle(null);
    showUsage(null);
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
    showUsage(null);
    showDeletable(false);
    showChat([]);
    return;
  }
  showTitle(session.title);
  showUsage(session.usage);
  showDeletable(true);
  showChat(session.messages, id);
  if (session.activeTurn) follow(id, session.activeTurn, session.messages);
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
  cancelEdit();
  stopRenaming();
  if (state.current) switchDraft(state.current, session.id); // from no chat, the text comes along
  state.current = session.id;
  updateBusy();
  history.pushState(null, "", `#/s/${session.id}`);
  showTitle(session.title);
  showUsage({ inputTokens: 0, outputTokens: 0 });
  showDeletable(true);
  showChat([], session.id);
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
 * Shows the chat's header as stored after a turn (the server may have named it from the
 * first message; the tokens it used grew), and gives the nodes of its last turn the ids
 * of their messages (the page learns the person's message's only from the history).
 * @param {string} sessionId
 */
async function refreshHeader(sessionId) {
  let session;
  try {
    session = (await queryHeader(sessionId)).session;
  } catch {
    return; // the header can wait for the next load
  }
  if (!session || sessionId !== state.current) return;
  showTitle(session.title);
  showUsage(session.usage);
  for (const message of session.messages) {
    if (findMessage(message.id) || !message.turnId) continue;
    const node = ui.messages.querySelector(
      `:scope > .msg:not([data-id])[data-turn-id="${CSS.escape(message.turnId)}"][data-role="${message.role}"]`,
    );
    if (node instanceof HTMLElement && !node.classList.contains("failed")) markStored(node, message);
  }
  updateActions();
}

// ---------- the title ----------

/** Whether a new title is on its way to the server. */
let savingTitle = false;

/** The Rename button: the title shows as an input (Enter saves, Escape cancels). */
export function startRenaming() {
  if (!state.current || state.renaming) return;
  state.renaming = true;
  showRenaming(true);
}

/** The title shows as it was: nothing is saved. */
export function stopRenaming() {
  if (!state.renaming) return;
  state.renaming = false;
  showRenaming(false);
}

/** The title input lost the focus: as Escape, unless its title is being saved. */
export function titleLeft() {
  if (!savingTitle) stopRenaming();
}

/** Saves the title typed (a blank one clears it); the header and the list show it. */
export async function saveTitle() {
  const id = state.current;
  if (!id || !state.renaming || savingTitle) return;
  savingTitle = true;
  try {
    const { updateSession: session } = await mutateTitle(id, ui.titleInput.value.trim());
    updateListed(session);
    if (state.current !== id) return;
    showTitle(session.title);
    showUsage(session.usage);
    stopRenaming();
  } catch (error) {
    if (state.current === id) showError(error); // the input stays, to try again or cancel
  } finally {
    savingTitle = false;
  }
}

// ---------- editing the last message ----------

/**
 * Edit on the person's last message: its text goes into the input (what was typed
 * there waits); sent, the chat is rewound to before that message first.
 * @param {HTMLElement} item the message's node
 */
export function startEdit(item) {
  const sessionId = state.current;
  const messageId = item.dataset.id;
  if (!sessionId || !messageId || state.streaming || state.editing) return;
  state.editing = { sessionId, messageId, draft: ui.input.value };
  ui.input.value = item.querySelector(".bubble")?.textContent ?? "";
  autosize();
  ui.input.focus();
  ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
  showEditing(messageId);
  updateActions();
}

/** Ends an edit without sending: the input holds what it held before, nothing changed. */
export function cancelEdit() {
  const editing = state.editing;
  if (!editing) return;
  state.editing = null;
  if (editing.sessionId === state.current) {
    ui.input.value = editing.draft;
    autosize();
  }
  showEditing(null);
  updateActions();
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
  state.sending = true;
  updateBusy();
  const sessionId = await connectedTo(state.current);
  if (sessionId === null) return;
  if (sessionId !== state.current) {
    // Another chat was opened while this one connected: the text waits in its draft.
    state.sending = false;
    updateBusy();
    return;
  }
  const editing = state.editing?.sessionId === sessionId ? state.editing : null;
  if (editing && !(await rewindTo(editing))) return;
  state.sending = false;
  if (sessionId !== state.current) {
    updateBusy();
    return;
  }
  clearInput();
  if (editing?.draft) giveBack(sessionId, editing.draft); // what was typed before the edit
  const { mine, reply } = showTurn(text);
  const turn = liveTurn(sessionId, newTurnId(), text, true, mine, reply);
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "chat");
}

/**
 * An edit being sent: the chat forgets the edited message and every later one (then
 * the edited text goes as a new turn). Refused (a turn runs, the message is gone), the
 * edit stays as it was and the notice says why.
 * @param {import("./state.js").Editing} editing
 * @returns {Promise<boolean>} whether the chat was rewound
 */
async function rewindTo(editing) {
  state.editing = null; // the edit ends here, whichever chat is open when it returns
  let session;
  try {
    session = (await mutateRewind(editing.sessionId, editing.messageId)).rewind;
  } catch (error) {
    state.sending = false;
    if (editing.sessionId === state.current && !state.editing) state.editing = editing;
    updateBusy();
    tell(editing.sessionId, /** @type {GraphQLError} */ (error).code, /** @type {GraphQLError} */ (error).message);
    return false;
  }
  updateListed(session);
  if (editing.sessionId === state.current) {
    showEditing(null);
    removeFrom(editing.messageId);
    showUsage(session.usage);
  }
  return true;
}

/** Waits for the page's identity and the socket (which sends the page's token when it
 * opens); false, with the error shown and sending over, when either fails.
 * @returns {Promise<boolean>}
 */
async function connected() {
  return (await connectedTo("")) !== null;
}

/** `connected()`, for the session `sessionId`, made first when there is none yet: its
 * id, or null (the error shown) when anything fails.
 * @param {string | null} sessionId
 * @returns {Promise<string | null>}
 */
async function connectedTo(sessionId) {
  try {
    const id = sessionId ?? (await createSession(ui.newTitle.value.trim() || null));
    await identityReady();
    await client.ready();
    return id;
  } catch (error) {
    state.sending = false;
    updateBusy();
    showError(error);
    return null;
  }
}

/** Regenerate on the last reply: the person's last message runs again, its new reply
 * streams in the old one's place (which comes back if the new one is not stored). */
export async function regenerate() {
  const sessionId = state.current;
  if (!sessionId || state.streaming || state.editing) return;
  const last = lastTurn();
  if (!last) return;
  hideNotice();
  state.sending = true;
  updateBusy();
  if (!(await connected())) return;
  state.sending = false;
  if (sessionId !== state.current || !last.reply.isConnected) {
    updateBusy();
    return;
  }
  const text = last.mine.querySelector(".bubble")?.textContent ?? "";
  const turn = liveTurn(sessionId, newTurnId(), text, true, last.mine, last.reply, "regenerate");
  replaceReply(turn);
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "regenerate");
}

/**
 * A regenerated reply begins: the last reply is kept aside (it comes back if the new
 * one is not stored) and its node emptied for the new one.
 * @param {LiveTurn} turn
 */
function replaceReply(turn) {
  const previous = /** @type {HTMLElement} */ (turn.reply.cloneNode(true));
  previous.querySelector(".actions")?.remove();
  turn.previous = previous;
  turn.replaces = turn.reply.dataset.id ?? null;
  restartReply(turn.reply);
  turn.reply.dataset.turnId = turn.turnId;
}

/**
 * A regenerated reply that was not stored: the reply it was to replace shows again.
 * @param {LiveTurn} turn
 */
function restore(turn) {
  turn.mine.classList.remove("pending");
  if (turn.previous && turn.reply.isConnected) turn.reply.replaceWith(turn.previous);
}

/**
 * A turn as the page starts to show it, before its first event.
 * @param {string} sessionId
 * @param {string} turnId
 * @param {string} text
 * @param {boolean} own
 * @param {HTMLElement} mine
 * @param {HTMLElement} reply
 * @param {LiveTurn["kind"]} [kind]
 * @returns {LiveTurn}
 */
function liveTurn(sessionId, turnId, text, own, mine, reply, kind = "chat") {
  if (kind === "chat") {
    mine.dataset.turnId = turnId; // given its id once the turn is stored (refreshHeader)
    reply.dataset.turnId = turnId;
  }
  return {
    sessionId, turnId, kind, text, own, mine, reply, previous: null, replaces: null,
    lastSeq: 0, content: "", frame: 0,
    resumed: false, stopping: false, stopAgain: false, renewed: false, resent: false, ended: false,
  };
}

/**
 * Follows the turn running on a chat that the page does not stream yet: the person's
 * message (unless the history shows it), then the reply from its first event.
 * @param {string} sessionId
 * @param {ActiveTurn} active
 * @param {Message[]} messages the chat's history, as read with `active`
 */
function follow(sessionId, active, messages) {
  if (state.turns.has(sessionId) || holdsTurn(messages, active.turnId)) return;
  if (state.editing?.sessionId === sessionId) cancelEdit(); // the chat changes under it
  if (followRegenerated(sessionId, active, messages)) return;
  const { mine, reply } = showTurn(active.message, active.startedAt, sessionId === state.current);
  if (holdsTurn(messages, active.turnId, "USER")) mine.remove(); // the history shows it
  const turn = liveTurn(sessionId, active.turnId, active.message, false, mine, reply);
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "turn");
}

/**
 * Follows a running turn that regenerates the chat's last reply, in that reply's place.
 * The server does not say a turn is one: a turn is taken for one when the chat ends
 * with the person's message it answers and a reply (the reply's id, once stored, tells
 * whether it took the old one's place; if not, the chat is shown anew).
 * @param {string} sessionId
 * @param {ActiveTurn} active
 * @param {Message[]} messages
 * @returns {boolean} whether it was followed so
 */
function followRegenerated(sessionId, active, messages) {
  const last = messages.at(-1);
  const asked = messages.at(-2);
  if (sessionId !== state.current || last?.role !== "ASSISTANT" || asked?.role !== "USER") return false;
  if (asked.content !== active.message || holdsTurn(messages, active.turnId, "USER")) return false;
  const reply = findMessage(last.id);
  const mine = findMessage(asked.id);
  if (!reply || !mine) return false;
  const turn = liveTurn(sessionId, active.turnId, active.message, false, mine, reply, "regenerate");
  replaceReply(turn);
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "turn");
  return true;
}

/**
 * Subscribes to the turn's events: `chat` sends its message and `regenerate` runs the
 * last one again (with the turn's id: sent again, either joins the turn); `turn`
 * follows it after the last event shown.
 * @param {LiveTurn} turn
 * @param {"chat" | "regenerate" | "turn"} how
 */
function stream(turn, how) {
  /** @type {Sink<ChatEvent>} */
  const sink = {
    next: (event) => onEvent(turn, event),
    error: (error) => onError(turn, how, error),
    complete: () => { if (!turn.ended) lost(turn); },
  };
  if (how === "chat") {
    subscribeChat(turn.sessionId, turn.text, turn.turnId, { ...sink, next: (data) => sink.next(data.chat) });
  } else if (how === "regenerate") {
    subscribeRegenerate(turn.sessionId, turn.turnId, { ...sink, next: (data) => sink.next(data.regenerate) });
  } else {
    subscribeTurn(turn.sessionId, turn.turnId, turn.lastSeq, { ...sink, next: (data) => sink.next(data.turn) });
  }
}

/**
 * One event of the turn: tokens are added to the reply (painted once per frame); the
 * done event shows the stored reply. An event shown already (a join replays the turn
 * from its start) is left out by its number.
 * @param {LiveTurn} turn
 * @param {ChatEvent} event
 */
function onEvent(turn, event) {
  if (turn.ended || event.seq <= turn.lastSeq) return;
  turn.lastSeq = event.seq;
  if (turn.stopAgain) {
    turn.stopAgain = false;
    askToStop(turn);
  }
  if (event.done) {
    finish(turn, event);
    return;
  }
  turn.content += event.token;
  turn.frame ||= requestAnimationFrame(() => {
    turn.frame = 0;
    if (!turn.ended) showReply(turn.reply, turn.content, null);
  });
}

/**
 * The turn's subscription ended in an error.
 * @param {LiveTurn} turn
 * @param {"chat" | "regenerate" | "turn"} how
 * @param {GraphQLError} error
 */
function onError(turn, how, error) {
  if (turn.ended) return; // the whole reply came; only the subscription's end was lost
  cancelAnimationFrame(turn.frame);
  turn.frame = 0;
  if (error.code === "CONNECTION_LOST") {
    if (how !== "turn" && error.sent === false && !turn.resumed) {
      // The message never left: nothing was stored, the text goes back (a regenerated
      // reply: the old one shows again).
      drop(turn);
      if (turn.kind === "regenerate") {
        restore(turn);
      } else {
        turn.mine.remove();
        giveBack(turn.sessionId, turn.text);
      }
      if (turn.sessionId === state.current) showNotice("CONNECTION_LOST");
      updateBusy();
      return;
    }
    // The turn goes on on the server: take it up again where the reply was cut off.
    resume(turn);
    return;
  }
  if (error.code === "UNAUTHENTICATED" && !turn.renewed) {
    // The server did not accept the socket's token (for `chat`, nothing was stored):
    // the page renews its identity as for any request, then subscribes once more, the
    // same way (the same turn id, or after the last event shown).
    turn.renewed = true;
    checkIdentity().then(() => stream(turn, how));
    return;
  }
  if (error.code === "NOT_FOUND" && how === "turn") {
    lost(turn);
    return;
  }
  fail(turn, turn.resumed ? "NOT_STORED" : error.code, error.message);
}

/**
 * Follows the turn again after a lost connection, once the socket is back, from the
 * event after the last one shown; its message shows as waiting meanwhile.
 * @param {LiveTurn} turn
 */
async function resume(turn) {
  turn.resumed = true;
  turn.mine.classList.add("pending");
  try {
    await client.ready(RECOVERY_MS);
  } catch {
    if (!turn.ended) fail(turn, "NETWORK");
    return;
  }
  if (!turn.ended) stream(turn, "turn");
}

/**
 * The server has no turn by that id (now): it was stored and has expired, or the
 * message never reached the server. The history tells; a message that never reached it
 * is sent again with the same turn id (which joins the turn if it is there after all).
 * @param {LiveTurn} turn
 */
async function lost(turn) {
  let messages = null;
  try {
    messages = (await querySession(turn.sessionId)).session?.messages ?? null;
  } catch { /* the server cannot tell: as if not stored */ }
  if (turn.ended) return;
  if (messages && holdsTurn(messages, turn.turnId)) {
    drop(turn);
    if (turn.sessionId === state.current) showChat(messages, turn.sessionId);
    settle(turn);
    return;
  }
  if (turn.own && turn.lastSeq === 0 && !turn.resent && messages) {
    turn.resent = true;
    stream(turn, turn.kind);
    return;
  }
  if (!turn.own) {
    // A turn the page followed and that is gone: the chat shows what is stored.
    drop(turn);
    if (turn.kind === "regenerate") {
      restore(turn);
    } else {
      turn.mine.remove();
      turn.reply.remove();
    }
    if (messages && turn.sessionId === state.current) showChat(messages, turn.sessionId);
    settle(turn);
    return;
  }
  fail(turn, messages ? "NOT_STORED" : "NETWORK");
}

/**
 * The reply came whole (or stopped): the stored reply, marked if it was stopped.
 * @param {LiveTurn} turn
 * @param {ChatEvent} event the done event
 */
function finish(turn, event) {
  drop(turn);
  const { message } = event;
  turn.content = message?.content ?? turn.content;
  const stopped = (event.status ?? message?.status) === "STOPPED";
  endReply(turn.reply, turn.content, message?.createdAt ?? new Date().toISOString(), stopped);
  if (message) markStored(turn.reply, message);
  turn.mine.classList.remove("pending");
  settle(turn);
  if (turn.kind === "regenerate" && message && turn.replaces !== null
    && positionOf(message.id) !== positionOf(turn.replaces) && turn.sessionId === state.current) {
    // Followed as a regenerated reply, it was a new turn with the same words after all.
    followOpenChat();
  }
}

/**
 * The turn ended without being stored: its reply goes, its message shows as failed (its
 * text back in the input, when the page sent it) and the notice says why.
 * @param {LiveTurn} turn
 * @param {string} code
 * @param {string} [message]
 */
function fail(turn, code, message) {
  drop(turn);
  turn.mine.classList.remove("pending");
  if (turn.kind === "regenerate") {
    // A failure keeps the old reply (the server stored nothing).
    restore(turn);
    const own = ["SESSION_BUSY", "UNAVAILABLE", "NETWORK", "BAD_USER_INPUT"];
    tell(turn.sessionId, turn.own && own.includes(code) ? code : "REGENERATE_FAILED", message);
  } else {
    turn.reply.remove();
    turn.mine.classList.add("failed");
    if (turn.own) giveBack(turn.sessionId, turn.text);
    tell(turn.sessionId, turn.own ? code : "REPLY_FAILED", message);
  }
  updateBusy();
}

/**
 * The turn is over for the page: it no longer streams.
 * @param {LiveTurn} turn
 */
function drop(turn) {
  turn.ended = true;
  cancelAnimationFrame(turn.frame);
  turn.frame = 0;
  if (state.turns.get(turn.sessionId) === turn) state.turns.delete(turn.sessionId);
}

/**
 * After a turn stored: the composer is free, the list and the title show the chat as
 * stored (the server may have named it from the first message).
 * @param {LiveTurn} turn
 */
function settle(turn) {
  updateBusy();
  if (turn.sessionId === state.current) loadSessions().then(markCurrentInList);
  refreshHeader(turn.sessionId);
}

// ---------- stopping a reply ----------

/** The Stop button: stops the open chat's reply (it ends with what came so far). */
export function stopReply() {
  const turn = state.current === null ? undefined : state.turns.get(state.current);
  if (!turn || turn.stopping) return;
  turn.stopping = true;
  updateBusy();
  askToStop(turn);
}

/**
 * Asks the server to stop the turn; its done event (status STOPPED) then ends the reply.
 * Asked before the server has the turn (no event yet), it is asked again at the first.
 * @param {LiveTurn} turn
 */
async function askToStop(turn) {
  let stopped = false;
  try {
    stopped = (await mutateStopTurn(turn.sessionId, turn.turnId)).stopTurn;
  } catch (error) {
    if (/** @type {GraphQLError} */ (error).code !== "NOT_FOUND") {
      if (turn.ended) return;
      turn.stopping = false;
      updateBusy();
      tell(turn.sessionId, /** @type {GraphQLError} */ (error).code, /** @type {GraphQLError} */ (error).message);
      return;
    }
  }
  // false: not running (yet, or any more: then its end is on its way).
  if (!stopped && !turn.ended && turn.lastSeq === 0) turn.stopAgain = true;
}

// ---------- the connection ----------

/** Whether the socket was lost since it last opened. */
let wasLost = false;

/**
 * The socket's state changed. Back after a loss, the page shows the open chat as it is
 * now (turns may have been sent from elsewhere meanwhile) and follows its running reply,
 * if any; the turns the page streams take themselves up again.
 * @param {ConnectionStatus} status
 */
export function connectionChanged(status) {
  if (status === "closed") wasLost = true;
  if (status !== "open" || !wasLost) return;
  wasLost = false;
  followOpenChat();
}

/** Shows the open chat anew and follows its running reply, unless the page streams one. */
async function followOpenChat() {
  const id = state.current;
  if (!id || state.turns.has(id)) return;
  let session;
  try {
    session = (await querySession(id)).session;
  } catch {
    return; // the next load of the chat will tell
  }
  if (!session || id !== state.current || state.turns.has(id)) return;
  showChat(session.messages, id);
  if (session.activeTurn) follow(id, session.activeTurn, session.messages);
}
