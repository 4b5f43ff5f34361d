// @ts-check
// The chat page: sessions in the sidebar, a conversation, replies streamed through the
// `chat` subscription. It uses the public GraphQL API only.
//
// The entry point: it wires the page's events to the flows and starts the page. The
// modules, each loaded by the browser as it is (no build):
//   queries.js  the GraphQL documents, the client and the admin token
//   state.js    the page's state
//   view.js     what the page shows (DOM only)
//   flows.js    what the page does: the list, opening/creating/deleting a chat, a turn
//   graphql.js  the GraphQL client (HTTP and graphql-transport-ws)
//   markdown.js the safe Markdown renderer

import {
  deleteOpenSession, loadSessions, newChat, openSession, send, useAdminToken,
} from "./flows.js";
import { client, onConnectionStatus, queryServerInfo } from "./queries.js";
import { state } from "./state.js";
import { autosize, openDrawer, showConnection, showError, showModel, ui } from "./view.js";

onConnectionStatus(showConnection);

/** @returns {string | null} the id of the chat the address names, if any */
function sessionFromHash() {
  const match = location.hash.match(/^#\/s\/([0-9a-f-]{36})$/);
  return match ? match[1] : null;
}

// ---------- events ----------

ui.input.addEventListener("input", autosize);
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.input.value);
  }
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.input.value);
});

ui.newForm.addEventListener("submit", (event) => {
  event.preventDefault();
  newChat();
});

ui.del.addEventListener("click", () => deleteOpenSession());

ui.adminForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.adminToken.value.trim();
  ui.adminToken.value = "";
  useAdminToken(token);
});

ui.more.addEventListener("click", () => loadSessions({ append: true }));
ui.menu.addEventListener("click", () => openDrawer(!ui.app.classList.contains("drawer-open")));
ui.scrim.addEventListener("click", () => openDrawer(false));
ui.sessions.addEventListener("click", (event) => {
  if (event.target instanceof Element && event.target.closest("a")) openDrawer(false);
});
// Switching chats while a reply streams is fine: the turn goes on on the server.
window.addEventListener("popstate", () => openSession(sessionFromHash()));
window.addEventListener("hashchange", () => {
  const id = sessionFromHash();
  if (id !== state.current) openSession(id);
});

// ---------- start ----------

async function start() {
  client.connect();
  // Open the chat in the address first, so nothing the person does meanwhile (a new
  // chat, a click in the list) is undone when a slower request comes back.
  const opening = openSession(sessionFromHash());
  const listing = loadSessions();
  try {
    const { serverInfo } = await queryServerInfo();
    showModel(serverInfo.model);
    state.maxChars = serverInfo.maxMessageChars;
  } catch (error) {
    showError(error);
  }
  await Promise.all([opening, listing]);
  ui.input.focus();
}

start();
