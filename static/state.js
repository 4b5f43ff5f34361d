// @ts-check
// The page's state, one object shared by the view and the flows: the open chat, whether
// a reply streams, the list's paging, and what waits per chat (the text typed in it, a
// notice for it, a turn whose reply was cut off).

/**
 * A turn whose reply was cut off by a lost connection, looked for in the history.
 * @typedef {object} PendingTurn
 * @property {string} sessionId
 * @property {string} text the message that was sent
 * @property {number} baseline how many stored messages the chat showed when it was sent
 * @property {HTMLElement} node the message's node, shown while the turn is awaited
 */

/**
 * A notice to show when its chat is opened: [error code, the server's own message].
 * @typedef {[code: string, message?: string]} Note
 */

/**
 * @typedef {object} State
 * @property {string | null} current the open chat's id; null for no chat
 * @property {boolean} streaming whether a reply is on its way (the composer waits)
 * @property {string | null} sessionsAfter the cursor after the list's last page shown
 * @property {boolean} adminOffered whether the server has an admin token to enter (the
 *   list of every chat needs it)
 * @property {number} listSeq numbers the list's loads; only the newest answer is shown
 * @property {number} maxChars the longest message the server takes
 * @property {Map<string, string>} drafts chat id ("" for no chat) -> text waiting in its input
 * @property {Map<string, Note>} notes chat id -> notice to show when that chat is opened
 * @property {Map<string, PendingTurn>} pending chat id -> its turn whose reply was cut off
 */

/** @type {State} */
export const state = {
  current: null,
  streaming: false,
  sessionsAfter: null,
  adminOffered: false,
  listSeq: 0,
  maxChars: 32000,
  drafts: new Map(),
  notes: new Map(),
  pending: new Map(),
};

