// Chat client: join a room, send lines, show what the room says.
// `?name=N&room=R&say=TEXT` joins at once and sends TEXT (used by the browser test).
const $ = (id) => document.getElementById(id);
let socket = null;

function show(text, notice) {
  const item = document.createElement("li");
  item.textContent = text;  // never innerHTML: messages are untrusted
  if (notice) item.className = "notice";
  $("log").appendChild(item);
}

function join(name, room, firstLine) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/ws/${encodeURIComponent(room)}?name=${encodeURIComponent(name)}`;
  socket = new WebSocket(url);
  socket.onopen = () => {
    $("status").textContent = `connected to ${room} as ${name}`;
    $("join").hidden = true;
    $("say").hidden = false;
    if (firstLine) socket.send(firstLine);
  };
  socket.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "welcome") show(`welcome to ${data.room} (${data.others} other(s) here)`, true);
    if (data.type === "join") show(`${data.name} joined`, true);
    if (data.type === "leave") show(`${data.name} left`, true);
    if (data.type === "message") show(`${data.name}: ${data.text}`);
  };
  socket.onclose = (event) => { $("status").textContent = `disconnected (code ${event.code})`; };
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("name").value, $("room").value);
});

$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("text").value && socket) socket.send($("text").value);
  $("text").value = "";
});

const params = new URLSearchParams(location.search);
if (params.get("name")) join(params.get("name"), params.get("room") || "lobby", params.get("say"));
