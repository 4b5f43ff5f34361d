// @ts-check
// The chat page: sessions in the sidebar, a conversation, replies streamed through the
// `chat` subscription (followed with `turn` after a reload or a lost connection, stopped
// with `stopTurn`), replies regenerated and messages edited as new versions (the old
// ones kept, shown again with the "‹ 2 / 3 ›" picker: `switchBranch`), the title
// renamed in place, earlier messages loaded on scrolling up, the tokens used shown, a
// reply's reasoning in a collapsed "Thinking" block, and two demo tools the model may
// call (each call shown as a card, run or declined by the person, the answers sent with
// `submitToolResults`). It uses the public GraphQL API only.
//
// The entry point: it wires the page's events to the flows and starts the page. The
// modules, each loaded by the browser as it is (no build):
//   queries.js  the GraphQL documents, the client, who the page is (guest or admin token)
//   state.js    the page's state
//   view.js     what the page shows (DOM only)
//   flows.js    the chats: the list, opening/creating/renaming/deleting a chat, paging
//               back through it, showing another version of a message, starting an edit
//   turnflow.js a turn's life: sent, regenerated, edited, followed, taken up again after
//               a lost connection, stopped; tool calls answered and their answers sent
//   tools.js    the demo tools (current_time, calculator) and their setting
//   graphql.js  the GraphQL client (HTTP and graphql-transport-ws)
//   markdown.js the safe Markdown renderer

import {
  cancelEdit, closeShares, deleteOpenSession, identityChanged, listAction, loadOlder,
  loadSessions, newChat, newShare, openSession, saveTitle, shareAction, showVersion, startEdit,
  startRenaming, stopRenaming, titleLeft, toggleArchiveView, useAdminToken,
} from "./flows.js";
import {
  adminToken, client, identityReady, onConnectionStatus, onIdentityChange, queryServerInfo,
} from "./queries.js";
import { state } from "./state.js";
import { demoToolsOn, setDemoTools } from "./tools.js";
import { answerCall, connectionChanged, regenerate, send, stopReply } from "./turnflow.js";
import {
  autosize, nearTop, openDrawer, showConnection, showElsewhere, showError, showListMode,
  showModel, ui,
} from "./view.js";

onConnectionStatus((status) => {
  showConnection(status);
  connectionChanged(status);
});
onIdentityChange(identityChanged);

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
  } else if (event.key === "Escape" && state.editing) {
    event.preventDefault();
    cancelEdit();
  }
});
ui.editCancel.addEventListener("click", () => {
  cancelEdit();
  ui.input.focus();
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.input.value);
});

ui.stop.addEventListener("click", () => stopReply());

// "Demo tools": whether messages offer the model the page's tools (kept in this browser).
ui.demoTools.checked = demoToolsOn();
ui.demoTools.addEventListener("change", () => setDemoTools(ui.demoTools.checked));

ui.newForm.addEventListener("submit", (event) => {
  event.preventDefault();
  newChat();
});

ui.del.addEventListener("click", () => deleteOpenSession());

// The title: Rename turns it into an input; Enter saves, Escape (or leaving it) cancels.
ui.rename.addEventListener("click", () => startRenaming());
ui.titleForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveTitle();
});
ui.titleInput.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.preventDefault();
    stopRenaming();
  }
});
ui.titleInput.addEventListener("blur", () => titleLeft());

// The turns' buttons, the versions' arrows, the tool calls' Run and Decline, and earlier
// messages once the person scrolls to the top.
ui.messages.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
  const item = button?.closest(".msg");
  if (!(button instanceof HTMLButtonElement) || !(item instanceof HTMLElement)) return;
  const { action } = button.dataset;
  if (action === "regenerate") regenerate(item);
  else if (action === "edit") startEdit(item);
  else if (action === "previous" || action === "next") showVersion(button);
  else if (action === "run-tool" || action === "decline-tool") answerCall(button);
});
ui.messages.addEventListener("scroll", () => { if (nearTop()) loadOlder(); }, { passive: true });

ui.adminForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.adminToken.value.trim();
  ui.adminToken.value = "";
  useAdminToken(token);
});

ui.myChats.addEventListener("click", () => useAdminToken(""));
ui.more.addEventListener("click", () => loadSessions({ append: true }));
ui.menu.addEventListener("click", () => openDrawer(!ui.app.classList.contains("drawer-open")));
ui.scrim.addEventListener("click", () => openDrawer(false));
ui.sessions.addEventListener("click", (event) => {
  if (!(event.target instanceof Element)) return;
  const button = event.target.closest("button[data-action]");
  const item = button?.closest("li");
  if (button instanceof HTMLElement && item instanceof HTMLElement && item.dataset.id) {
    listAction(item.dataset.id, button.dataset.action ?? "", button.getAttribute("aria-pressed") === "true");
    return;
  }
  if (event.target.closest("a")) openDrawer(false);
});
ui.archiveView.addEventListener("click", () => toggleArchiveView());
ui.shareClose.addEventListener("click", () => closeShares());
ui.shareNew.addEventListener("click", () => newShare());
ui.shareLinks.addEventListener("click", (event) => {
  if (!(event.target instanceof Element)) return;
  const button = event.target.closest("button[data-action]");
  const item = button?.closest("li");
  if (button instanceof HTMLElement && item instanceof HTMLElement) {
    shareAction(item, button.dataset.action ?? "");
  }
});
// Switching chats while a reply streams is fine: the turn goes on on the server.
window.addEventListener("popstate", () => openSession(sessionFromHash()));
window.addEventListener("hashchange", () => {
  const id = sessionFromHash();
  if (id !== state.current) openSession(id);
});

// ---------- start ----------

async function start() {
  // Open the chat in the address first, so nothing the person does meanwhile (a new
  // chat, a click in the list) is undone when a slower request comes back. Every
  // request waits for the page's token (on a first visit, a new guest token); the
  // socket sends it when it opens, so it opens once there is one.
  ui.input.focus();
  const opening = openSession(sessionFromHash());
  const listing = loadSessions();
  const connecting = identityReady()
    .catch(() => { /* the server cannot be reached: the requests say so, and ask again */ })
    .then(() => client.connect());
  try {
    const { serverInfo } = await queryServerInfo();
    showModel(serverInfo.model);
    state.maxChars = serverInfo.maxMessageChars;
    state.adminOffered = serverInfo.adminRequired;
    state.elsewhere = elsewhereAdvice(serverInfo.outsideHistories);
    showElsewhere();
    showListMode(Boolean(adminToken()));
  } catch (error) {
    showError(error);
  }
  await Promise.all([opening, listing, connecting]);
  // Into the input, unless the person has gone elsewhere meanwhile (typing a title).
  if (document.activeElement === document.body) ui.input.focus();
}

/**
 * How to serve the chats the server saw in a Redis it does not use; "" for none.
 * @param {import("./queries.js").ServerInfo["outsideHistories"]} found
 */
function elsewhereAdvice(found) {
  if (!found) return "";
  const many = `${found.count}${found.more ? "+" : ""}`;
  return (
    `A Redis at localhost:6379 holds ${many} chats of another LangChain app. This server ` +
    `keeps its own. To see them here, restart it with REDIS_URL=${found.redisUrl} ` +
    "(docs/migrating.md)."
  );
}

start();
