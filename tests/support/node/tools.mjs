// A real Apollo Client (3.x) runs a whole tool round trip from its subscriptions:
// subscriptions over GraphQLWsLink (graphql-ws's client, its WebSocket from `ws`),
// queries over HttpLink, split by operation as Apollo's docs show. It subscribes to
// `chat` offering a `calculator` tool, collects the reasoning and the done event's
// tool calls, runs the calculator itself, answers with `submitToolResults`, collects
// that reply, then queries the session through the same client. Prints one JSON line
// with everything seen (or {"error": ...} and exits 1).
// Usage: node tools.mjs <http graphql url> <ws graphql url> <session id> <message>
import { randomUUID } from "node:crypto";
import {
  ApolloClient,
  HttpLink,
  InMemoryCache,
  gql,
  split,
} from "@apollo/client/core/index.js";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions/index.js";
import { getMainDefinition } from "@apollo/client/utilities/index.js";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [httpUrl, wsUrl, sessionId, message] = process.argv.slice(2);

const wsClient = createClient({ url: wsUrl, webSocketImpl: WebSocket, lazy: true });
const link = split(
  ({ query }) => {
    const definition = getMainDefinition(query);
    return definition.kind === "OperationDefinition" && definition.operation === "subscription";
  },
  new GraphQLWsLink(wsClient),
  new HttpLink({ uri: httpUrl }),
);
const client = new ApolloClient({ link, cache: new InMemoryCache() });

const CALCULATOR = {
  name: "calculator",
  description: "Evaluates an arithmetic expression of two numbers.",
  parameters: {
    type: "object",
    properties: { expression: { type: "string" } },
    required: ["expression"],
  },
};

const EVENT = `
  token reasoning done seq turnId status
  toolCalls { id name arguments }
  message { id role content toolCalls { id name arguments } }
`;
const CHAT = gql`
  subscription Chat($s: ID!, $m: String!, $t: ID, $tools: [ToolInput!]) {
    chat(sessionId: $s, message: $m, turnId: $t, tools: $tools) { ${EVENT} }
  }
`;
const SUBMIT = gql`
  subscription Submit($s: ID!, $t: ID, $r: [ToolResultInput!]!, $tools: [ToolInput!]) {
    submitToolResults(sessionId: $s, turnId: $t, results: $r, tools: $tools) { ${EVENT} }
  }
`;
const SESSION = gql`
  query Session($s: ID!) {
    session(id: $s) {
      pendingToolCalls { id }
      messages { role toolCallId toolCalls { id } }
    }
  }
`;

// The events of one subscription, until the server completes it.
function collect(query, variables, field) {
  return new Promise((resolve, reject) => {
    const events = [];
    client.subscribe({ query, variables }).subscribe({
      next: ({ data, errors }) => {
        if (errors) reject(new Error(JSON.stringify(errors)));
        else events.push(data[field]);
      },
      error: reject,
      complete: () => resolve(events),
    });
  });
}

// What the events of a turn add up to: its reasoning, its answer and its done event.
function turn(events) {
  const done = events.at(-1);
  return {
    reasoning: events.map((e) => e.reasoning ?? "").join(""),
    answer: events.filter((e) => !e.done).map((e) => e.token).join(""),
    seqs: events.map((e) => e.seq),
    done: done.done,
    status: done.status,
    turnId: done.turnId,
    toolCalls: done.toolCalls,
    message: done.message,
  };
}

// The tool itself: "a op b" with + - * /, numbers only (no eval).
function calculator(expression) {
  const match = /^\s*(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)\s*$/.exec(expression);
  if (!match) return `cannot evaluate ${JSON.stringify(expression)}`;
  const [a, op, b] = [Number(match[1]), match[2], Number(match[3])];
  const value = { "+": a + b, "-": a - b, "*": a * b, "/": a / b }[op];
  return String(value);
}

try {
  const askedTurnId = randomUUID();
  const asked = turn(
    await collect(CHAT, { s: sessionId, m: message, t: askedTurnId, tools: [CALCULATOR] }, "chat"),
  );
  const results = (asked.toolCalls ?? []).map((call) => ({
    toolCallId: call.id,
    content: calculator(JSON.parse(call.arguments).expression),
  }));
  const answeredTurnId = randomUUID();
  const answered = turn(
    await collect(
      SUBMIT,
      { s: sessionId, t: answeredTurnId, r: results, tools: [CALCULATOR] },
      "submitToolResults",
    ),
  );
  const { data } = await client.query({
    query: SESSION,
    variables: { s: sessionId },
    fetchPolicy: "network-only",
  });
  console.log(
    JSON.stringify({
      asked: { ...asked, sentTurnId: askedTurnId },
      results,
      answered: { ...answered, sentTurnId: answeredTurnId },
      session: data.session,
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error) }));
  process.exitCode = 1;
} finally {
  client.stop();
  await wsClient.dispose();
}
