// @ts-check
// What the page asks the server: the GraphQL documents, the one client that sends them
// (HTTP for queries and mutations, the socket for the `chat` subscription), the admin
// token it sends, and one typed helper per document. It uses the public API only.

import { GraphQLClient } from "./graphql.js";

/** @import { ConnectionStatus, Sink } from "./graphql.js" */

/** @typedef {"USER" | "ASSISTANT" | "SYSTEM"} Role */

/**
 * A message of a chat, as stored.
 * @typedef {object} Message
 * @property {Role} role
 * @property {string} content
 * @property {string | null} createdAt ISO date and time
 */

/**
 * A chat as the list shows it.
 * @typedef {object} SessionSummary
 * @property {string} id
 * @property {string | null} title
 * @property {string} updatedAt ISO date and time
 * @property {number} messageCount
 */

/**
 * A chat with its messages, oldest first.
 * @typedef {object} Session
 * @property {string} id
 * @property {string | null} title
 * @property {Message[]} messages
 */

/**
 * @typedef {object} ServerInfo
 * @property {string} model
 * @property {boolean} adminRequired
 * @property {number} maxMessageChars
 */

/**
 * One page of the chat list.
 * @typedef {object} SessionPage
 * @property {Array<{ node: SessionSummary }>} edges
 * @property {{ hasNextPage: boolean, endCursor: string | null }} pageInfo
 */

/**
 * One event of the `chat` subscription: a token of the reply, then one `done` event
 * with the stored reply.
 * @typedef {object} ChatEvent
 * @property {string} token
 * @property {boolean} done
 * @property {Message | null} message
 */

const TOKEN_KEY = "chat.adminToken";
/** How many chats one page of the list holds. */
export const PAGE = 30;

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

// ---------- the admin token ----------

/** @returns {string | null} the admin token this browser keeps, if any */
export function adminToken() {
  return localStorage.getItem(TOKEN_KEY);
}

/** @param {string} token the admin token to keep; empty forgets it */
export function saveAdminToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
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
  token: adminToken,
  onStatus: (status) => statusListener(status),
});

// ---------- the documents ----------

/** @returns {Promise<{ serverInfo: ServerInfo }>} */
export function queryServerInfo() {
  return client.request(Q.info);
}

/**
 * A page of the chat list, most recently active first.
 * @param {string | null} after the cursor of the previous page; null for the first
 * @returns {Promise<{ sessions: SessionPage }>}
 */
export function querySessions(after) {
  return client.request(Q.sessions, { first: PAGE, after });
}

/**
 * @param {string} id
 * @returns {Promise<{ session: Session | null }>} null when there is no such chat
 */
export function querySession(id) {
  return client.request(Q.session, { id });
}

/**
 * @param {string | null} title
 * @returns {Promise<{ createSession: SessionSummary }>}
 */
export function mutateCreateSession(title) {
  const input = title ? { title } : null;
  return client.request(Q.create, { input });
}

/**
 * @param {string} id
 * @returns {Promise<{ deleteSession: boolean }>} false when there was no such chat
 */
export function mutateDeleteSession(id) {
  return client.request(Q.remove, { id });
}

/**
 * Sends `message` in the chat and streams the reply into `sink`.
 * @param {string} sessionId
 * @param {string} message
 * @param {Sink<{ chat: ChatEvent }>} sink
 * @returns {() => void} cancels the subscription
 */
export function subscribeChat(sessionId, message, sink) {
  return client.subscribe(Q.chat, { sessionId, message }, sink);
}
