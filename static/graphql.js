// @ts-check
// GraphQL for the page: queries and mutations over HTTP POST, subscriptions over one
// WebSocket speaking graphql-transport-ws, reconnecting by itself with backoff.
//
// A subscription goes to the server at most once: when the socket is lost, every
// subscription on it ends with CONNECTION_LOST (saying whether it had been sent) and is
// never sent again by this client, since a `chat` sent twice could run its message twice.
// The caller decides how to go on (the page follows its turn with `turn(after: ...)`).

/**
 * One entry of a GraphQL response's `errors`; `extensions.code` says what went wrong.
 * @typedef {object} GraphQLErrorEntry
 * @property {string} message
 * @property {{ code?: string } & Record<string, unknown>} [extensions]
 */

/** @typedef {"connecting" | "open" | "closed"} ConnectionStatus */

/** @typedef {Record<string, unknown>} Variables */

/**
 * Where a subscription's results go: `next` for each result, then `complete`, or `error`.
 * @template T
 * @typedef {{ next(data: T): void, error(error: GraphQLError): void, complete(): void }} Sink
 */

/**
 * A subscription of the socket; `sent` once its `subscribe` message went out.
 * @typedef {object} ActiveSubscription
 * @property {{ query: string, variables: Variables }} payload
 * @property {Sink<any>} sink
 * @property {boolean} sent
 */

/**
 * A message of graphql-transport-ws from the server.
 * @typedef {object} ServerMessage
 * @property {string} type
 * @property {string} id the subscription's (read only for next, error and complete)
 * @property {any} [payload]
 */

export class GraphQLError extends Error {
  /** @param {GraphQLErrorEntry[]} errors */
  constructor(errors) {
    super(errors.map((e) => e.message).join("; ") || "request failed");
    this.errors = errors;
    /** @type {string} */
    this.code = errors[0]?.extensions?.code ?? "ERROR";
    /**
     * For CONNECTION_LOST from a subscription: whether it had reached the server.
     * @type {boolean | undefined}
     */
    this.sent = undefined;
  }
}

export class GraphQLClient {
  /**
   * @param {object} options
   * @param {string} options.httpUrl
   * @param {string} options.wsUrl
   * @param {() => string | null} options.token the bearer token to send, if any
   * @param {(status: ConnectionStatus) => void} [options.onStatus]
   * @param {(code: number) => void} [options.onRefused] the server closed the socket
   *   refusing its `connection_init` (4401 Unauthorized, 4403 Forbidden): the token sent
   *   may not be accepted any more. The socket still reconnects by itself.
   */
  constructor({ httpUrl, wsUrl, token, onStatus, onRefused }) {
    this.httpUrl = httpUrl;
    this.wsUrl = wsUrl;
    this.token = token; // () => string | null
    this.onStatus = onStatus ?? (() => {});
    this.onRefused = onRefused ?? (() => {});
    /** @type {WebSocket | null} */
    this.ws = null;
    /**
     * The token the open socket sent in its `connection_init` (null: none).
     * @type {string | null}
     */
    this.sentToken = null;
    this.acked = false;
    this.nextId = 1;
    /** @type {Map<string, ActiveSubscription>} */
    this.active = new Map(); // id -> {payload, sink}
    this.retries = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.reconnectTimer = undefined;
    /** @type {Array<() => void>} */
    this.waiters = [];
  }

  /**
   * A query or mutation over HTTP; rejects with a GraphQLError (code NETWORK when the
   * server cannot be reached or answers something that is not GraphQL).
   * @template T the shape of the response's `data`
   * @param {string} query
   * @param {Variables} [variables]
   * @param {string | null} [token] the bearer token to send (null: none); the client's
   *   own when not given
   * @returns {Promise<T>}
   */
  async request(query, variables = {}, token = this.token()) {
    /** @type {Record<string, string>} */
    const headers = { "content-type": "application/json", accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(this.httpUrl, {
        method: "POST",
        headers,
        body: JSON.stringify({ query, variables }),
      });
    } catch {
      throw new GraphQLError([{ message: "The server cannot be reached.", extensions: { code: "NETWORK" } }]);
    }
    let body;
    try {
      body = await response.json();
    } catch {
      throw new GraphQLError([{ message: `The server answered ${response.status}.`, extensions: { code: "NETWORK" } }]);
    }
    if (body.errors?.length) throw new GraphQLError(body.errors);
    return body.data;
  }

  connect() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.reconnectTimer);
    this.acked = false;
    this.onStatus("connecting");
    const ws = new WebSocket(this.wsUrl, "graphql-transport-ws");
    this.ws = ws;
    ws.addEventListener("open", () => {
      const token = this.token();
      this.sentToken = token;
      const payload = token ? { Authorization: `Bearer ${token}` } : {};
      ws.send(JSON.stringify({ type: "connection_init", payload }));
    });
    ws.addEventListener("message", (event) => this.#onMessage(ws, event));
    ws.addEventListener("close", (event) => this.#onClose(ws, event.code));
  }

  /** Reconnects if the socket is open with another token than the one to send now. */
  reauthenticate() {
    if (this.ws?.readyState === WebSocket.OPEN && this.sentToken !== this.token()) this.reconnect();
  }

  reconnect() {
    const old = this.ws;
    this.ws = null;
    if (old) old.close();
    this.#failActive();
    this.connect();
  }

  #failActive() {
    // Never re-sent on the new socket (see the top of this file): the caller takes it up.
    for (const [id, sub] of this.active) {
      this.active.delete(id);
      const error = new GraphQLError([{ message: "The connection was lost.", extensions: { code: "CONNECTION_LOST" } }]);
      error.sent = sub.sent;
      sub.sink.error(error);
    }
  }

  /**
   * @param {WebSocket} ws
   * @param {MessageEvent} event
   */
  #onMessage(ws, event) {
    /** @type {ServerMessage} */
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    switch (message.type) {
      case "connection_ack":
        this.acked = true;
        this.retries = 0;
        this.onStatus("open");
        for (const [id, sub] of this.active) {
          if (!sub.sent) { sub.sent = true; ws.send(JSON.stringify({ id, type: "subscribe", payload: sub.payload })); }
        }
        this.waiters.splice(0).forEach((resolve) => resolve());
        break;
      case "ping":
        ws.send(JSON.stringify({ type: "pong" }));
        break;
      case "next": {
        const sub = this.active.get(message.id);
        if (!sub) break;
        if (message.payload?.errors?.length) {
          this.active.delete(message.id);
          sub.sink.error(new GraphQLError(message.payload.errors));
        } else {
          sub.sink.next(message.payload.data);
        }
        break;
      }
      case "error": {
        const sub = this.active.get(message.id);
        if (!sub) break;
        this.active.delete(message.id);
        sub.sink.error(new GraphQLError(Array.isArray(message.payload) ? message.payload : [message.payload]));
        break;
      }
      case "complete": {
        const sub = this.active.get(message.id);
        if (!sub) break;
        this.active.delete(message.id);
        sub.sink.complete();
        break;
      }
      default:
        break;
    }
  }

  /**
   * @param {WebSocket} ws
   * @param {number} code
   */
  #onClose(ws, code) {
    if (ws !== this.ws) return;
    this.acked = false;
    this.onStatus("closed");
    this.#failActive();
    if (code === 4401 || code === 4403) this.onRefused(code);
    const delay = Math.min(8000, 500 * 2 ** this.retries) * (0.75 + Math.random() / 2);
    this.retries += 1;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * Resolves once the socket is acknowledged; rejects with CONNECTION_LOST after
   * `timeoutMs`.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  ready(timeoutMs = 10000) {
    if (this.acked) return Promise.resolve();
    this.connect();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new GraphQLError([{ message: "The server cannot be reached.", extensions: { code: "CONNECTION_LOST" } }]));
      }, timeoutMs);
      this.waiters.push(() => { clearTimeout(timer); resolve(); });
    });
  }

  /**
   * Starts a subscription (once the socket is acknowledged); returns its cancel.
   * @template T the shape of each result's `data`
   * @param {string} query
   * @param {Variables} variables
   * @param {Sink<T>} sink
   * @returns {() => void}
   */
  subscribe(query, variables, sink) {
    const id = String(this.nextId++);
    const sub = { payload: { query, variables }, sink, sent: false };
    this.active.set(id, sub);
    if (this.acked) {
      sub.sent = true;
      const ws = /** @type {WebSocket} */ (this.ws); // acknowledged, so there is one
      ws.send(JSON.stringify({ id, type: "subscribe", payload: sub.payload }));
    } else {
      this.connect();
    }
    return () => {
      if (!(this.active.delete(id) && this.acked)) return;
      /** @type {WebSocket} */ (this.ws).send(JSON.stringify({ id, type: "complete" }));
    };
  }
}
