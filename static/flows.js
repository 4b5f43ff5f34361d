// @ts-check
// The chats on the page: loads the list, opens, creates, renames and deletes a chat,
// pages back through its earlier messages, shows another version of a message, and
// starts editing a message; it keeps track of the tool calls a chat's last reply waits
// for. A turn's life (sending, streaming, following, resuming, stopping, answering tool
// calls) is `turnflow.js`'s.

import {
  client, MESSAGES_PAGE, mutateCreateSession, mutateDeleteSession, mutateFlags,
  mutateRevokeShare, mutateShare, mutateSwitchBranch, mutateTitle, queryHeader, queryOlder,
  querySession, querySessions, queryShares, saveAdminToken,
} from "./queries.js";
import { follow } from "./turnflow.js";
import { state } from "./state.js";
import {
  autosize, enableCalls, enableVersions, findMessage, giveBack, hideNotice, keepInPlace,
  markCurrentInList, markStored, nearTop, offsetOf, openDrawer, prependMessages, showAdminRejected,
  showArchiveView, showBusy, showDeletable, showEditing, showError, showListMode, showMessages,
  showNotice, showRenaming, showSessions, showShareError, showShares, showStop, showTitle,
  showTurnActions, showUsage, showWaitingCalls, switchDraft, ui, updateListed,
} from "./view.js";

/** @import { GraphQLError } from "./graphql.js" */
/** @import { Message, ToolCall } from "./queries.js" */


/** The composer as it is shown now: whether it waits (shown only when that changes). */
let shownBusy = false;

/**
 * Shows whether the composer waits (a message is on its way, the page's own reply
 * streams, or the open chat's reply does) and the Stop button for the open chat's reply.
 */
export function updateBusy() {
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

/** Regenerate and Edit on the open chat's turns, unless a reply streams, an edit is on
 * or another version is being shown; the versions' arrows and the tool calls' buttons,
 * unless a reply streams. */
function updateActions() {
  showTurnActions(
    state.current !== null && !state.streaming && state.editing === null && !state.switching,
  );
  enableVersions(!state.streaming && !state.switching);
  enableCalls(!state.streaming && !state.switching);
}

/**
 * The position a message id names (ids start with the message's position in the chat).
 * @param {string} id
 * @returns {number}
 */
export function positionOf(id) {
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
export function holdsTurn(messages, turnId, role = "ASSISTANT") {
  return messages.some((m) => m.turnId === turnId && m.role === role);
}

// The last messages stored in a chat (a page: earlier ones load as the person scrolls up);
// then its turn still streaming, unless stored meanwhile (each message once: the
// person's message is left out if the history has it; a regenerated reply streams in
// the place of the reply it is a new version of, an edited message in the place of the
// message edited, and what followed either is left out meanwhile; the reply to tools'
// results after the reply that asked). The calls the chat's last reply waits for show
// the answers given to them, or Run and Decline.
/**
 * @param {Message[]} messages the chat's last MESSAGES_PAGE messages (fewer: all of them)
 * @param {string | null} [sessionId]
 * @param {ToolCall[]} [pending] the calls of its last reply waiting for results
 */
export function showChat(messages, sessionId = null, pending = []) {
  if (sessionId !== null) trackCalls(sessionId, messages, pending);
  const live = sessionId === null ? undefined : state.turns.get(sessionId);
  let shown = messages;
  /** @type {HTMLElement[]} */
  let streaming = [];
  if (live && !holdsTurn(messages, live.turnId)) {
    const replaced = live.kind === "regenerate" ? live.replaces : live.edits;
    const at = replaced === null ? -1 : messages.findIndex((m) => m.id === replaced);
    if (at >= 0) shown = messages.slice(0, at);
    if (live.kind === "regenerate" || live.kind === "tools") {
      streaming = [live.reply];
    } else if (live.kind === "edit") {
      streaming = [live.mine, live.reply];
    } else {
      // The person's message is in the history already, or the turn has none.
      const replyOnly = holdsTurn(messages, live.turnId, "USER") || !live.text;
      streaming = replyOnly ? [live.reply] : [live.mine, live.reply];
    }
  }
  showMessages(shown, streaming);
  showWaitingCalls();
  state.older = sessionId === null ? null : {
    sessionId, before: messages[0]?.id ?? null, more: messages.length >= MESSAGES_PAGE, loading: false,
  };
  if (state.editing) showEditing(state.editing.messageId);
  updateActions();
  if (nearTop()) loadOlder(); // the page does not fill the view: no scrolling would ask
}

/**
 * The calls the chat's last reply waits for, as the server says (`pending`): the
 * answers given to them here stay while they are the same calls of the same reply.
 * @param {string} sessionId
 * @param {Message[]} messages
 * @param {ToolCall[]} pending
 */
function trackCalls(sessionId, messages, pending) {
  /** @type {Message | undefined} */
  let asking;
  for (let k = messages.length - 1; k >= 0 && !asking; k--) {
    if (messages[k].role === "ASSISTANT") asking = messages[k];
  }
  if (!asking || !pending.length) {
    state.calls.delete(sessionId);
    return;
  }
  const held = state.calls.get(sessionId);
  const same = held?.replyId === asking.id && held.calls.length === pending.length
    && pending.every((call, k) => held.calls[k].id === call.id);
  if (!same) {
    state.calls.set(sessionId, { replyId: asking.id, calls: pending, answers: new Map(), sending: false });
  }
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
  prependMessages(messages, updateActions); // their Edit and Regenerate too
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
    data = await querySessions(append ? state.sessionsAfter : null, state.archiveView);
    if (seq !== state.listSeq) return;
  } catch (error) {
    if (seq !== state.listSeq) return;
    showError(error);
    return;
  }
  if (data.admin) state.archiveView = false; // everyone's chats: no archive of the page's
  showListMode(data.admin);
  showArchiveView(state.archiveView, data.admin);
  showSessions(data.page, append, data.pinned);
  state.sessionsAfter = data.page.pageInfo.endCursor;
}

// ---------- pins, the archive, share links ----------

/** The list's Archived toggle: the archive, or back to the page's chats. */
export function toggleArchiveView() {
  state.archiveView = !state.archiveView;
  state.sessionsAfter = null;
  loadSessions();
}

/**
 * A button of a chat in the list: pin or unpin it, archive or restore it, or show its
 * share links. The list shows the chat where it now belongs.
 * @param {string} id
 * @param {string} action "pin", "archive" or "share"
 * @param {boolean} on whether the toggle was on before the click
 */
export async function listAction(id, action, on) {
  if (action === "share") {
    await openShares(id);
    return;
  }
  const flags = action === "pin" ? { pinned: !on } : { archived: !on };
  try {
    await mutateFlags(id, flags);
  } catch (error) {
    showError(error);
    return;
  }
  await loadSessions();
}

/**
 * The share panel of the chat `id`, with its links (closed when the chat is not the
 * page's to share).
 * @param {string} id
 */
export async function openShares(id) {
  state.sharing = id;
  let session;
  try {
    session = (await queryShares(id)).session;
  } catch (error) {
    if (state.sharing === id) showError(error);
    return;
  }
  if (state.sharing !== id) return;
  if (!session) {
    closeShares();
    showNotice("NOT_FOUND");
    return;
  }
  const name = ui.sessions.querySelector(`a[data-id="${CSS.escape(id)}"] .name`);
  showShares(name?.textContent || "this chat", session.shares);
}

/** Closes the share panel. */
export function closeShares() {
  state.sharing = null;
  showShares(null);
}

/** The panel's New link: a copy of the chat as it is now, at a new url. */
export async function newShare() {
  const id = state.sharing;
  if (!id) return;
  try {
    await mutateShare(id);
  } catch (error) {
    const failed = /** @type {GraphQLError} */ (error);
    if (state.sharing === id) showShareError(failed.message || "The link could not be made.");
    return;
  }
  await openShares(id);
}

/**
 * A link's Copy or Revoke in the panel.
 * @param {HTMLElement} item the link's node (`data-share-id`, its url in an input)
 * @param {string} action "copy" or "revoke"
 */
export async function shareAction(item, action) {
  const id = state.sharing;
  const shareId = item.dataset.shareId;
  if (!id || !shareId) return;
  const url = /** @type {HTMLInputElement | null} */ (item.querySelector("input"));
  if (action === "copy" && url) {
    url.select();
    try {
      await navigator.clipboard.writeText(url.value);
      showShareError("");
      item.dataset.copied = "true";
    } catch {
      showShareError("Copying is not allowed here: the link is selected, copy it with Ctrl+C.");
    }
    return;
  }
  if (action !== "revoke") return;
  if (!window.confirm("Revoke this link? Whoever has it can no longer read the chat.")) return;
  try {
    await mutateRevokeShare(shareId);
  } catch (error) {
    // NOT_FOUND: revoked already (elsewhere): the list below shows it gone.
    if (/** @type {GraphQLError} */ (error).code !== "NOT_FOUND") {
      showShareError(/** @type {GraphQLError} */ (error).message || "The link was not revoked.");
      return;
    }
  }
  await openShares(id);
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
  showChat(session.messages, id, session.pendingToolCalls);
  if (session.activeTurn) follow(id, session.activeTurn, session.messages);
  const note = state.notes.get(id);
  state.notes.delete(id);
  if (note) showNotice(...note);
}

/** The chat being made, while it is: a message sent meanwhile goes to it. */
/** @type {Promise<string> | null} */
let creating = null;

/**
 * Creates a chat and opens it; while one is being made (New chat, then a message sent
 * before the server answered), that one: a second click or message makes no second chat.
 * @param {string | null} title
 * @returns {Promise<string>} its id
 */
export function createSession(title) {
  creating ??= makeSession(title).finally(() => {
    creating = null;
  });
  return creating;
}

/**
 * @param {string | null} title
 * @returns {Promise<string>} its id
 */
async function makeSession(title) {
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
 * of their messages (the page learns the person's message's only from the history) and
 * their versions.
 * @param {string} sessionId
 */
export async function refreshHeader(sessionId) {
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
    const shown = findMessage(message.id);
    if (shown) markStored(shown, message); // its versions: an edit added one
    if (shown || !message.turnId) continue;
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

// ---------- versions of a message ----------

/**
 * An arrow of a message's picker: the chat goes through the version it names (the
 * server's active path: `switchBranch`), then shows as it now is, that version where the
 * message was on screen (and the focus on the same arrow, if it was on one).
 * @param {HTMLButtonElement} button
 */
export async function showVersion(button) {
  const sessionId = state.current;
  const target = button.dataset.target;
  const item = button.closest(".msg");
  const action = button.dataset.action === "previous" ? "previous" : "next";
  if (!sessionId || !target || !(item instanceof HTMLElement)) return;
  if (state.streaming || state.switching) return;
  cancelEdit(); // the message being edited may not show in that version
  hideNotice();
  const offset = offsetOf(item);
  const focus = button.parentElement?.contains(document.activeElement) ? action : null;
  state.switching = true;
  updateBusy();
  let session;
  try {
    updateListed((await mutateSwitchBranch(sessionId, target)).switchBranch);
    session = (await querySession(sessionId)).session;
  } catch (error) {
    state.switching = false;
    updateBusy();
    if (state.current === sessionId) showError(error);
    return;
  }
  state.switching = false;
  if (state.current !== sessionId || !session) {
    updateBusy();
    return; // another chat was opened meanwhile (or this one is gone: its next load says)
  }
  showUsage(session.usage);
  showChat(session.messages, sessionId, session.pendingToolCalls);
  updateBusy();
  const shown = findMessage(target);
  if (shown) keepInPlace(shown, offset, focus);
  if (session.activeTurn) follow(sessionId, session.activeTurn, session.messages);
}

// ---------- editing a message ----------

/**
 * Edit on a message of the person's: its text goes into the input (what was typed
 * there waits); sent, it is a new version of that message (`edit`), and the old one
 * stays another.
 * @param {HTMLElement} item the message's node
 */
export function startEdit(item) {
  const sessionId = state.current;
  const messageId = item.dataset.id;
  if (!sessionId || !messageId || state.streaming || state.editing || state.switching) return;
  state.editing = { sessionId, messageId, draft: ui.input.value };
  ui.input.value = item.querySelector(".bubble")?.textContent ?? "";
  autosize();
  ui.input.focus();
  ui.input.setSelectionRange(ui.input.value.length, ui.input.value.length);
  showEditing(messageId);
  updateActions();
}

/**
 * An edit that was sent and not stored: it is on again, its text in the input (what the
 * input holds waits, as when it started). Another chat open, or another edit on, or the
 * message no longer shown: the text goes back into the chat's input.
 * @param {string} sessionId
 * @param {string} messageId
 * @param {string} text
 */
export function reopenEdit(sessionId, messageId, text) {
  if (sessionId !== state.current || state.editing || !findMessage(messageId)) {
    giveBack(sessionId, text);
    return;
  }
  state.editing = { sessionId, messageId, draft: ui.input.value };
  ui.input.value = text;
  autosize();
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

