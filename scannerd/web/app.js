// The diagnostic page: a monitor of the daemon over its WebSocket (codes arrive masked).
// No framework, no build step, nothing loaded from elsewhere; text is set with textContent only.
"use strict";

const TOKEN_KEY = "scannerd.token";
const MAX_ROWS = 200;
const COLOURS = {
  wechat: "#07c160", alipay: "#1677ff", unionpay: "#d7000f", ecny: "#b8860b", bestpay: "#0099e5",
  jdpay: "#e1251b", emv: "#6b21a8", nhsa: "#0e7490", medical_insurance: "#0e7490", health_card: "#15803d",
  id_number: "#475569", ean13: "#64748b", vat_invoice: "#9a3412", unknown: "#6b7280",
};
const $ = (id) => document.getElementById(id);
const state = { ws: null, commands: [], channels: {}, timer: null, authFailed: false };

function colour(channel) {
  if (COLOURS[channel]) return COLOURS[channel];
  let h = 0;
  for (const c of channel) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 60% 40%)`;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function setState(text, cls) {
  $("state").textContent = text;
  $("state").className = `pill ${cls}`;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function showLogin(error) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error || "";
  $("token").focus();
}

function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { showLogin(); return; }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws = ws;
  state.authFailed = false;
  setState("connecting…", "off");
  ws.onmessage = (e) => handle(JSON.parse(e.data), token);
  ws.onclose = () => {
    clearInterval(state.timer);
    if (state.ws !== ws) return;
    if (state.authFailed) return;
    setState("disconnected — retrying", "bad");
    setTimeout(connect, 2000);
  };
}

function handle(msg, token) {
  if (msg.type === "hello") {
    state.commands = msg.commands || [];
    $("host").textContent = `${msg.host} · v${msg.version} · protocol ${msg.protocol}`;
    send({ cmd: "auth", token });
  } else if (msg.type === "reply") {
    reply(msg);
  } else if (msg.type === "scan") {
    addScan(msg);
  } else if (msg.type === "reject") {
    addReject(msg);
  } else if (msg.type === "device") {
    send({ cmd: "status" });
  }
}

function reply(msg) {
  if (msg.cmd === "auth") {
    if (!msg.ok) {
      state.authFailed = true;
      if (/bad token/.test(msg.error)) sessionStorage.removeItem(TOKEN_KEY);
      setState("refused", "bad");
      showLogin(msg.error);
      return;
    }
    $("login").hidden = true;
    $("main").hidden = false;
    $("inject-panel").hidden = !state.commands.includes("inject");
    setState("connected", "on");
    send({ cmd: "subscribe", role: "monitor" });
    send({ cmd: "status" });
    state.timer = setInterval(() => send({ cmd: "status" }), 1000);
  } else if (msg.cmd === "status" && msg.ok) {
    renderStatus(msg);
  } else if (msg.cmd === "inject") {
    $("inject-result").textContent = msg.ok ? `sent ${msg.event.masked || msg.event.reason}` : msg.error;
    $("inject-code").value = testCode();
  } else if (!msg.ok) {
    setState(`error: ${msg.error}`, "bad");
  }
}

function renderStatus(s) {
  // Today's counts (kept by the daemon across restarts) when it reports them.
  const today = s.today || { scans: s.scans_today, rejects: null, devices: {} };
  $("today-date").textContent = today.date ? `(${today.date})` : "";
  $("scans-today").textContent = today.scans;
  $("rejects-today").textContent = today.rejects == null ? "–" : today.rejects;
  const body = $("devices").tBodies[0];
  body.replaceChildren();
  const select = $("inject-device");
  const chosen = select.value;
  select.replaceChildren();
  for (const d of s.devices) {
    const row = body.insertRow();
    row.dataset.device = d.name;
    cell(row, d.name);
    cell(row, d.transport);
    cell(row, d.present ? "present" : "absent", d.present ? "present" : "absent");
    cell(row, d.area);
    cell(row, d.role);
    const armed = (s.armed || {})[d.name];
    cell(row, !armed ? "—" : armed.armed ? (armed.remaining_s == null ? "armed" : `armed, ${armed.remaining_s} s left`) : "disarmed");
    const counts = (today.devices || {})[d.name];
    cell(row, counts ? `${counts.scans} scan${counts.scans === 1 ? "" : "s"}` : "—");
    cell(row, d.last_scan_s_ago == null ? "—" : `${d.last_scan_s_ago} s ago`);
    const option = document.createElement("option");
    option.value = option.textContent = d.name;
    select.append(option);
  }
  if (chosen) select.value = chosen;
}

function addRow(cls) {
  const body = $("scans").tBodies[0];
  const row = body.insertRow(0);
  row.className = cls;
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  return row;
}

function addScan(e) {
  const row = addRow("scan fresh");
  row.dataset.id = e.id;
  cell(row, new Date(e.ts).toLocaleTimeString());
  cell(row, e.device);
  const badge = document.createElement("span");
  badge.className = "channel";
  badge.style.background = colour(e.channel);
  badge.textContent = e.channel;
  row.insertCell().append(badge);
  cell(row, e.kind);
  cell(row, e.masked, "code");
  cell(row, `${e.latency.scan_ms} ms`);
  cell(row, e.latency.pipeline_us == null ? "" : `${e.latency.pipeline_us} µs`);
  state.channels[e.channel] = (state.channels[e.channel] || 0) + 1;
  renderCounts();
}

function addReject(e) {
  const row = addRow("reject fresh");
  cell(row, new Date(e.ts).toLocaleTimeString());
  cell(row, e.device);
  cell(row, "reject");
  cell(row, e.reason);
  cell(row, e.masked, "code");
  cell(row, "");
  cell(row, "");
}

function renderCounts() {
  const list = $("channel-counts");
  list.replaceChildren();
  for (const [channel, n] of Object.entries(state.channels).sort()) {
    const item = document.createElement("li");
    item.className = "channel";
    item.style.background = colour(channel);
    item.textContent = `${channel}: ${n}`;
    list.append(item);
  }
}

// Shaped like a WeChat payment code, but positions 11–12 are "13" so it is no one's ID number.
function testCode() {
  let digits = "1" + Math.floor(Math.random() * 5);
  while (digits.length < 18) digits += Math.floor(Math.random() * 10);
  return digits.slice(0, 10) + "13" + digits.slice(12);
}

window.addEventListener("DOMContentLoaded", () => {
  $("inject-code").value = testCode();
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    connect();
  });
  $("inject").addEventListener("submit", (e) => {
    e.preventDefault();
    send({ cmd: "inject", device: $("inject-device").value, code: $("inject-code").value.trim() });
  });
  connect();
});
