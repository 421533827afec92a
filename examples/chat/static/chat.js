// The chat page, on tether's live channels (tether.js, served by the app at /tether.js):
// log in with a name, join the room `chat:<room>`, show who is online and what is said.
//
// tether.js reconnects by itself and joins again from the last message seen: when the
// server says everything missed meanwhile was recovered, those messages simply follow,
// each once. When it says it could not (`recovered: false`: a restarted server without
// Redis, or too much missed), the page says so and loads the room's recent history again.
//
// `?name=N&room=R` logs in and joins at once (the page puts them in the address after a
// join, so that a reload comes back to the room).
import { Client } from "/tether.js";

const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_-]{1,32}$/; // app.py's rule, checked here to answer at once
const ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _";
const SHOWN = 50; // messages of history shown on joining

// What the page is doing; `window.chat` for a look from the console.
const chat = (window.chat = { client: null, room: null, name: null, roomName: null, joins: 0, notices: [] });

// ---- the message log -----------------------------------------------------------------------
// Messages are placed by offset, and shown once: the history read on joining and the live
// messages overlap, and arrive in either order. A "segment" is the run of messages after the
// last divider, all of one epoch; a divider marks where messages may be missing.
const log = $("log");
let segment = newSegment(null);

function newSegment(divider) {
  return { divider, epoch: null, offsets: new Set(), last: null, loaded: false };
}

function divide(text) {
  const divider = Object.assign(document.createElement("li"), { className: "divider", textContent: text });
  log.appendChild(divider);
  segment = newSegment(divider);
  follow();
}

function place(offset, epoch, data) {
  if (segment.epoch && epoch && epoch !== segment.epoch) divide("the room's history started again");
  if (epoch) segment.epoch = epoch;
  if (offset != null) {
    if (segment.offsets.has(offset)) return; // shown already
    segment.offsets.add(offset);
    segment.last = Math.max(segment.last ?? 0, offset);
  }
  const item = document.createElement("li");
  if (offset != null) item.dataset.offset = offset;
  const who = Object.assign(document.createElement("span"), { className: "who", textContent: `${data?.name ?? "?"}: ` });
  item.append(who, String(data?.text ?? "")); // text nodes, never innerHTML: messages are untrusted
  if (data?.name === chat.name) item.className = "mine";
  // Before the first message of this segment with a higher offset (most often: at the end).
  let before = null;
  for (let node = log.lastElementChild; node && node !== segment.divider; node = node.previousElementSibling) {
    if (offset == null || Number(node.dataset.offset) < offset) break;
    before = node;
  }
  log.insertBefore(item, before);
  follow();
}

// The last SHOWN messages before `position` and whatever came since (and at least all since
// the last message shown, after a loss), into the current segment.
async function loadHistory(position) {
  const into = segment;
  if (!position || position.offset === 0) return (into.loaded = true); // nothing said here yet
  let since = position.offset - SHOWN;
  if (into.last !== null && position.epoch === into.epoch) since = Math.min(since, into.last);
  for (let attempt = 1; ; attempt++) {
    try {
      const { position: now, messages } = await chat.room.history({ since: Math.max(0, since) });
      if (into !== segment) return; // a newer load took over
      for (const { offset, data } of messages) place(offset, now.epoch, data);
      into.loaded = true;
      return;
    } catch (error) {
      // Cut off meanwhile: the next join loads it (segment.loaded is still false).
      if (error.type === "disconnected" || into !== segment) return;
      if (attempt === 3) return notice(`Could not load the history: ${error.message}.`);
      await new Promise((resolve) => setTimeout(resolve, 1000 * attempt)); // the server may be recovering
    }
  }
}

// Follow the newest message when messages arrive and when the log shrinks (a phone's
// keyboard opening), unless the person scrolled up to read. A scroll event that comes
// between a resize and the ResizeObserver's call sees the new height with the old scroll
// position: it does not count (the observer follows first).
let following = true;
let height = log.clientHeight; // as the ResizeObserver last saw it
const follow = () => { if (following) log.scrollTop = log.scrollHeight; };
log.addEventListener("scroll", () => {
  if (log.clientHeight === height) following = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
});
new ResizeObserver(() => { height = log.clientHeight; follow(); }).observe(log);

// ---- the room's events ------------------------------------------------------------------------
function joined({ recovered, position }) {
  chat.joins++;
  showState();
  if (chat.joins > 1 && !recovered) {
    // Nothing of what was missed will come: say so, and start again from the recent history.
    notice("Some messages could not be recovered; reloading history.");
    divide("some messages could not be recovered");
  }
  // A recovered rejoin needs nothing: the missed messages follow this event, each once.
  if (!segment.loaded) loadHistory(position);
}

function lost({ reason }) {
  notice(`Some messages may not have reached this page (${reason}); reloading history.`);
  loadHistory(chat.room.position);
}

function showOnline(members) {
  const count = new Map(); // name -> connections (one person in two tabs is there twice)
  for (const { name } of Object.values(members)) count.set(name, (count.get(name) ?? 0) + 1);
  const mine = members[chat.client.id]?.name;
  const items = [...count].sort(([a], [b]) => a.localeCompare(b)).map(([name, tabs]) => {
    const item = document.createElement("li");
    item.textContent = name + (tabs > 1 ? ` (${tabs})` : "");
    if (name === mine) item.append(Object.assign(document.createElement("span"), { className: "you", textContent: " (you)" }));
    return item;
  });
  $("online").replaceChildren(...items);
  $("count").textContent = `(${count.size})`;
  $("people").hidden = false;
}

// ---- connection state -------------------------------------------------------------------------
let stopped = "";

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function showState() {
  const { client, room, roomName, name } = chat;
  const state = client.state;
  const live = state === "connected" && room.joined;
  $("send").disabled = !live;
  $("people").classList.toggle("stale", !live);
  if (live) setStatus(`connected to ${roomName} as ${name}`, "connected");
  else if (state === "connected") setStatus(`joining ${roomName}…`);
  else if (state === "closed") setStatus(`disconnected${stopped && `: ${stopped}`}`, "lost");
  else if (chat.joins === 0) setStatus("connecting…");
  else setStatus("connection lost — reconnecting…", "lost");
}

function notice(text) {
  chat.notices.push(text);
  $("notice-text").textContent = text;
  $("notice").hidden = false;
}
$("dismiss").addEventListener("click", () => { $("notice").hidden = true; });

// ---- logging in and joining -------------------------------------------------------------------
async function login(name) {
  const response = await fetch("/login", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name }),
    signal: AbortSignal.timeout(10000), // a server that hangs must not hold up reconnecting
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body; // {name, token}
}

function refuse(roomName, why) {
  $("error").textContent = `Cannot join “${roomName}”: ${why}.`;
  $("error").hidden = false;
  $("join").hidden = false;
  $("say").hidden = true;
  setStatus("not connected");
}

async function join(name, roomName) {
  if (chat.client && chat.client.state !== "closed") return; // joined already (or on its way)
  if (!ROOM.test(roomName)) return refuse(roomName, ROOM_RULE);
  $("error").hidden = true;
  let first;
  try {
    first = await login(name);
  } catch (error) {
    $("error").textContent = `Cannot log in: ${error.message}.`;
    $("error").hidden = false;
    return;
  }
  Object.assign(chat, { name: first.name, roomName, joins: 0 });
  stopped = "";
  log.replaceChildren();
  segment = newSegment(null);
  history.replaceState(null, "", `?${new URLSearchParams({ name: first.name, room: roomName })}`);
  // The token of this login first; then a new one for every reconnect and refresh (a
  // restarted server signs with a new secret).
  let token = first.token;
  const nextToken = async () => {
    const given = token ?? (await login(chat.name)).token;
    token = null;
    return given;
  };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = (chat.client = new Client(`${scheme}://${location.host}/live`, { token: nextToken }));
  client.on("state", showState);
  client.on("error", (error) => {
    if (error.type === "closed") stopped = error.message; // the client stops: say why
  });
  const room = (chat.room = client.join(`chat:${roomName}`));
  room.on("join", joined);
  room.on("message", ({ data, offset, epoch }) => place(offset, epoch, data));
  room.on("presence", showOnline);
  room.on("lost", lost);
  room.on("error", (error) => { // the room refused the join
    client.close();
    refuse(roomName, error.message);
  });
  $("join").hidden = true;
  $("say").hidden = false;
  showState();
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("name").value.trim(), $("room").value.trim());
});

$("say").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !chat.room?.joined) return; // kept in the box meanwhile
  $("text").value = "";
  $("text").focus();
  try {
    await chat.room.publish({ text });
  } catch (error) {
    if (!$("text").value) $("text").value = text; // not sent: give it back
    if (error.type !== "disconnected") notice(`Not sent: ${error.message}.`);
  }
});

const params = new URLSearchParams(location.search);
if (params.get("name")) {
  $("name").value = params.get("name");
  $("room").value = params.get("room") || "lobby";
  join(params.get("name"), params.get("room") || "lobby");
}
