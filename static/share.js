// @ts-check
// The read-only page of a share link (/s/<id>): the snapshot from /share/<id>, its
// replies rendered as Markdown by the same safe renderer as the chat page (DOM nodes
// only, never HTML), the user's words as plain text.

import { renderMarkdown } from "./markdown.js";

/**
 * @typedef {{ role: string, content: string, createdAt: string | null }} SharedMessage
 * @typedef {{ title: string | null, messages: SharedMessage[], createdAt: string }} Snapshot
 */

/**
 * @param {string} id
 * @returns {HTMLElement}
 */
function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing`);
  return found;
}

/** @param {SharedMessage} message */
function messageNode(message) {
  const item = document.createElement("div");
  const role = message.role.toLowerCase();
  item.className = `msg ${role === "user" ? "user" : role === "system" ? "system" : "assistant"}`;
  item.dataset.role = message.role;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  if (message.role === "USER") bubble.textContent = message.content;
  else if (message.role === "TOOL") {
    // A tool's result, as text: what the client's tool answered, not the model's words.
    item.classList.add("tool");
    bubble.textContent = `Tool result: ${message.content}`;
  } else renderMarkdown(message.content, bubble);
  item.append(bubble);
  if (message.createdAt) {
    const meta = document.createElement("time");
    meta.className = "meta";
    meta.dateTime = message.createdAt;
    meta.textContent = new Date(message.createdAt).toLocaleString();
    item.append(meta);
  }
  return item;
}

async function show() {
  const title = byId("share-title");
  const note = byId("share-note");
  const list = byId("share-messages");
  const id = decodeURIComponent(location.pathname.split("/").pop() || "");
  let response;
  try {
    response = await fetch(`/share/${encodeURIComponent(id)}`, { cache: "no-store" });
  } catch {
    note.textContent = "The server cannot be reached. Try again later.";
    return;
  }
  if (!response.ok) {
    title.textContent = "Not found";
    note.textContent =
      response.status === 404
        ? "This share link was revoked, or its chat was deleted."
        : `The server answered ${response.status}. Try again later.`;
    document.body.dataset.state = "missing";
    return;
  }
  const snapshot = /** @type {Snapshot} */ (await response.json());
  title.textContent = snapshot.title || "Shared chat";
  document.title = `${snapshot.title || "Shared chat"} (shared)`;
  note.textContent = `Shared ${new Date(snapshot.createdAt).toLocaleString()}; read-only.`;
  // A reply that only asked for tools has no words of its own: its results follow it.
  const shown = snapshot.messages.filter((m) => m.role !== "ASSISTANT" || m.content);
  list.replaceChildren(...shown.map(messageNode));
  document.body.dataset.state = "shown";
}

void show();
