// The chat web client: plain ES module over the public API (REST + /v1/ws), no dependencies.
// One tab is one login (sessionStorage), so two tabs can be two users.

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) n.append(c);
  return n;
};

const TYPING_LAPSE_MS = 6000;
const state = {
  session: null, // {access, refresh, user, expiresAt}
  convs: new Map(), // cid → {conv, messages: Map(seq → Message), hasMore, loaded, unread}
  users: new Map(), // id → User
  presence: new Map(), // id → {status, last_seen_at}
  typing: new Map(), // cid → Map(uid → timer)
  reads: new Map(), // cid → Map(uid → seq)
  current: null,
  ws: null,
  connected: false,
  pending: new Map(), // frame id → {cid, body, client_msg_id}
  editing: null, // {id, draft, focused}: an open edit, kept across re-renders
  nextId: 1,
  typingSent: 0,
  typingStop: null,
  retry: 0,
  refreshTimer: null,
  reconnectTimer: null,
};

// ---- session and REST ----

function saveSession(body) {
  state.session = {
    access: body.access_token,
    refresh: body.refresh_token,
    user: body.user,
    expiresAt: Date.now() + body.expires_in * 1000,
  };
  sessionStorage.setItem("chat.session", JSON.stringify(state.session));
  state.users.set(body.user.id, body.user);
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const left = state.session.expiresAt - Date.now();
  state.refreshTimer = setTimeout(() => refreshTokens().catch(() => {}), Math.max(1000, left * 0.8));
}

let refreshing = null;
async function refreshTokens() {
  if (!refreshing) {
    refreshing = (async () => {
      const r = await fetch("/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: state.session.refresh }),
      });
      if (!r.ok) throw new Error("session ended");
      saveSession(await r.json());
      // Renew the live connection's token too.
      wsSend({ type: "auth", id: frameId(), access_token: state.session.access });
    })().finally(() => (refreshing = null));
  }
  return refreshing;
}

async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const headers = { authorization: `Bearer ${state.session.access}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && attempt === 0) {
      try {
        await refreshTokens();
        continue;
      } catch {
        logout();
        throw new Error("logged out");
      }
    }
    if (r.status === 204) return null;
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.detail) || `HTTP ${r.status}`);
    return data;
  }
}

async function authenticate(path) {
  const username = $("username").value.trim();
  const password = $("password").value;
  $("login-error").textContent = "";
  const r = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    $("login-error").textContent = data.detail || `HTTP ${r.status}`;
    return;
  }
  saveSession(data);
  await start();
}

function logout() {
  const s = state.session;
  if (s) {
    fetch("/v1/auth/logout", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: s.refresh }),
    }).catch(() => {});
  }
  sessionStorage.removeItem("chat.session");
  location.reload();
}

// ---- names and presence ----

async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.users.has(id));
  await Promise.all(
    missing.map((id) =>
      api("GET", `/v1/users/${id}`)
        .then((u) => state.users.set(id, u))
        .catch(() => state.users.set(id, { id, username: "unknown", display_name: "unknown" })),
    ),
  );
}

const nameOf = (id) => (state.users.get(id) || {}).display_name || "…";
const others = (conv) => conv.members.map((m) => m.user_id).filter((id) => id !== state.session.user.id);

function convTitle(conv) {
  if (conv.kind === "group") return conv.title || "Group";
  const other = others(conv)[0];
  return other ? nameOf(other) : "Just you";
}

async function loadPresence(ids) {
  const unique = [...new Set(ids)];
  for (let i = 0; i < unique.length; i += 200) {
    const chunk = unique.slice(i, i + 200);
    if (!chunk.length) continue;
    const r = await api("GET", `/v1/presence?user_ids=${chunk.join(",")}`).catch(() => null);
    for (const p of (r && r.presence) || []) state.presence.set(p.user_id, p);
  }
}

function presenceText(uid) {
  const p = state.presence.get(uid);
  if (!p) return "";
  if (p.status === "online") return "online";
  return p.last_seen_at ? `last seen ${formatTime(p.last_seen_at)}` : "offline";
}

function formatTime(iso) {
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleString();
}

// ---- conversations ----

function entry(conv) {
  let e = state.convs.get(conv.id);
  if (!e) {
    e = { conv, messages: new Map(), hasMore: true, loaded: false, unread: conv.unread_count || 0 };
    state.convs.set(conv.id, e);
  } else {
    e.conv = { ...conv, last_message: conv.last_message || e.conv.last_message, last_seq: Math.max(conv.last_seq, e.conv.last_seq) };
  }
  return e;
}

async function loadConversations() {
  let cursor = null;
  do {
    const page = await api("GET", `/v1/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const c of page.conversations) entry(c);
    cursor = page.next_cursor;
  } while (cursor);
  const members = [...state.convs.values()].flatMap((e) => e.conv.members.map((m) => m.user_id));
  await ensureUsers(members);
  await loadPresence(members);
}

function activity(e) {
  return Date.parse((e.conv.last_message && e.conv.last_message.created_at) || e.conv.created_at);
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  const sorted = [...state.convs.values()].sort((a, b) => activity(b) - activity(a));
  for (const e of sorted) {
    const c = e.conv;
    const other = c.kind === "direct" ? others(c)[0] : null;
    const online = other && state.presence.get(other)?.status === "online";
    const last = c.last_message;
    const preview = last ? (last.body == null ? "message deleted" : `${last.sender_id === state.session.user.id ? "You: " : ""}${last.body}`) : "No messages yet";
    const label = `${convTitle(c)}${e.unread ? `, ${e.unread} unread` : ""}${other ? `, ${online ? "online" : "offline"}` : ""}`;
    list.append(
      el("li", {},
        el("button", { type: "button", "aria-current": c.id === state.current ? "true" : "false", "aria-label": label, "data-cid": c.id, onclick: () => openConversation(c.id) },
          el("span", { class: `dot ${other ? (online ? "online" : "") : "none"}`, "aria-hidden": "true" }),
          el("span", { class: "name" }, convTitle(c)),
          e.unread ? el("span", { class: "badge", "aria-hidden": "true" }, String(e.unread)) : el("span"),
          el("span", { class: "preview" }, preview),
        ),
      ),
    );
  }
}

async function openConversation(cid) {
  state.current = cid;
  $("chat-view").classList.add("in-conversation");
  $("composer").hidden = false;
  const e = state.convs.get(cid);
  if (!e.loaded) {
    const page = await api("GET", `/v1/conversations/${cid}/messages?limit=50`);
    for (const m of page.messages) e.messages.set(m.seq, m);
    e.hasMore = page.has_more;
    e.loaded = true;
    await ensureUsers(page.messages.map((m) => m.sender_id));
  }
  renderHeader();
  renderMessages(true);
  renderConversations();
  markRead();
  $("message-input").focus();
}

function renderHeader() {
  const e = state.convs.get(state.current);
  if (!e) return;
  $("title").textContent = convTitle(e.conv);
  const o = others(e.conv);
  $("subtitle").textContent = e.conv.kind === "direct" ? presenceText(o[0]) : `${e.conv.members.length} members`;
}

function seenBy(e, seq) {
  const reads = state.reads.get(e.conv.id);
  if (!reads) return [];
  return [...reads.entries()].filter(([uid, s]) => uid !== state.session.user.id && s >= seq).map(([uid]) => nameOf(uid));
}

function renderMessages(toBottom) {
  const box = $("messages");
  const e = state.convs.get(state.current);
  if (!e) return;
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const me = state.session.user.id;
  const msgs = [...e.messages.values()].sort((a, b) => a.seq - b.seq);
  const lastMine = [...msgs].reverse().find((m) => m.sender_id === me);
  box.replaceChildren();
  if (e.hasMore) box.append(el("li", { class: "muted" }, "Scroll up for older messages"));
  for (const m of msgs) {
    const mine = m.sender_id === me;
    const deleted = m.deleted_at != null;
    const li = el("li", { class: `msg${mine ? " mine" : ""}${deleted ? " deleted" : ""}`, "data-seq": m.seq, "data-id": m.id },
      el("div", { class: "meta" }, el("strong", {}, mine ? "You" : nameOf(m.sender_id)), el("time", { datetime: m.created_at }, formatTime(m.created_at)), m.edited_at && !deleted ? "(edited)" : null),
      el("div", { class: "body" }, deleted ? "message deleted" : m.body),
    );
    if (mine && !deleted && state.editing?.id === m.id) {
      // Live events re-render the list: an open edit survives them, draft and focus included.
      li.querySelector(".body").replaceWith(editForm(m));
    } else if (mine && !deleted) {
      li.append(el("div", { class: "actions" },
        el("button", { type: "button", class: "link", "aria-label": "Edit message", onclick: () => editMessage(m) }, "Edit"),
        el("button", { type: "button", class: "link", "aria-label": "Delete message", onclick: () => deleteMessage(m) }, "Delete")));
    }
    if (m === lastMine) {
      const who = seenBy(e, m.seq);
      if (who.length) li.append(el("div", { class: "seen" }, `Seen by ${who.join(", ")}`));
    }
    box.append(li);
  }
  for (const p of state.pending.values()) {
    if (p.cid === state.current) box.append(el("li", { class: "msg mine pending" }, el("div", { class: "body" }, p.body), el("div", { class: "meta" }, "sending…")));
  }
  if (toBottom || nearBottom) box.scrollTop = box.scrollHeight;
}

async function loadOlder() {
  const e = state.convs.get(state.current);
  if (!e || !e.hasMore || e.loadingOlder) return;
  const oldest = Math.min(...e.messages.keys());
  if (!Number.isFinite(oldest)) return;
  e.loadingOlder = true;
  const box = $("messages");
  const before = box.scrollHeight;
  try {
    const page = await api("GET", `/v1/conversations/${e.conv.id}/messages?limit=50&before_seq=${oldest}`);
    for (const m of page.messages) e.messages.set(m.seq, m);
    e.hasMore = page.has_more;
    await ensureUsers(page.messages.map((m) => m.sender_id));
    renderMessages(false);
    box.scrollTop = box.scrollHeight - before; // keep the reader where they were
  } finally {
    e.loadingOlder = false;
  }
}

function markRead() {
  const e = state.convs.get(state.current);
  if (!e || document.hidden) return;
  const seq = e.conv.last_seq;
  e.unread = 0;
  if (seq > 0 && seq > (e.readSent || 0)) {
    e.readSent = seq;
    if (!wsSend({ type: "read", conversation_id: e.conv.id, seq })) api("POST", `/v1/conversations/${e.conv.id}/read`, { seq }).catch(() => {});
  }
  renderConversations();
}

function editMessage(m) {
  state.editing = { id: m.id, draft: m.body, focused: true };
  renderMessages(false);
}

function editForm(m) {
  const editing = state.editing;
  const input = el("textarea", { "aria-label": "Edited message", maxlength: "4000" });
  input.value = editing.draft;
  input.addEventListener("input", () => { editing.draft = input.value; });
  input.addEventListener("focus", () => { editing.focused = true; });
  input.addEventListener("blur", () => { editing.focused = false; });
  const cancel = () => { state.editing = null; renderMessages(false); };
  const form = el("form", { class: "edit" }, input,
    el("div", { class: "row" }, el("button", { type: "submit" }, "Save"), el("button", { type: "button", class: "secondary", onclick: cancel }, "Cancel")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const updated = await api("PATCH", `/v1/conversations/${m.conversation_id}/messages/${m.id}`, { body: editing.draft }).catch((err) => alert(err.message));
    if (updated) {
      if (state.editing === editing) state.editing = null;
      applyMessage(updated);
    }
  });
  if (editing.focused) queueMicrotask(() => input.focus());
  return form;
}

async function deleteMessage(m) {
  if (!confirm("Delete this message?")) return;
  await api("DELETE", `/v1/conversations/${m.conversation_id}/messages/${m.id}`).catch((err) => alert(err.message));
}

// ---- live events ----

const frameId = () => `f${state.nextId++}`;

function wsSend(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.connected) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

function setConnection(text, status) {
  $("connection").textContent = text;
  $("connection").dataset.state = status;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  // resume=1: live messages wait until the sync below is answered, so replay and live stream join
  // without a gap or a duplicate.
  const ws = new WebSocket(`${proto}://${location.host}/v1/ws?resume=1&access_token=${encodeURIComponent(state.session.access)}`);
  state.ws = ws;
  setConnection("connecting…", "connecting");
  ws.onmessage = (ev) => onFrame(JSON.parse(ev.data));
  ws.onclose = (ev) => socketLost(ws, ev.code);
}

// The socket is gone (closed, or the network went away): show it and schedule the reconnect. Once
// per socket, whichever comes first.
function socketLost(ws, code) {
  if (state.ws !== ws || ws.lost) return;
  ws.lost = true;
  state.connected = false;
  setConnection("offline, reconnecting…", "offline");
  if (code === 4001) return logout();
  const delay = Math.min(5000, 250 * 2 ** state.retry++);
  const again = () => {
    state.reconnectTimer = null;
    if (code === 4000) refreshTokens().catch(() => {}).then(connect);
    else connect();
  };
  state.reconnectTimer = setTimeout(again, delay);
}

function sync() {
  const positions = {};
  for (const [cid, e] of state.convs) positions[cid] = e.conv.last_seq;
  state.ws.send(JSON.stringify({ type: "sync", id: "sync", positions }));
}

async function onFrame(f) {
  switch (f.type) {
    case "hello":
      state.connected = true;
      state.retry = 0;
      setConnection("", "online");
      sync();
      // Sends that were never acked go again with the same client_msg_id (no duplicates).
      for (const [id, p] of state.pending) wsSend({ type: "send", id, conversation_id: p.cid, body: p.body, client_msg_id: p.client_msg_id });
      break;
    case "sync_done":
      // Conversations this tab did not know (created while it was away) come from REST.
      if ((f.not_found || []).length || Object.values(f.truncated || {}).some(Boolean)) await reloadConversations();
      break;
    case "message":
      await applyMessage(f.message, true);
      break;
    case "message_updated":
      await applyMessage(f.message);
      break;
    case "ack":
      if (state.pending.delete(f.reply_to) && f.message) await applyMessage(f.message, true);
      break;
    case "error":
      if (state.pending.has(f.reply_to) && f.code !== "unavailable" && f.code !== "rate_limited") {
        state.pending.delete(f.reply_to);
        alert(`Not sent: ${f.message}`);
        renderMessages(false);
      }
      break;
    case "typing":
      onTyping(f);
      break;
    case "read": {
      if (!state.reads.has(f.conversation_id)) state.reads.set(f.conversation_id, new Map());
      const reads = state.reads.get(f.conversation_id);
      reads.set(f.user_id, Math.max(reads.get(f.user_id) || 0, f.seq));
      if (f.conversation_id === state.current) renderMessages(false);
      break;
    }
    case "presence":
      state.presence.set(f.user_id, { user_id: f.user_id, status: f.status, last_seen_at: f.last_seen_at });
      renderConversations();
      renderHeader();
      break;
    case "conversation":
      await onConversation(f);
      break;
  }
}

async function applyMessage(m, isNew) {
  let e = state.convs.get(m.conversation_id);
  if (!e) {
    await reloadConversations();
    e = state.convs.get(m.conversation_id);
    if (!e) return;
  }
  const known = e.messages.has(m.seq) || m.seq <= e.conv.last_seq;
  if (e.loaded || m.seq > e.conv.last_seq) e.messages.set(m.seq, m);
  if (m.seq >= e.conv.last_seq) {
    e.conv.last_seq = m.seq;
    e.conv.last_message = m;
  }
  await ensureUsers([m.sender_id]);
  const mine = m.sender_id === state.session.user.id;
  if (isNew && !known && !mine && m.deleted_at == null) {
    clearTyping(m.conversation_id, m.sender_id);
    if (m.conversation_id !== state.current || document.hidden) e.unread += 1;
  }
  if (m.conversation_id === state.current) {
    renderMessages(mine);
    markRead();
  }
  renderConversations();
}

async function reloadConversations() {
  await loadConversations();
  renderConversations();
}

async function onConversation(f) {
  const c = f.conversation;
  if (f.change === "member_removed" && !c.members.some((m) => m.user_id === state.session.user.id)) {
    state.convs.delete(c.id);
    if (state.current === c.id) {
      state.current = null;
      $("messages").replaceChildren();
      $("title").textContent = "Pick a conversation";
      $("composer").hidden = true;
    }
  } else {
    const fresh = !state.convs.has(c.id);
    const e = entry({ ...c, unread_count: 0 });
    if (fresh) e.unread = 0;
    await ensureUsers(c.members.map((m) => m.user_id));
    await loadPresence(others(c));
  }
  renderConversations();
  renderHeader();
}

function onTyping(f) {
  if (f.user_id === state.session.user.id) return;
  if (!state.typing.has(f.conversation_id)) state.typing.set(f.conversation_id, new Map());
  const t = state.typing.get(f.conversation_id);
  clearTimeout(t.get(f.user_id));
  if (f.state === "start") t.set(f.user_id, setTimeout(() => clearTyping(f.conversation_id, f.user_id), TYPING_LAPSE_MS));
  else t.delete(f.user_id);
  renderTyping();
}

function clearTyping(cid, uid) {
  const t = state.typing.get(cid);
  if (t && t.has(uid)) {
    clearTimeout(t.get(uid));
    t.delete(uid);
    renderTyping();
  }
}

function renderTyping() {
  const t = state.typing.get(state.current);
  const names = t ? [...t.keys()].map(nameOf) : [];
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

// ---- composing ----

function sendMessage(body) {
  const cid = state.current;
  const id = frameId();
  const p = { cid, body, client_msg_id: crypto.randomUUID() };
  state.pending.set(id, p);
  wsSend({ type: "send", id, conversation_id: cid, body, client_msg_id: p.client_msg_id });
  stopTyping();
  renderMessages(true);
}

function onInput() {
  const now = Date.now();
  if (now - state.typingSent > 3000) {
    state.typingSent = now;
    wsSend({ type: "typing", conversation_id: state.current, state: "start" });
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, 4000);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.typingSent) wsSend({ type: "typing", conversation_id: state.current, state: "stop" });
  state.typingSent = 0;
}

// ---- people ----

let searchTimer = null;
const picked = new Map(); // for a new group: id → user

async function search(q) {
  const list = $("search-results");
  if (!q) return list.replaceChildren();
  const r = await api("GET", `/v1/users?q=${encodeURIComponent(q)}&limit=10`).catch(() => ({ users: [] }));
  list.replaceChildren(
    ...r.users.filter((u) => u.id !== state.session.user.id).map((u) =>
      el("li", {},
        el("span", {}, `${u.display_name} `, el("span", { class: "muted" }, `@${u.username}`)),
        el("button", { type: "button", "aria-label": `Message ${u.username}`, onclick: () => startDirect(u) }, "Message"),
        el("button", { type: "button", class: "secondary", "aria-label": `Add ${u.username} to a new group`, onclick: () => pickForGroup(u) }, "+ Group"),
      ),
    ),
  );
}

async function startDirect(u) {
  state.users.set(u.id, u);
  const c = await api("POST", "/v1/conversations", { kind: "direct", members: [u.id] });
  entry(c);
  await loadPresence([u.id]);
  clearSearch();
  await openConversation(c.id);
}

function pickForGroup(u) {
  picked.set(u.id, u);
  state.users.set(u.id, u);
  $("group-form").hidden = false;
  $("group-members").textContent = `Members: ${[...picked.values()].map((x) => x.display_name).join(", ")}`;
  $("group-title").focus();
}

async function createGroup(title) {
  const c = await api("POST", "/v1/conversations", { kind: "group", title, members: [...picked.keys()] });
  picked.clear();
  $("group-form").hidden = true;
  entry(c);
  clearSearch();
  await openConversation(c.id);
}

function clearSearch() {
  $("search").value = "";
  $("search-results").replaceChildren();
}

// ---- start ----

async function start() {
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  $("me").textContent = state.session.user.display_name;
  await loadConversations();
  renderConversations();
  connect();
}

function wire() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    authenticate("/v1/auth/login");
  });
  $("register-button").addEventListener("click", () => {
    if ($("login-form").reportValidity()) authenticate("/v1/auth/register");
  });
  $("logout-button").addEventListener("click", logout);
  $("search").addEventListener("input", (ev) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(ev.target.value.trim()), 200);
  });
  $("search-form").addEventListener("submit", (ev) => ev.preventDefault());
  $("group-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    createGroup($("group-title").value.trim()).catch((err) => alert(err.message));
  });
  $("group-cancel").addEventListener("click", () => {
    picked.clear();
    $("group-form").hidden = true;
  });
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = $("message-input").value;
    if (!body.trim()) return;
    $("message-input").value = "";
    sendMessage(body);
  });
  $("message-input").addEventListener("input", onInput);
  $("message-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) loadOlder();
  });
  $("back-button").addEventListener("click", () => {
    state.current = null;
    $("chat-view").classList.remove("in-conversation");
    renderConversations();
  });
  document.addEventListener("visibilitychange", markRead);
  // The network is gone: the socket is as good as dead, so close it now rather than wait for
  // heartbeats; reconnecting (with sync) starts at once when the browser is back online.
  // A close handshake cannot finish without a network, so the socket counts as lost right away.
  window.addEventListener("offline", () => {
    const ws = state.ws;
    if (!ws) return;
    socketLost(ws, 1006);
    ws.close();
  });
  // Back online: reconnect now instead of waiting for the backoff.
  window.addEventListener("online", () => {
    if (state.reconnectTimer) {
      clearTimeout(state.reconnectTimer);
      state.reconnectTimer = null;
      connect();
    }
  });
}

wire();
const saved = sessionStorage.getItem("chat.session");
if (saved) {
  state.session = JSON.parse(saved);
  state.users.set(state.session.user.id, state.session.user);
  scheduleRefresh();
  start().catch(() => logout());
} else {
  $("login-view").hidden = false;
}
