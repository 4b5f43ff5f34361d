// graphql-ws's own client (retryAttempts, as docs/usage.md recommends) subscribes to
// `chat` with a turn id; when its socket drops, it connects again and subscribes again
// with the same variables, and the server joins the turn. The page's recipe: skip an
// event whose seq is not above the last one seen. Prints "READY" after the first
// `after` events (the test then drops the connection), and at the end one JSON line:
// the text shown, the seqs received, and how many times it connected.
// Usage: node rejoin.mjs <ws url> <session id> <turn id> <message> <after>
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, sessionId, turnId, message, after] = process.argv.slice(2);
let connected = 0;
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  retryAttempts: 10,
  retryWait: async () => new Promise((resolve) => setTimeout(resolve, 200)),
  shouldRetry: () => true,
  on: { connected: () => { connected += 1; } },
});

const query = `subscription($s: ID!, $m: String!, $t: ID) {
  chat(sessionId: $s, message: $m, turnId: $t) { token seq done status }
}`;
let shown = "";
let last = 0;
const seqs = [];
let told = false;
await new Promise((resolve, reject) => {
  client.subscribe(
    { query, variables: { s: sessionId, m: message, t: turnId } },
    {
      next: ({ data, errors }) => {
        if (errors) { reject(new Error(JSON.stringify(errors))); return; }
        const event = data.chat;
        seqs.push(event.seq);
        if (event.seq > last) {
          last = event.seq;
          if (!event.done) shown += event.token;
        }
        if (!told && seqs.length >= Number(after)) {
          told = true;
          console.log("READY");
        }
      },
      error: reject,
      complete: resolve,
    },
  );
});
console.log(JSON.stringify({ shown, seqs, connected }));
await client.dispose();
