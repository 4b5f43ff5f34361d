// A real Apollo Client (3.x) with its persisted-query link against the server:
// prints one JSON line per query with the data or the error.
// Usage: node apq.mjs <graphql url>
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client/core/index.js";
import { createPersistedQueryLink } from "@apollo/client/link/persisted-queries/index.js";

const url = process.argv[2];
const sent = [];
const recordingFetch = async (uri, options) => {
  sent.push(JSON.parse(options.body));
  return fetch(uri, options);
};
const sha256 = (text) => createHash("sha256").update(text).digest("hex");

function client() {
  const link = createPersistedQueryLink({ sha256 }).concat(
    new HttpLink({ uri: url, fetch: recordingFetch }),
  );
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

const QUERY = gql`
  query ServerInfo {
    serverInfo {
      model
      maxMessageChars
    }
  }
`;

for (const round of ["first", "second"]) {
  sent.length = 0;
  try {
    // A new client each round: nothing cached in the client, so each asks the server.
    const result = await client().query({ query: QUERY, fetchPolicy: "network-only" });
    console.log(JSON.stringify({ round, data: result.data, sent }));
  } catch (error) {
    console.log(JSON.stringify({ round, error: String(error), sent }));
  }
}
