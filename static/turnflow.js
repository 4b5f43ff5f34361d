// @ts-check
// A turn's life on the page: sending a message (or a new version of one: `edit`, or of a
// reply: `regenerate`) and streaming its reply through the `chat` subscription, following
// a reply that streams on the server (found running when a chat is opened or the socket
// reconnects), taking a reply up again after a lost connection where it was cut off,
// and stopping one; a reply's reasoning streams into its "Thinking" block. The chats
// themselves (the list, opening, creating, renaming, deleting, paging back) are
// `flows.js`'s.
//
// Tools: every message offers the model the page's demo tools (tools.js) while "Demo
// tools" is on. A reply that calls tools ends with status REQUIRES_ACTION and its calls,
// each shown as a card; the person runs or declines each, and once every call has an
// answer the page sends them together (`submitToolResults`, a new turn id, as for a
// message): the model's next reply is a turn like the others (streamed, followed,
// resumed, stopped), after the reply that asked.
//
// A regenerated reply is a turn like the others (the same streaming, following, resuming
// and stopping): it streams into the node of the reply it is a new version of, and the
// old reply comes back if the new one is not stored. So does an edit: the edited message
// and its reply stream in the place of the message edited. What followed is taken out
// meanwhile (the server keeps it, as another version) and comes back if nothing is stored.
//
// A turn sent by the page has an id the page chooses, so nothing the page does can run
// a message twice: after a lost connection it follows the turn by that id with
// `turn(after: <the last event it showed>)`, and the one case where it sends the message
// again (the server never had the turn) sends the same id, which joins the turn if the
// server does have it after all.

import {
  checkIdentity, client, identityReady, mutateStopTurn, newTurnId, querySession,
  subscribeChat, subscribeEdit, subscribeRegenerate, subscribeSubmitToolResults, subscribeTurn,
} from "./queries.js";
import {
  cancelEdit, createSession, holdsTurn, loadSessions, positionOf, refreshHeader, reopenEdit,
  showChat, updateBusy,
} from "./flows.js";
import { state } from "./state.js";
import { CANCELLED, DECLINED, offeredTools, runTool } from "./tools.js";
import {
  clearInput, endReply, findMessage, focusAfterAnswer, giveBack, hideNotice, markCurrentInList,
  markStored, putBack, restartReply, setCallResult, showAnswerReply, showCalls, showEditing,
  showError, showNotice, showReply, showThinking, showTurn, showWaitingCalls, takeFrom, tell, ui,
} from "./view.js";

/** @import { ConnectionStatus, GraphQLError, Sink } from "./graphql.js" */
/** @import { ActiveTurn, ChatEvent, Message, ToolCall } from "./queries.js" */
/** @import { LiveTurn, PendingCalls } from "./state.js" */

// How long the page waits for the server again after a lost connection before it gives
// up on a reply: as long as the server waits for the model by default
// (LLM_TIMEOUT_SECONDS).
const RECOVERY_MS = 60000;

/**
 * Sends `text` in the open chat (creating one if none is open) and streams the reply;
 * with an edit on, as a new version of the message edited (`edit`), which streams in
 * its place.
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
  state.sending = false;
  if (editing) {
    state.editing = null;
    showEditing(null);
  }
  clearInput();
  if (editing?.draft) giveBack(sessionId, editing.draft); // what was typed before the edit
  // An edit: the message edited and what followed it make way for the new version.
  const edited = editing ? findMessage(editing.messageId) : null;
  const hidden = edited ? takeFrom(edited) : [];
  const { mine, reply } = showTurn(text);
  const turn = liveTurn(sessionId, newTurnId(), text, true, mine, reply, editing ? "edit" : "chat");
  turn.edits = editing?.messageId ?? null;
  turn.hidden = hidden;
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, turn.kind);
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

/** Regenerate on a reply: the person's message it answers runs again, its new reply
 * streams in the old one's place as a new version of it (the chat then ends with it:
 * what followed is another version now). The old reply, and what followed it, come back
 * if the new one is not stored.
 * @param {HTMLElement} reply the reply's node
 */
export async function regenerate(reply) {
  const sessionId = state.current;
  if (!sessionId || state.streaming || state.editing || state.switching) return;
  const mine = reply.previousElementSibling;
  // The reply answers the person's message, or the tools' results of the reply before.
  const answers = mine instanceof HTMLElement
    && (mine.dataset.role === "USER" || mine.classList.contains("asks"));
  if (!reply.dataset.id || !answers) return;
  hideNotice();
  state.sending = true;
  updateBusy();
  if (!(await connected())) return;
  state.sending = false;
  if (sessionId !== state.current || !reply.isConnected || reply.previousElementSibling !== mine) {
    updateBusy();
    return;
  }
  const text = mine.dataset.role === "USER" ? mine.querySelector(".bubble")?.textContent ?? "" : "";
  const turn = liveTurn(sessionId, newTurnId(), text, true, mine, reply, "regenerate");
  replaceReply(turn);
  turn.hidden = takeFrom(reply, true);
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "regenerate");
}

/**
 * A regenerated reply begins: the reply it replaces is kept aside (it comes back if the
 * new one is not stored) and its node emptied for the new one.
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
 * A regenerated reply or an edit that was not stored: what it was to replace shows
 * again (the reply, or the message edited), with what followed. Tools' answers that were
 * not stored: the calls wait for answers again.
 * @param {LiveTurn} turn
 */
function restore(turn) {
  turn.mine.classList.remove("pending");
  if (turn.kind === "tools") {
    turn.reply.remove();
    reopenCalls(turn.sessionId);
  } else if (turn.kind === "regenerate" && turn.previous && turn.reply.isConnected) {
    turn.reply.replaceWith(turn.previous);
    putBack(turn.hidden);
  } else if (turn.kind === "edit" && turn.reply.isConnected) {
    turn.mine.remove();
    turn.reply.remove();
    putBack(turn.hidden);
  }
}

/**
 * The text of a turn of the page's that was not stored goes back: an edit's into the
 * input with the edit on again, a message's before what the input holds.
 * @param {LiveTurn} turn
 */
function giveBackText(turn) {
  if (turn.kind === "edit" && turn.edits !== null) reopenEdit(turn.sessionId, turn.edits, turn.text);
  else giveBack(turn.sessionId, turn.text);
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
  if (kind !== "regenerate") {
    // Given its id once the turn is stored (refreshHeader). For tools' answers, `mine` is
    // the reply that asked for the calls: it keeps its own turn's.
    if (kind !== "tools") mine.dataset.turnId = turnId;
    reply.dataset.turnId = turnId;
  }
  return {
    sessionId, turnId, kind, text, results: [], own, mine, reply, previous: null,
    replaces: null, edits: null, hidden: [], lastSeq: 0, content: "", reasoning: "", frame: 0,
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
export function follow(sessionId, active, messages) {
  if (state.turns.has(sessionId) || holdsTurn(messages, active.turnId)) return;
  if (state.editing?.sessionId === sessionId) cancelEdit(); // the chat changes under it
  if (followRegenerated(sessionId, active, messages)) return;
  if (followAnswers(sessionId, active, messages)) return;
  const { mine, reply } = showTurn(active.message, active.startedAt, sessionId === state.current);
  // The history shows the person's message; a turn without one answers tools' calls.
  if (holdsTurn(messages, active.turnId, "USER") || !active.message) mine.remove();
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
 * Follows a running turn that answers the tool calls of the chat's last reply (its
 * message is empty: it sends tools' results), its reply after that one. The cards
 * show the results once it is stored (the chat is shown anew: another page answered).
 * @param {string} sessionId
 * @param {ActiveTurn} active
 * @param {Message[]} messages
 * @returns {boolean} whether it was followed so
 */
function followAnswers(sessionId, active, messages) {
  const last = messages.at(-1);
  if (sessionId !== state.current || active.message || last?.role !== "ASSISTANT") return false;
  if (!last.toolCalls?.length) return false;
  const asking = findMessage(last.id);
  if (!asking) return false;
  const turn = liveTurn(sessionId, active.turnId, "", false, asking, showAnswerReply(asking), "tools");
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "turn");
  return true;
}

/**
 * Subscribes to the turn's events: `chat` sends its message, `edit` sends it as a new
 * version of the message edited, `regenerate` runs the replaced reply's message again,
 * and `tools` sends the answers to the tool calls (with the turn's id: sent again, each
 * joins the turn); `turn` follows it after the last event shown. A message and tools'
 * answers offer the model the page's tools, while they are on.
 * @param {LiveTurn} turn
 * @param {LiveTurn["kind"] | "turn"} how
 */
function stream(turn, how) {
  /** @type {Sink<ChatEvent>} */
  const sink = {
    next: (event) => onEvent(turn, event),
    error: (error) => onError(turn, how, error),
    complete: () => { if (!turn.ended) lost(turn); },
  };
  if (how === "chat") {
    subscribeChat(turn.sessionId, turn.text, turn.turnId, offeredTools(), {
      ...sink, next: (data) => sink.next(data.chat),
    });
  } else if (how === "tools") {
    subscribeSubmitToolResults(turn.sessionId, turn.turnId, turn.results, offeredTools(), {
      ...sink, next: (data) => sink.next(data.submitToolResults),
    });
  } else if (how === "regenerate") {
    const replaced = /** @type {string} */ (turn.replaces);
    subscribeRegenerate(turn.sessionId, turn.turnId, replaced, { ...sink, next: (data) => sink.next(data.regenerate) });
  } else if (how === "edit") {
    const edited = /** @type {string} */ (turn.edits);
    subscribeEdit(turn.sessionId, edited, turn.text, turn.turnId, { ...sink, next: (data) => sink.next(data.edit) });
  } else {
    subscribeTurn(turn.sessionId, turn.turnId, turn.lastSeq, { ...sink, next: (data) => sink.next(data.turn) });
  }
}

/**
 * One event of the turn: tokens are added to the reply, reasoning to its "Thinking"
 * block (painted once per frame); the done event shows the stored reply. An event shown
 * already (a join replays the turn from its start) is left out by its number.
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
  if (event.reasoning) turn.reasoning += event.reasoning;
  turn.frame ||= requestAnimationFrame(() => {
    turn.frame = 0;
    if (turn.ended) return;
    showThinking(turn.reply, turn.reasoning, true);
    showReply(turn.reply, turn.content, null);
  });
}

/**
 * The turn's subscription ended in an error.
 * @param {LiveTurn} turn
 * @param {LiveTurn["kind"] | "turn"} how
 * @param {GraphQLError} error
 */
function onError(turn, how, error) {
  if (turn.ended) return; // the whole reply came; only the subscription's end was lost
  cancelAnimationFrame(turn.frame);
  turn.frame = 0;
  if (error.code === "CONNECTION_LOST") {
    if (how !== "turn" && error.sent === false && !turn.resumed) {
      // The message never left: nothing was stored, the text goes back (a regenerated
      // reply: the old one shows again; an edit: the message edited, the edit on again;
      // tools' answers: the calls wait for answers again).
      drop(turn);
      if (turn.kind === "regenerate" || turn.kind === "tools") {
        restore(turn);
      } else if (turn.kind === "edit") {
        restore(turn);
        giveBackText(turn);
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
export async function lost(turn) {
  let session = null;
  try {
    session = (await querySession(turn.sessionId)).session;
  } catch { /* the server cannot tell: as if not stored */ }
  const messages = session?.messages ?? null;
  const pending = session?.pendingToolCalls ?? [];
  if (turn.ended) return;
  if (messages && holdsTurn(messages, turn.turnId)) {
    drop(turn);
    if (turn.sessionId === state.current) showChat(messages, turn.sessionId, pending);
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
    if (turn.kind !== "chat") {
      restore(turn);
    } else {
      turn.mine.remove();
      turn.reply.remove();
    }
    if (messages && turn.sessionId === state.current) showChat(messages, turn.sessionId, pending);
    settle(turn);
    return;
  }
  fail(turn, messages ? "NOT_STORED" : "NETWORK");
}

/**
 * The reply came whole (or stopped): the stored reply, marked if it was stopped, with
 * its reasoning and the cards of the tool calls it asks for.
 * @param {LiveTurn} turn
 * @param {ChatEvent} event the done event
 */
function finish(turn, event) {
  drop(turn);
  const { message } = event;
  if (turn.kind === "regenerate" && message && message.id === turn.replaces) {
    // Stopped before its first token: nothing was stored, the old reply (and what
    // followed it) stays as it was.
    restore(turn);
    settle(turn);
    return;
  }
  turn.content = message?.content ?? turn.content;
  const stopped = (event.status ?? message?.status) === "STOPPED";
  showThinking(turn.reply, message?.reasoning ?? turn.reasoning, false);
  showCalls(turn.reply, message?.toolCalls ?? event.toolCalls ?? []);
  endReply(turn.reply, turn.content, message?.createdAt ?? new Date().toISOString(), stopped);
  if (message) markStored(turn.reply, message);
  turn.mine.classList.remove("pending");
  callsAnswered(turn, event);
  settle(turn);
  if (message && turn.sessionId === state.current && !inPlace(turn, message)) {
    // Followed as a regenerated reply, it was a new turn with the same words after all;
    // followed as a new message, it was an edit or a regeneration of an earlier one; an
    // edit of a message no longer shown: the chat shows as it is now.
    followOpenChat();
  }
}

/**
 * Whether the stored reply `message` of the turn is where the page shows it (its id
 * starts with its position in the chat): after the message it answers, in the place of
 * the reply or the message it replaces.
 * @param {LiveTurn} turn
 * @param {Message} message
 * @returns {boolean}
 */
function inPlace(turn, message) {
  // Tools' answers that another page sent: the chat shows anew, with their results.
  if (turn.kind === "tools") return turn.own;
  const at = positionOf(message.id);
  if (turn.kind === "regenerate") return turn.replaces === null || at === positionOf(turn.replaces);
  if (turn.kind === "edit") return turn.hidden.length > 0 && at === positionOf(/** @type {string} */ (turn.edits)) + 1;
  if (turn.own) return true;
  // Followed: after the last message stored before it (and its own, unless the history
  // showed that one).
  let before = turn.reply.previousElementSibling;
  let step = 1;
  if (before === turn.mine) {
    before = turn.mine.previousElementSibling;
    step = 2;
  }
  if (!(before instanceof HTMLElement) || !before.classList.contains("msg")) return at === step - 1;
  return before.dataset.id === undefined || at === positionOf(before.dataset.id) + step;
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
  } else if (turn.kind === "edit") {
    // The message edited shows again, the edit on again with its text.
    restore(turn);
    giveBackText(turn);
    tell(turn.sessionId, code, message);
  } else if (turn.kind === "tools") {
    // The calls wait for answers again; the chat shows as the server has it (another
    // page may have answered them meanwhile).
    restore(turn);
    const own = ["SESSION_BUSY", "UNAVAILABLE", "NETWORK", "BAD_USER_INPUT"];
    tell(turn.sessionId, own.includes(code) ? code : "TOOLS_FAILED", message);
    if (turn.sessionId === state.current) followOpenChat();
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

// ---------- tool calls ----------

/**
 * Run or Decline on a tool call's card: the call's answer (what the tool returned, or
 * DECLINED) shows on the card, and the focus moves to the next call waiting; once every
 * call waiting has an answer, they are sent together.
 * @param {HTMLButtonElement} button
 */
export function answerCall(button) {
  const sessionId = state.current;
  const card = button.closest(".call");
  const item = button.closest(".msg");
  const waiting = sessionId === null ? undefined : state.calls.get(sessionId);
  if (sessionId === null || !waiting || waiting.sending || state.streaming || state.switching) return;
  if (!(card instanceof HTMLElement) || item?.getAttribute("data-id") !== waiting.replyId) return;
  const call = waiting.calls.find((c) => c.id === card.dataset.callId);
  if (!call || waiting.answers.has(call.id)) return;
  const answer = button.dataset.action === "run-tool" ? runTool(call.name, call.arguments) : DECLINED;
  waiting.answers.set(call.id, answer);
  showWaitingCalls();
  focusAfterAnswer(card);
  if (waiting.answers.size === waiting.calls.length) sendAnswers(sessionId, waiting);
}

/**
 * Sends the answers to the calls waiting (`submitToolResults`, as a turn of the page's
 * own with a new id) and streams the model's next reply after the reply that asked.
 * @param {string} sessionId
 * @param {PendingCalls} waiting
 */
async function sendAnswers(sessionId, waiting) {
  hideNotice();
  waiting.sending = true;
  state.sending = true;
  updateBusy();
  const ready = await connected();
  const asking = findMessage(waiting.replyId);
  if (!ready || sessionId !== state.current || state.calls.get(sessionId) !== waiting || !asking) {
    // Not sent (the error shown, or another chat opened): the calls wait for answers again.
    waiting.sending = false;
    waiting.answers.clear();
    if (ready) {
      state.sending = false;
      updateBusy();
    }
    showWaitingCalls();
    return;
  }
  state.sending = false;
  /** @type {(call: ToolCall) => string} */
  const answerOf = (call) => waiting.answers.get(call.id) ?? DECLINED;
  const turn = liveTurn(sessionId, newTurnId(), "", true, asking, showAnswerReply(asking), "tools");
  turn.results = waiting.calls.map((call) => ({ toolCallId: call.id, content: answerOf(call) }));
  state.turns.set(sessionId, turn);
  updateBusy();
  stream(turn, "tools");
}

/**
 * Tools' answers that were not stored: the calls wait for answers again.
 * @param {string} sessionId
 */
function reopenCalls(sessionId) {
  const waiting = state.calls.get(sessionId);
  if (!waiting) return;
  waiting.sending = false;
  waiting.answers.clear();
  if (sessionId === state.current) showWaitingCalls();
}

/**
 * A turn was stored: what the chat's calls wait for changed. Tools' answers are their
 * results now; a new message answered the calls left waiting "cancelled" (the server
 * did); an edit or a regeneration took them off the chat's path. The reply's own calls,
 * if it asks for any, wait for answers now.
 * @param {LiveTurn} turn
 * @param {ChatEvent} event the done event
 */
function callsAnswered(turn, event) {
  const { sessionId } = turn;
  const waiting = state.calls.get(sessionId);
  state.calls.delete(sessionId);
  if (sessionId === state.current) {
    if (turn.kind === "tools") {
      const asking = findMessage(turn.mine.dataset.id ?? "");
      for (const result of turn.results) {
        if (asking) setCallResult(asking, result.toolCallId, result.content);
      }
    } else if (turn.kind === "chat" && waiting) {
      const asking = findMessage(waiting.replyId);
      for (const call of waiting.calls) if (asking) setCallResult(asking, call.id, CANCELLED);
    }
  }
  const { message } = event;
  const calls = event.toolCalls ?? message?.toolCalls ?? [];
  if (event.status === "REQUIRES_ACTION" && message && calls.length) {
    state.calls.set(sessionId, { replyId: message.id, calls, answers: new Map(), sending: false });
    if (sessionId === state.current) showWaitingCalls();
  }
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
  showChat(session.messages, id, session.pendingToolCalls);
  if (session.activeTurn) follow(id, session.activeTurn, session.messages);
}
