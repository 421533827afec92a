// tether.js: the browser client of tether's live channels (subprotocol tether.live.v1; the
// wire protocol is docs/live-protocol.md). One ES module, no dependencies, no build step.
//
//   import { Client } from "/tether.js";
//   const client = new Client("ws://host/live", { token });
//   const room = client.join("chat:lobby", { info });
//   room.on("message", ({ data, offset }) => {});
//
// The client reconnects by itself (jittered exponential backoff), joins every room again from
// its last position, and tells each room whether that position was recovered.

const PROTOCOL = "tether.live.v1";
// Close codes after which reconnecting cannot help: the client stops (docs: "Close codes").
const STOP = new Set([1000, 1009, 4001, 4002, 4004]);

// Listeners of every Client and Room: emitter -> Map(event -> Set(listener)).
const listeners = new WeakMap();

function emit(target, event, value) {
  const set = listeners.get(target)?.get(event);
  if (!set?.size) {
    if (event === "error") console.error(value); // never silent
    return;
  }
  for (const listener of [...set]) {
    try {
      listener(value);
    } catch (error) {
      setTimeout(() => { throw error; }); // reported, without breaking the client
    }
  }
}

class Emitter {
  /** Calls `listener(value)` on each `event`; returns a function that removes it. */
  on(event, listener) {
    let events = listeners.get(this);
    if (!events) listeners.set(this, (events = new Map()));
    if (!events.has(event)) events.set(event, new Set());
    events.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    listeners.get(this)?.get(event)?.delete(listener);
  }
}

/** An error reply of the server (`code` 400..500, `type` its name), or a close (`code` the
 *  close code; `type` "disconnected" for a command cut short, "closed" when the client stops). */
export class TetherError extends Error {
  constructor(code, type, message, limit) {
    super(message || type);
    this.name = "TetherError";
    this.code = code;
    this.type = type;
    if (limit !== undefined) this.limit = limit;
  }
}

const replyError = (error) => new TetherError(error.code, error.name, error.message, error.limit);

export class Room extends Emitter {
  #link;

  /** Made by `client.join(name, options)`. */
  constructor(client, name, { info = null, since = null } = {}, link) {
    super();
    this.client = client;
    this.name = name;
    this.info = info; // sent with every (re)join
    this.position = since; // {epoch, offset} of the last message seen, in a room with history
    this.recovered = false;
    this.presence = {}; // {connection id: info}
    this.joined = false;
    this.#link = link;
  }

  /** Publishes `data` into the room; resolves with the reply, rejects with a TetherError. */
  publish(data) {
    return this.#link.ask(this, { op: "publish", room: this.name, data });
  }

  /** The room's kept messages with an offset over `since`, at most `limit`. */
  history({ since, limit } = {}) {
    return this.#link.ask(this, { op: "history", room: this.name, since, limit });
  }

  /** Leaves the room for good (it is not joined again on reconnect). */
  leave() {
    return this.#link.leave(this);
  }
}

export class Client extends Emitter {
  id = null; // this connection's id (its key in presence), null while not connected
  #state = "connecting";
  #ws = null;
  #token;
  #options;
  #rooms = new Map(); // name -> Room
  #joining = new Map(); // Room -> pushes received before its join reply
  #pending = new Map(); // command id -> callback(error, result)
  #queued = []; // [command, callback]: asked while connecting, sent once connected
  #ids = 0;
  #attempt = 0; // failed connections since the last good one (the backoff's exponent)
  #generation = 0; // bumped by close(): an open() in progress then gives up
  #pingMs = 0;
  #timers = {};
  #link = { ask: (room, command) => this.#ask(room, command), leave: (room) => this.#leave(room) };

  /** `token`: a string, or a function returning one (or a Promise of one), called at each
   *  connect and refresh. Delays and timeouts in milliseconds. */
  constructor(url, { token = null, minDelay = 250, maxDelay = 10000, connectTimeout = 10000,
    WebSocket = globalThis.WebSocket } = {}) {
    super();
    this.url = String(url);
    this.#token = token;
    this.#options = { minDelay, maxDelay, connectTimeout, WebSocket };
    this.#open();
  }

  /** "connecting" | "connected" | "disconnected" | "closed" (each change emits "state"). */
  get state() {
    return this.#state;
  }

  /** Joins `name` now or as soon as connected, and again after every reconnect. */
  join(name, options) {
    if (this.#rooms.has(name)) throw new Error(`already in room ${name}`);
    const room = new Room(this, name, options, this.#link);
    this.#rooms.set(name, room);
    if (this.#state === "connected") this.#join(room);
    return room;
  }

  /** Closes the connection for good (close code 1000). */
  close() {
    if (this.#state === "closed") return;
    this.#generation++;
    clearTimeout(this.#timers.retry);
    this.#setState("closed");
    const ws = this.#ws;
    this.#closed(1000, "closed by the client");
    ws?.close(1000);
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    emit(this, "state", state);
  }

  async #getToken() {
    return typeof this.#token === "function" ? await this.#token() : this.#token;
  }

  async #open() {
    const generation = ++this.#generation;
    this.#setState("connecting");
    let token, ws;
    try {
      token = await this.#getToken();
    } catch (error) {
      if (generation !== this.#generation) return;
      emit(this, "error", error); // the token function failed: try again later
      return this.#closed(1006, "no token");
    }
    if (generation !== this.#generation) return; // closed meanwhile
    try {
      ws = this.#ws = new this.#options.WebSocket(this.url, PROTOCOL);
    } catch (error) {
      emit(this, "error", error); // a URL the WebSocket refuses: trying again cannot help
      this.#setState("closed");
      return this.#closed(1006, error.message);
    }
    this.#watch(this.#options.connectTimeout);
    // A refused connect is answered with 401 and closed with 4001: the close tells.
    ws.onopen = () => this.#request({ op: "connect", token }, (error, result) => error || this.#connected(result));
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => this.#closed(event.code, event.reason);
  }

  #connected({ client, ping, expires_in }) {
    this.id = client;
    this.#attempt = 0;
    this.#pingMs = ping * 1000;
    this.#watch(this.#pingMs * 1.5);
    this.#refreshIn(expires_in);
    for (const room of this.#rooms.values()) this.#join(room);
    for (const [command, callback] of this.#queued.splice(0)) this.#request(command, callback);
    this.#setState("connected");
  }

  // Nothing heard for `ms`: the connection is dead, even if the browser does not know yet.
  #watch(ms) {
    clearTimeout(this.#timers.watch);
    this.#timers.watch = setTimeout(() => this.#drop(1006, "nothing heard from the server"), ms);
  }

  #refreshIn(expiresIn) {
    clearTimeout(this.#timers.refresh);
    if (expiresIn == null) return;
    this.#timers.refresh = setTimeout(async () => {
      const ws = this.#ws;
      let token;
      try {
        token = await this.#getToken();
      } catch (error) {
        return emit(this, "error", error); // the server closes with 4003 at expiry: we reconnect
      }
      if (ws && ws === this.#ws) {
        this.#request({ op: "refresh", token }, (error, result) => {
          if (!error) this.#refreshIn(result.expires_in);
          else if (error.type !== "disconnected") emit(this, "error", error);
        });
      }
    }, expiresIn * 800);
  }

  #join(room) {
    const since = room.position;
    this.#joining.set(room, []);
    this.#request({ op: "join", room: room.name, info: room.info ?? undefined, since: since ?? undefined },
      (error, result) => {
        const pushes = this.#joining.get(room) ?? [];
        this.#joining.delete(room);
        if (this.#rooms.get(room.name) !== room || error?.type === "disconnected") return;
        if (error) {
          this.#rooms.delete(room.name); // refused: not joined again
          return emit(room, "error", error);
        }
        const { recovered, position = null, presence } = result;
        // Replayed messages (recovered) come after `since`; otherwise after `position`.
        room.position = recovered && since ? since : position;
        room.recovered = recovered;
        room.joined = true;
        if (presence) room.presence = { ...presence };
        emit(room, "join", { recovered, position });
        if (presence) emit(room, "presence", room.presence);
        for (const push of pushes) this.#push(room, push);
        const now = room.position;
        if (position && (!now || (now.epoch === position.epoch && now.offset < position.offset))) {
          room.position = position;
        }
      });
  }

  #push(room, push) {
    const early = this.#joining.get(room);
    if (early) return early.push(push); // handed over after the join reply
    if (push.push === "message") {
      const { data, offset = null, epoch = null } = push;
      if (offset != null) {
        const seen = room.position;
        if (seen && seen.epoch === epoch && offset <= seen.offset) return; // a duplicate
        room.position = { epoch, offset };
      }
      emit(room, "message", { data, offset, epoch });
    } else if (push.push === "presence") {
      const members = { ...room.presence };
      for (const id in push.left) delete members[id];
      Object.assign(members, push.joined);
      room.presence = members;
      emit(room, "presence", members);
    } else if (push.push === "lost") {
      // The position is no longer one to go on from (e.g. a history restored from an older
      // copy goes on from lower offsets): the next message sets it, whatever its offset.
      room.position = null;
      emit(room, "lost", { reason: push.reason });
    }
  }

  #receive(text) {
    if (this.#state === "connected") this.#watch(this.#pingMs * 1.5);
    const message = JSON.parse(text);
    if (message.push === "ping") return this.#send({ op: "pong" });
    if (message.push) {
      const room = this.#rooms.get(message.room);
      return room && this.#push(room, message);
    }
    const callback = this.#pending.get(message.id);
    const error = message.error && replyError(message.error);
    if (callback) {
      this.#pending.delete(message.id);
      callback(error, message.result);
    } else if (error) {
      emit(this, "error", error);
    }
  }

  #send(command) {
    this.#ws.send(JSON.stringify(command));
  }

  #request(command, callback) {
    const id = ++this.#ids;
    this.#pending.set(id, callback);
    this.#send({ id, ...command });
  }

  // A room's command: sent now when connected, once connected when connecting; its promise
  // is rejected when the connection fails first.
  #ask(room, command) {
    return new Promise((resolve, reject) => {
      const callback = (error, result) => (error ? reject(error) : resolve(result));
      if (this.#rooms.get(room.name) !== room) {
        reject(new TetherError(410, "not_joined", `not in room ${room.name}`));
      } else if (this.#state === "connecting") {
        this.#queued.push([command, callback]); // sent after the rooms' joins
      } else if (this.#state === "connected") {
        this.#request(command, callback);
      } else {
        reject(new TetherError(0, "disconnected", "not connected"));
      }
    });
  }

  #leave(room) {
    if (this.#rooms.get(room.name) !== room) return Promise.resolve();
    this.#rooms.delete(room.name);
    this.#joining.delete(room);
    room.joined = false;
    if (this.#state !== "connected") return Promise.resolve();
    return new Promise((resolve) => this.#request({ op: "leave", room: room.name }, () => resolve()));
  }

  // Gives up on the socket at once, without waiting for a closing handshake.
  #drop(code, reason) {
    const ws = this.#ws;
    this.#closed(code, reason);
    ws?.close();
  }

  #closed(code, reason) {
    if (this.#ws) this.#ws.onopen = this.#ws.onmessage = this.#ws.onclose = null;
    this.#ws = null;
    this.id = null;
    clearTimeout(this.#timers.watch);
    clearTimeout(this.#timers.refresh);
    this.#joining.clear();
    for (const room of this.#rooms.values()) room.joined = false;
    const callbacks = [...this.#pending.values(), ...this.#queued.splice(0).map(([, callback]) => callback)];
    this.#pending.clear();
    const error = new TetherError(code, "disconnected", reason || `connection closed (${code})`);
    for (const callback of callbacks) callback(error);
    if (this.#state === "closed") return;
    if (STOP.has(code)) {
      if (code !== 1000) emit(this, "error", new TetherError(code, "closed", reason || `closed with ${code}`));
      return this.#setState("closed");
    }
    this.#setState("disconnected");
    this.#retry();
  }

  // Full jitter: a delay drawn from 0 to minDelay * 2^attempt, capped at maxDelay.
  #retry() {
    const { minDelay, maxDelay } = this.#options;
    const delay = Math.random() * Math.min(maxDelay, minDelay * 2 ** this.#attempt++);
    this.#timers.retry = setTimeout(() => this.#open(), delay);
  }
}
