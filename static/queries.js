// @ts-check
// What the page asks the server: the GraphQL documents, the one client that sends them
// (HTTP for queries and mutations, the socket for the `chat`, `regenerate`, `edit`,
// `submitToolResults` and `turn` subscriptions),
// who the page is to the server (a guest token, or the admin token in admin mode) and one
// typed helper per document. It uses the public API only.
//
// Identity: on its first visit the page gets a guest token (`createGuest`, sent with no
// Authorization) and keeps it in localStorage; every request then sends it as
// `Authorization: Bearer <token>`, and the socket in its `connection_init`. The chats it
// creates are that guest's own. When the server rejects the kept token (UNAUTHENTICATED:
// expired, or the server's secret changed) the page gets a new guest token once and
// retries; a token it has just been given and that the server rejects is not replaced
// again. In admin mode (an admin token entered) the admin token is the bearer instead,
// and the list shows every chat; a rejected admin token is forgotten, back to the guest.

import { GraphQLClient } from "./graphql.js";

/** @import { ConnectionStatus, GraphQLError, Sink, Variables } from "./graphql.js" */

/** @typedef {"USER" | "ASSISTANT" | "SYSTEM" | "TOOL"} Role */

/**
 * REQUIRES_ACTION: the reply asks for tool calls, which the page answers
 * (`submitToolResults`).
 * @typedef {"RUNNING" | "COMPLETE" | "STOPPED" | "FAILED" | "REQUIRES_ACTION" | "QUEUED"} TurnStatus
 */

/**
 * A call of one of the page's tools, as the model asked for it.
 * @typedef {object} ToolCall
 * @property {string} id
 * @property {string} name
 * @property {string} arguments JSON text
 */

/**
 * A tool the page offers the model: its name, what it does, and its arguments' JSON Schema.
 * @typedef {object} ToolInput
 * @property {string} name
 * @property {string} [description]
 * @property {Record<string, unknown>} [parameters]
 */

/**
 * What a tool call answered.
 * @typedef {object} ToolResult
 * @property {string} toolCallId
 * @property {string} content
 */

/**
 * Tokens, as the model provider counted them.
 * @typedef {object} Usage
 * @property {number} inputTokens
 * @property {number} outputTokens
 */

/**
 * A message of a chat, as stored.
 * @typedef {object} Message
 * @property {string} id unique in its chat; it starts with the message's position
 * @property {string | null} turnId the turn that stored it (none for messages written by
 *   other programs)
 * @property {TurnStatus} status STOPPED for a reply cut short by stopTurn
 * @property {Role} role
 * @property {string} content
 * @property {string | null} createdAt ISO date and time
 * @property {Usage | null} usage a reply's tokens, when its provider reported them
 * @property {string | null} finishReason why the provider ended the reply, when it said
 * @property {number} branch its 1-based place among the versions of this message (the
 *   messages with the same parent: an edit or a regeneration adds one)
 * @property {number} branches how many versions there are
 * @property {string[]} siblingIds the versions' ids, oldest first (this one included)
 * @property {string | null} reasoning a reply's reasoning, for models that send it apart
 *   (never part of its answer)
 * @property {ToolCall[] | null} toolCalls the tool calls a reply asks for
 * @property {string | null} toolCallId a tool's result (role TOOL): the call it answers
 */

/**
 * The turn running on a chat.
 * @typedef {object} ActiveTurn
 * @property {string} turnId
 * @property {string} startedAt ISO date and time
 * @property {string} message the person's message it answers
 */

/**
 * A chat as the list shows it.
 * @typedef {object} SessionSummary
 * @property {string} id
 * @property {string | null} title
 * @property {string} updatedAt ISO date and time
 * @property {number} messageCount
 * @property {boolean} [pinned] pinned by its owner
 * @property {boolean} [archived] archived by its owner (listed only in the archive)
 */

/**
 * A share link of a chat: a read-only copy of it as it was, at `url`.
 * @typedef {object} Share
 * @property {string} id
 * @property {string} url
 * @property {string} createdAt ISO date and time
 */

/**
 * A chat with its last messages (a page of at most MESSAGES_PAGE, oldest first), the
 * tokens it used and the turn running on it, if any.
 * @typedef {object} Session
 * @property {string} id
 * @property {string | null} title
 * @property {Usage} usage the sum of its replies' tokens
 * @property {ActiveTurn | null} activeTurn
 * @property {Message[]} messages
 * @property {ToolCall[]} pendingToolCalls the calls of its last reply still waiting for
 *   results
 */

/**
 * What the chat's header shows, and its last turn's messages (their ids).
 * @typedef {object} SessionHeader
 * @property {string} id
 * @property {string | null} title
 * @property {Usage} usage
 * @property {Message[]} messages its last two messages, oldest first
 */

/**
 * A chat as a mutation that changes it returns it: for the list and the header.
 * @typedef {SessionSummary & { usage: Usage }} ChangedSession
 */

/**
 * @typedef {object} ServerInfo
 * @property {string} model
 * @property {boolean} adminRequired
 * @property {number} maxMessageChars
 * @property {{ count: number, more: boolean, redisUrl: string } | null} outsideHistories
 */

/**
 * One page of the chat list.
 * @typedef {object} SessionPage
 * @property {Array<{ node: SessionSummary }>} edges
 * @property {{ hasNextPage: boolean, endCursor: string | null }} pageInfo
 */

/**
 * One event of the `chat` and `turn` subscriptions: tokens of the reply (or pieces of
 * its reasoning), then one `done` event with the stored reply. Events are numbered
 * (`seq`) from 1; one that carries several tokens has the last one's number, and the
 * done event the next number.
 * @typedef {object} ChatEvent
 * @property {string} token
 * @property {string | null} reasoning a piece of the reply's reasoning (token is then "")
 * @property {boolean} done
 * @property {string} turnId
 * @property {number} seq
 * @property {TurnStatus | null} status on the done event: COMPLETE, STOPPED, or
 *   REQUIRES_ACTION (the reply asks for `toolCalls`)
 * @property {ToolCall[] | null} toolCalls on a done event with REQUIRES_ACTION: the calls
 *   to answer
 * @property {Message | null} message
 */

const ADMIN_KEY = "chat.adminToken";
const GUEST_KEY = "chat.guestToken";
/** How many chats one page of the list holds. */
export const PAGE = 50;
/** How many messages a chat opens with, and each page of earlier ones holds. */
export const MESSAGES_PAGE = 50;

const USAGE = "usage { inputTokens outputTokens }";
const CALLS = "toolCalls { id name arguments }";
// The versions of a message (branch, branches, siblingIds) cost one read per request,
// whatever the number of messages.
const MESSAGE = `id turnId status role content createdAt ${USAGE} finishReason
  branch branches siblingIds reasoning ${CALLS} toolCallId`;
const SUMMARY = "id title updatedAt messageCount pinned archived";
const CHANGED = `${SUMMARY} ${USAGE}`;
const EVENT = `token reasoning done turnId seq status ${CALLS} message { ${MESSAGE} }`;
const SESSION_PAGE = `edges { node { ${SUMMARY} } }
      pageInfo { hasNextPage endCursor }`;

const Q = {
  info:
    "query { serverInfo { model adminRequired maxMessageChars " +
    "outsideHistories { count more redisUrl } } }",
  guest: "mutation Guest { createGuest { token userId expiresAt } }",
  viewer: "query Viewer { viewer { id isAdmin } }",
  mine: `query MySessions($first: Int!, $after: String, $archived: Boolean!) {
    viewer {
      id sessions(first: $first, after: $after, archived: $archived) { ${SESSION_PAGE} }
      pinnedSessions @skip(if: $archived) { ${SUMMARY} }
    }
  }`,
  sessions: `query Sessions($first: Int!, $after: String, $archived: Boolean!) {
    sessions(first: $first, after: $after) @skip(if: $archived) { ${SESSION_PAGE} }
    viewer @include(if: $archived) {
      id sessions(first: $first, after: $after, archived: true) { ${SESSION_PAGE} }
    }
  }`,
  // activeTurn before messages: asked first, a turn that ends meanwhile shows in the
  // messages read after it (the page shows a turn found in both once).
  session: `query Session($id: ID!, $last: Int!) {
    session(id: $id) {
      id title ${USAGE} activeTurn { turnId startedAt message }
      messages: messagesPage(last: $last) { ${MESSAGE} }
      pendingToolCalls { id name arguments }
    }
  }`,
  older: `query Older($id: ID!, $last: Int!, $before: ID) {
    session(id: $id) { id messages: messagesPage(last: $last, before: $before) { ${MESSAGE} } }
  }`,
  header: `query Header($id: ID!) {
    session(id: $id) { id title ${USAGE} messages: messagesPage(last: 2) { ${MESSAGE} } }
  }`,
  update: `mutation Rename($id: ID!, $input: CreateSessionInput!) {
    updateSession(id: $id, input: $input) { ${CHANGED} }
  }`,
  switchBranch: `mutation SwitchBranch($sessionId: ID!, $messageId: ID!) {
    switchBranch(sessionId: $sessionId, messageId: $messageId) { ${CHANGED} }
  }`,
  create: `mutation Create($input: CreateSessionInput) {
    createSession(input: $input) { ${SUMMARY} }
  }`,
  shares: "query Shares($id: ID!) { session(id: $id) { id shares { id url createdAt } } }",
  share: "mutation Share($id: ID!) { shareSession(id: $id) { id url createdAt } }",
  revokeShare: "mutation Revoke($id: ID!) { revokeShare(id: $id) }",
  remove: "mutation Delete($id: ID!) { deleteSession(id: $id) }",
  chat: `subscription Chat($sessionId: ID!, $message: String!, $turnId: ID, $tools: [ToolInput!]) {
    chat(sessionId: $sessionId, message: $message, turnId: $turnId, tools: $tools) { ${EVENT} }
  }`,
  submitToolResults: `subscription SubmitToolResults($sessionId: ID!, $turnId: ID,
    $results: [ToolResultInput!]!, $tools: [ToolInput!]) {
    submitToolResults(sessionId: $sessionId, turnId: $turnId, results: $results, tools: $tools) {
      ${EVENT}
    }
  }`,
  regenerate: `subscription Regenerate($sessionId: ID!, $turnId: ID, $messageId: ID) {
    regenerate(sessionId: $sessionId, turnId: $turnId, messageId: $messageId) { ${EVENT} }
  }`,
  edit: `subscription Edit($sessionId: ID!, $messageId: ID!, $message: String!, $turnId: ID) {
    edit(sessionId: $sessionId, messageId: $messageId, message: $message, turnId: $turnId) {
      ${EVENT}
    }
  }`,
  turn: `subscription Turn($sessionId: ID!, $turnId: ID, $after: Int!) {
    turn(sessionId: $sessionId, turnId: $turnId, after: $after) { ${EVENT} }
  }`,
  stop: `mutation Stop($sessionId: ID!, $turnId: ID) {
    stopTurn(sessionId: $sessionId, turnId: $turnId)
  }`,
};

// ---------- who the page is ----------

/** @typedef {"guest" | "admin-rejected"} IdentityChange */

/** @returns {string | null} the admin token this browser keeps, if any (admin mode) */
export function adminToken() {
  return localStorage.getItem(ADMIN_KEY);
}

/** @param {string} token the admin token to keep (admin mode); empty forgets it */
export function saveAdminToken(token) {
  if (token) localStorage.setItem(ADMIN_KEY, token);
  else localStorage.removeItem(ADMIN_KEY);
}

/** @returns {string | null} the guest token this browser keeps, if any */
export function guestToken() {
  return localStorage.getItem(GUEST_KEY);
}

/** @returns {string | null} what the page sends as its bearer now */
function bearer() {
  return adminToken() ?? guestToken();
}

/** @type {(change: IdentityChange) => void} */
let identityListener = () => {};

/**
 * Who hears that the page's identity changed: a new guest token replaced a rejected
 * one ("guest"), or the admin token was rejected and forgotten ("admin-rejected").
 * @param {(change: IdentityChange) => void} listener
 */
export function onIdentityChange(listener) {
  identityListener = listener;
}

/** @type {Promise<string> | null} the guest token being asked for, if one is */
let minting = null;
/**
 * A guest token the server gave this page and has not accepted in a request yet.
 * @type {string | null}
 */
let unproven = null;

/**
 * Asks the server for a new guest token (once, however many ask meanwhile) and keeps it.
 * @returns {Promise<string>}
 */
function mintGuest() {
  minting ??= client
    .request(Q.guest, {}, null)
    .then((/** @type {{ createGuest: { token: string } }} */ data) => {
      const { token } = data.createGuest;
      localStorage.setItem(GUEST_KEY, token);
      unproven = token;
      client.reauthenticate();
      return token;
    })
    .finally(() => { minting = null; });
  return minting;
}

/**
 * The guest token: the one kept, else a new one.
 * @returns {Promise<string>}
 */
function guest() {
  return minting ?? (guestToken() ? Promise.resolve(/** @type {string} */ (guestToken())) : mintGuest());
}

/**
 * Once the page has a guest token (it asks for one on its first visit). Rejects as the
 * request for it did (the requests that follow ask again).
 * @returns {Promise<void>}
 */
export async function identityReady() {
  if (!adminToken()) await guest();
}

/**
 * Replaces the guest token `rejected`, which the server did not accept: by a new one,
 * unless another request already did, or `rejected` is the one the server has just
 * given (then the server is at fault and asking again could go on forever).
 * @param {string} rejected
 * @returns {Promise<string | null>} the token to retry with; null: do not retry
 */
async function renewGuest(rejected) {
  if (minting) return minting;
  const kept = guestToken();
  if (kept && kept !== rejected) return kept;
  if (rejected === unproven) return null;
  localStorage.removeItem(GUEST_KEY);
  const token = await mintGuest();
  identityListener("guest");
  return token;
}

/**
 * The admin token `rejected` was not accepted: forgotten, the page is the guest again.
 * @param {string} rejected
 */
function forgetAdmin(rejected) {
  if (adminToken() !== rejected) return;
  saveAdminToken("");
  client.reconnect();
  identityListener("admin-rejected");
}

/**
 * A query or mutation with the page's identity. `UNAUTHENTICATED` forgets the admin
 * token (then `guestQuery` is sent as the guest) or renews the guest token (once).
 * @template T the shape of the response's `data`
 * @param {string} query
 * @param {Variables} [variables]
 * @param {string} [guestQuery] what to send as the guest, if not `query` (for an admin
 *   document whose guest counterpart differs)
 * @returns {Promise<T>}
 */
async function call(query, variables = {}, guestQuery = query) {
  const admin = adminToken();
  if (admin) {
    try {
      return await client.request(query, variables, admin);
    } catch (error) {
      if (/** @type {GraphQLError} */ (error).code !== "UNAUTHENTICATED") throw error;
      forgetAdmin(admin);
      if (adminToken()) throw error; // another admin token was entered meanwhile
    }
  }
  const token = await guest();
  try {
    /** @type {T} */
    const data = await client.request(guestQuery, variables, token);
    if (token === unproven) unproven = null;
    return data;
  } catch (error) {
    if (/** @type {GraphQLError} */ (error).code !== "UNAUTHENTICATED" || adminToken()) throw error;
    const fresh = await renewGuest(token);
    if (!fresh) throw error;
    /** @type {T} */
    const data = await client.request(guestQuery, variables, fresh);
    if (fresh === unproven) unproven = null;
    return data;
  }
}

/**
 * Makes sure the server still accepts the page's token (renewing or forgetting it as
 * `call` does): after the socket or a subscription was refused.
 * @returns {Promise<void>}
 */
export async function checkIdentity() {
  try {
    await call(Q.viewer);
  } catch { /* what can be done was done; the next request tells the person */ }
  client.reauthenticate();
}

// ---------- the client ----------

/** @type {(status: ConnectionStatus) => void} */
let statusListener = () => {};

/**
 * Who hears of the socket's state (connecting, open, closed).
 * @param {(status: ConnectionStatus) => void} listener
 */
export function onConnectionStatus(listener) {
  statusListener = listener;
}

export const client = new GraphQLClient({
  httpUrl: "/graphql",
  wsUrl: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
  token: bearer,
  onStatus: (status) => statusListener(status),
  onRefused: () => { checkIdentity(); },
});

// ---------- the documents ----------

/** @returns {Promise<{ serverInfo: ServerInfo }>} */
export function queryServerInfo() {
  return call(Q.info);
}

/**
 * A page of the chat list, most recently active first: the page's own chats (with the
 * pinned ones), or in admin mode everyone's; with `archived`, the page's own archive
 * (never asked in admin mode).
 * @param {string | null} after the cursor of the previous page; null for the first
 * @param {boolean} [archived] the archive instead of the list
 * @returns {Promise<{ page: SessionPage, admin: boolean, pinned: SessionSummary[] }>}
 */
export async function querySessions(after, archived = false) {
  /**
   * @type {{ sessions?: SessionPage, viewer?: { id: string | null, sessions: SessionPage,
   *   pinnedSessions?: SessionSummary[] } }}
   */
  const data = await call(Q.sessions, { first: PAGE, after, archived }, Q.mine);
  if (data.sessions) return { page: data.sessions, admin: true, pinned: [] };
  const viewer = /** @type {NonNullable<typeof data.viewer>} */ (data.viewer);
  return { page: viewer.sessions, admin: false, pinned: viewer.pinnedSessions ?? [] };
}

/**
 * The chat with its last MESSAGES_PAGE messages.
 * @param {string} id
 * @returns {Promise<{ session: Session | null }>} null when there is no such chat
 */
export function querySession(id) {
  return call(Q.session, { id, last: MESSAGES_PAGE });
}

/**
 * The MESSAGES_PAGE messages before the message `before` (oldest first); fewer when
 * they are the chat's first. BAD_USER_INPUT when the chat no longer has that message.
 * @param {string} id
 * @param {string} before
 * @returns {Promise<{ session: { id: string, messages: Message[] } | null }>}
 */
export function queryOlder(id, before) {
  return call(Q.older, { id, last: MESSAGES_PAGE, before });
}

/**
 * @param {string} id
 * @returns {Promise<{ session: SessionHeader | null }>}
 */
export function queryHeader(id) {
  return call(Q.header, { id });
}

/**
 * Renames the chat (a blank title clears it).
 * @param {string} id
 * @param {string} title
 * @returns {Promise<{ updateSession: ChangedSession }>}
 */
export function mutateTitle(id, title) {
  return call(Q.update, { id, input: { title } });
}

/**
 * Pins or unpins, archives or restores the chat (a flag left undefined is unchanged).
 * @param {string} id
 * @param {{ pinned?: boolean, archived?: boolean }} flags
 * @returns {Promise<{ updateSession: ChangedSession }>}
 */
export function mutateFlags(id, flags) {
  return call(Q.update, { id, input: flags });
}

/**
 * The chat's share links, oldest first.
 * @param {string} id
 * @returns {Promise<{ session: { id: string, shares: Share[] } | null }>}
 */
export function queryShares(id) {
  return call(Q.shares, { id });
}

/**
 * A new share link of the chat: a copy of it as it is now. BAD_USER_INPUT when it keeps
 * as many as it may.
 * @param {string} id
 * @returns {Promise<{ shareSession: Share }>}
 */
export function mutateShare(id) {
  return call(Q.share, { id });
}

/**
 * Revokes a share link: its url reads "not found" from then on.
 * @param {string} shareId
 * @returns {Promise<{ revokeShare: boolean }>}
 */
export function mutateRevokeShare(shareId) {
  return call(Q.revokeShare, { id: shareId });
}

/**
 * Shows the version `messageId` of a message: the chat's active path goes through it
 * (then down its most recent replies and messages). SESSION_BUSY while a turn runs.
 * @param {string} sessionId
 * @param {string} messageId
 * @returns {Promise<{ switchBranch: ChangedSession }>}
 */
export function mutateSwitchBranch(sessionId, messageId) {
  return call(Q.switchBranch, { sessionId, messageId });
}

/**
 * @param {string | null} title
 * @returns {Promise<{ createSession: SessionSummary }>}
 */
export function mutateCreateSession(title) {
  const input = title ? { title } : null;
  return call(Q.create, { input });
}

/**
 * @param {string} id
 * @returns {Promise<{ deleteSession: boolean }>} false when there was no such chat
 */
export function mutateDeleteSession(id) {
  return call(Q.remove, { id });
}

/**
 * A new turn id: a random (version 4) UUID. `crypto.randomUUID` exists only in a secure
 * context (https, localhost), so the page makes one from `getRandomValues` elsewhere.
 * @returns {string}
 */
export function newTurnId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // the RFC 4122 variant
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
}

/**
 * Sends `message` in the chat as the turn `turnId` (chosen by the page) and streams the
 * reply into `sink`, the model offered `tools` (none when null). Sent again with the
 * same `turnId`, it joins that turn (from its first event) instead of running the
 * message twice. A message sent while calls wait for results answers them "cancelled".
 * @param {string} sessionId
 * @param {string} message
 * @param {string} turnId
 * @param {ToolInput[] | null} tools
 * @param {Sink<{ chat: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeChat(sessionId, message, turnId, tools, sink) {
  return client.subscribe(Q.chat, { sessionId, message, turnId, ...(tools ? { tools } : {}) }, sink);
}

/**
 * Answers the tool calls waiting in the chat (`results`: each of them once) as the turn
 * `turnId` (chosen by the page) and streams the model's next reply into `sink`, the
 * model offered `tools` (none when null). Sent again with the same `turnId`, it joins
 * that turn. BAD_USER_INPUT when the results do not answer exactly the calls waiting.
 * @param {string} sessionId
 * @param {string} turnId
 * @param {ToolResult[]} results
 * @param {ToolInput[] | null} tools
 * @param {Sink<{ submitToolResults: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeSubmitToolResults(sessionId, turnId, results, tools, sink) {
  const variables = { sessionId, turnId, results, ...(tools ? { tools } : {}) };
  return client.subscribe(Q.submitToolResults, variables, sink);
}

/**
 * Runs the person's message of the reply `messageId` again as the turn `turnId` (chosen
 * by the page) and streams the new reply into `sink`; stored, it is a new version of
 * that reply, and the chat ends with it (the old reply and what followed it stay, as
 * other versions). A failure, or a stop before the first token, keeps the old one. Sent
 * again with the same `turnId`, it joins that turn.
 * @param {string} sessionId
 * @param {string} turnId
 * @param {string} messageId the reply to run again
 * @param {Sink<{ regenerate: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeRegenerate(sessionId, turnId, messageId, sink) {
  return client.subscribe(Q.regenerate, { sessionId, turnId, messageId }, sink);
}

/**
 * Sends `message` as a new version of the person's message `messageId` (the old one and
 * what followed it stay, as another version) as the turn `turnId` (chosen by the page),
 * and streams the reply into `sink`. Sent again with the same `turnId`, it joins that
 * turn.
 * @param {string} sessionId
 * @param {string} messageId
 * @param {string} message
 * @param {string} turnId
 * @param {Sink<{ edit: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeEdit(sessionId, messageId, message, turnId, sink) {
  return client.subscribe(Q.edit, { sessionId, messageId, message, turnId }, sink);
}

/**
 * Follows the turn `turnId` of the chat: its events after number `after` (replayed),
 * then live to its end. NOT_FOUND when the chat has no such turn (or it has expired).
 * @param {string} sessionId
 * @param {string} turnId
 * @param {number} after the number of the last event already shown; 0 for all
 * @param {Sink<{ turn: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeTurn(sessionId, turnId, after, sink) {
  return client.subscribe(Q.turn, { sessionId, turnId, after }, sink);
}

/**
 * Stops the turn `turnId` of the chat, whichever process runs it: the reply so far is
 * stored with status STOPPED, and the turn's subscribers get its done event.
 * @param {string} sessionId
 * @param {string} turnId
 * @returns {Promise<{ stopTurn: boolean }>} false when that turn was not running
 */
export function mutateStopTurn(sessionId, turnId) {
  return call(Q.stop, { sessionId, turnId });
}
