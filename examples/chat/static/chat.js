// Chat client: join a room, send lines, show what the room says, and reconnect by itself
// when the server goes away (what was said meanwhile is not recovered).
// `?name=N&room=R&say=TEXT` joins at once and sends TEXT.
const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_-]{1,32}$/;  // the server's rule (app.py), checked here to answer at once
const ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _";
const REFUSED = 1008;                    // the server's "policy violation": retrying would not help
const FIRST_DELAY = 500, MAX_DELAY = 10000;  // ms: the reconnection delay doubles up to the cap

let socket = null;
let retries = 0;    // failed attempts since the last successful connection
let ticker = null;  // updates the countdown in the status line

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

// Follow the newest message when messages arrive and when the log shrinks (a phone's
// keyboard opening), unless the person scrolled up to read.
const log = $("log");
let following = true;
const follow = () => { if (following) log.scrollTop = log.scrollHeight; };
log.addEventListener("scroll", () => { following = log.scrollHeight - log.scrollTop - log.clientHeight < 48; });
new ResizeObserver(follow).observe(log);

function show(text, who) {
  const item = document.createElement("li");
  if (who === undefined) item.className = "notice";
  else item.append(Object.assign(document.createElement("span"), { className: "who", textContent: `${who}: ` }));
  item.append(text);  // a text node, never innerHTML: messages are untrusted
  log.appendChild(item);
  follow();
}

function refuse(room, why) {
  $("error").textContent = `Cannot join “${room}”: ${why}.`;
  $("error").hidden = false;
  $("join").hidden = false;
  $("say").hidden = true;
  setStatus("not connected");
}

function join(name, room, firstLine) {
  if (!ROOM.test(room)) return refuse(room, ROOM_RULE);
  $("error").hidden = true;
  connect(name, room, firstLine);
}

function connect(name, room, firstLine) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}`);
  socket.onopen = () => {
    retries = 0;
    setStatus(`connected to ${room} as ${name}`, "connected");
    $("join").hidden = true;
    $("say").hidden = false;
    $("send").disabled = false;
    if (firstLine) socket.send(firstLine);
  };
  socket.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "welcome") show(`welcome to ${data.room} (${data.others} other(s) here)`);
    if (data.type === "join") show(`${data.name} joined`);
    if (data.type === "leave") show(`${data.name} left`);
    if (data.type === "message") show(data.text, data.name);
  };
  socket.onclose = (event) => {
    if (event.code === REFUSED) return refuse(room, event.reason || "refused by the server");
    reconnectLater(name, room);
  };
}

function reconnectLater(name, room) {
  $("send").disabled = true;
  // Exponential backoff with jitter: a random delay in the upper half of the current step,
  // so that the pages a restarted server dropped do not all come back at the same instant.
  const step = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** retries++);
  const due = Date.now() + step / 2 + Math.random() * step / 2;
  const tick = () => {
    const left = Math.max(0, due - Date.now()) / 1000;
    setStatus(`connection lost — reconnecting in ${left.toFixed(1)} s…`, "lost");
  };
  tick();
  clearInterval(ticker);
  ticker = setInterval(tick, 100);
  setTimeout(() => {
    clearInterval(ticker);
    setStatus("connection lost — reconnecting…", "lost");
    connect(name, room);
  }, due - Date.now());
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("name").value.trim(), $("room").value.trim());
});

$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!$("text").value || socket?.readyState !== WebSocket.OPEN) return;  // kept in the box meanwhile
  socket.send($("text").value);
  $("text").value = "";
  $("text").focus();
});

const params = new URLSearchParams(location.search);
if (params.get("name")) join(params.get("name"), params.get("room") || "lobby", params.get("say"));
