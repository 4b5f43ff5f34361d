// @ts-check
// The page's state, one object shared by the view and the flows: the open chat, whether
// the composer waits for a reply, the list's paging, the paging back through the open
// chat's earlier messages, the message being edited, the turns whose replies the page
// shows as they stream, the tool calls waiting for the person's answers, whether a
// version of a message is being switched to, and what waits per chat (the text typed in
// it, a notice for it).

/** @import { ToolCall, ToolResult } from "./queries.js" */

/**
 * A turn whose reply the page streams: one it sent, or one it follows (found running
 * when a chat was opened, after a reload or a lost connection). Its events are numbered;
 * `lastSeq` is the last one shown, so a new subscription resumes right after it. A
 * regenerated reply streams in the place of the reply it is a new version of: that reply
 * (`previous`) comes back if the new one is not stored. An edited message and its reply
 * stream in the place of the message edited. Either way, what followed in the chat is
 * taken out meanwhile (`hidden`: it stays on the server as another version) and comes
 * back if nothing is stored. The answers to a reply's tool calls start a turn too: its
 * reply streams after the reply that asked (`mine` then).
 * @typedef {object} LiveTurn
 * @property {string} sessionId
 * @property {string} turnId
 * @property {"chat" | "regenerate" | "edit" | "tools"} kind a new message, a message run
 *   again, a new version of a message, or the answers to tool calls
 * @property {string} text the person's message it answers ("" for tools' answers)
 * @property {ToolResult[]} results for tools' answers: what the turn sends
 * @property {boolean} own whether this page sent it (its text goes back if it fails)
 * @property {HTMLElement | null} previous for a regenerated reply: the node of the reply
 *   it replaces, as it was
 * @property {string | null} replaces for a regenerated reply: the id of that reply
 * @property {string | null} edits for an edit: the id of the message edited
 * @property {HTMLElement[]} hidden the nodes taken out of the chat while it streams (the
 *   message edited, and what followed it or the regenerated reply)
 * @property {number} lastSeq the number of the last event shown; 0 for none
 * @property {string} content the reply so far
 * @property {string} reasoning the reply's reasoning so far
 * @property {boolean} resumed whether its subscription was lost and taken up again
 * @property {boolean} stopping whether a stop was asked for
 * @property {boolean} stopAgain whether to ask again once the turn has begun (a stop
 *   asked before the server had the turn found nothing to stop)
 * @property {boolean} renewed whether the socket's identity was renewed for it once
 * @property {boolean} resent whether its message was sent again (same turn id)
 * @property {boolean} ended whether it ended (its reply shown whole, or failed)
 * @property {number} frame the animation frame that paints the reply, 0 when none
 * @property {HTMLElement} mine the node of the person's message (for tools' answers: of
 *   the reply that asked for the calls)
 * @property {HTMLElement} reply the node of the reply
 */

/**
 * Paging back through the open chat's messages: the id of the oldest shown, whether the
 * chat may have earlier ones (the last page was as long as asked), whether a page is
 * being loaded. Replaced whenever the chat is shown anew.
 * @typedef {object} Older
 * @property {string} sessionId
 * @property {string | null} before the id of the oldest message shown; null for none
 * @property {boolean} more
 * @property {boolean} loading
 */

/**
 * A message of the person's being edited: its text is in the input; sent, it is a new
 * version of that message (the old one stays). `draft` is what the input held before
 * (back on cancel).
 * @typedef {object} Editing
 * @property {string} sessionId
 * @property {string} messageId
 * @property {string} draft
 */

/**
 * The tool calls of a chat's last reply that wait for results (the session's
 * `pendingToolCalls`), and the answers the person gave (Run, Decline): once every call
 * has one, they are sent together (`submitToolResults`), a turn like the others.
 * @typedef {object} PendingCalls
 * @property {string} replyId the id of the reply that asks for them
 * @property {ToolCall[]} calls
 * @property {Map<string, string>} answers call id -> what it answers, not sent yet
 * @property {boolean} sending whether the answers are on their way
 */

/**
 * A notice to show when its chat is opened: [error code, the server's own message].
 * @typedef {[code: string, message?: string]} Note
 */

/**
 * @typedef {object} State
 * @property {string | null} current the open chat's id; null for no chat
 * @property {boolean} streaming whether the composer waits: a message is being sent, the
 *   page's own reply streams, or the open chat's reply streams
 * @property {boolean} sending whether a message is on its way (before its turn streams)
 * @property {string | null} sessionsAfter the cursor after the list's last page shown
 * @property {boolean} adminOffered whether the server has an admin token to enter (the
 *   list of every chat needs it)
 * @property {number} listSeq numbers the list's loads; only the newest answer is shown
 * @property {number} maxChars the longest message the server takes
 * @property {string} elsewhere what the server says of chats in a Redis it does not use
 *   (another app's, on localhost:6379); "" when it saw none
 * @property {Map<string, string>} drafts chat id ("" for no chat) -> text waiting in its input
 * @property {Map<string, Note>} notes chat id -> notice to show when that chat is opened
 * @property {Map<string, LiveTurn>} turns chat id -> the turn whose reply the page streams
 * @property {Map<string, PendingCalls>} calls chat id -> its tool calls waiting for results
 * @property {Older | null} older paging back through the open chat; null for no chat
 * @property {Editing | null} editing the message being edited, if one is
 * @property {boolean} renaming whether the open chat's title is being edited
 * @property {boolean} switching whether another version of a message is being shown
 * @property {boolean} archiveView whether the list shows the page's archived chats
 * @property {string | null} sharing the chat whose share links the panel shows, if any
 */

/** @type {State} */
export const state = {
  current: null,
  streaming: false,
  sending: false,
  sessionsAfter: null,
  adminOffered: false,
  listSeq: 0,
  maxChars: 32000,
  elsewhere: "",
  drafts: new Map(),
  notes: new Map(),
  turns: new Map(),
  calls: new Map(),
  older: null,
  editing: null,
  renaming: false,
  switching: false,
  archiveView: false,
  sharing: null,
};
