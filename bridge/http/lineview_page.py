"""The line view's page: HTML, CSS and JavaScript in one string, no build step (lineview.py)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>linebridge</title>
<style>
  /* High-performance HMI (ISA-101): neutral greys; colour only for what is abnormal; a state is
     told by text and a shape as well as by colour. */
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem; color: #1a1a1a; background: #e4e4e4; }
  #layout { display: grid; grid-template-columns: minmax(0, 1fr); gap: 0 1.2rem; }
  @media (min-width: 1200px) {
    #layout { grid-template-columns: minmax(0, 1fr) 22rem; }
    #order-panel { grid-column: 2; grid-row: 1; }
  }
  h2 { font-size: 1rem; margin: 1rem 0 .3rem; }
  h1 { font-size: 1.2rem; margin: 0 0 .2rem; }
  #status { color: #666; font-size: .85rem; margin-bottom: .8rem; }
  /* The whole line in view: narrower than the line, it wraps instead of hiding a station. */
  #line { display: flex; flex-wrap: wrap; gap: .6rem; align-items: stretch; padding-bottom: .5rem; }
  @media (max-width: 700px) { #line { flex-direction: column; flex-wrap: nowrap; } #line .station { width: auto; }
    .arrow { transform: rotate(90deg); } }
  .step { display: flex; flex-direction: column; gap: .4rem; justify-content: center; }
  .station { border: 2px solid #a8a8a8; border-radius: 6px; padding: .4rem .6rem; width: 9.5rem;
             background: #f0f0f0; min-height: 10.5rem; box-sizing: border-box; }
  .station[data-state=offline], .station[data-state=error] { border-color: #c00000; border-width: 3px; }
  .station[data-state=offline] .state, .station[data-state=error] .state { color: #c00000; font-weight: 700; }
  .station .name { font-weight: 600; }
  .station .state { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
  .station .telemetry { font-size: .8rem; color: #333; }
  .station .tag.stale { color: #888; font-style: italic; }
  .station .tag .unit { color: #666; }
  .station .tag .quality { font-size: .7rem; margin-left: .2rem; }
  .station .trend { vertical-align: middle; }
  .arrow { align-self: center; color: #aaa; }
  .table-wrap { max-width: 100%; overflow-x: auto; }
  table { border-collapse: collapse; margin-top: 1rem; font-size: .85rem; }
  th, td { border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
  td.cell { text-align: center; }
  td.cell.closed { color: #555; } td.cell.running { font-weight: 700; } td.cell.failed { color: #c00000; font-weight: 700; }
  form { margin-top: 1rem; display: grid; grid-template-columns: max-content minmax(0, 16rem); gap: .3rem .6rem; align-items: center; }
  form input, form select { max-width: 100%; box-sizing: border-box; }
  form .hint { grid-column: 2; font-size: .75rem; color: #666; margin-top: -.2rem; }
  #refusal { color: #c00000; grid-column: 1 / 3; } #refusing { color: #c00000; font-weight: 600; overflow-wrap: anywhere; }
  #accepted { grid-column: 1 / 3; }
  #order-panel form { margin-top: 0; }
  /* The alarm banner: the one place with strong colour, by priority, with a shape and a word too. */
  #alarms:empty { display: none; }
  #alarms { margin: 0 0 .8rem; }
  .alarm { display: grid; grid-template-columns: 7.5rem minmax(0, 1fr) auto; gap: .1rem .6rem;
           align-items: center; background: #fff; border-left: 8px solid #c00000; padding: .3rem .5rem;
           margin-bottom: .25rem; }
  .alarm[data-priority=medium] { border-left-color: #e08000; }
  .alarm[data-priority=low] { border-left-color: #1f5fbf; }
  .alarm[data-active=false] { background: #f0f0f0; }
  .alarm .priority { font-weight: 700; font-size: .8rem; }
  .alarm .what { overflow-wrap: anywhere; }
  .alarm .meta { grid-column: 2; font-size: .75rem; color: #555; overflow-wrap: anywhere; }
  .alarm .answer { grid-column: 3; grid-row: 1 / 3; display: flex; gap: .3rem; flex-wrap: wrap; }
  .alarm .answer input { width: 10rem; max-width: 40vw; }
  @media (max-width: 700px) { .alarm { grid-template-columns: minmax(0, 1fr); }
    .alarm .meta, .alarm .answer { grid-column: 1; grid-row: auto; } }
  #out-of-service:empty { display: none; }
  #out-of-service { margin: -.4rem 0 .8rem; font-size: .8rem; color: #444; overflow-wrap: anywhere; }
  #out-of-service button { font-size: .75rem; padding: 0 .3rem; }
  .station .tag[role=button] { cursor: pointer; }
  #trend-panel { background: #f0f0f0; border: 1px solid #a8a8a8; border-radius: 6px; padding: .4rem .6rem;
                 margin-top: .8rem; max-width: 44rem; }
  #trend-panel h2 { margin-top: 0; }
  #trend-chart { width: 100%; height: auto; display: block; background: #fff; }
  #trend-chart text { font: 11px system-ui, sans-serif; fill: #444; }
  #trend-chart .grid { stroke: #ddd; } #trend-chart .axis { stroke: #888; }
  #trend-chart .value { fill: none; stroke: #1a1a1a; stroke-width: 1.5; }
  .trend-controls { font-size: .85rem; margin-bottom: .3rem; display: flex; gap: .6rem; align-items: center; flex-wrap: wrap; }
  .station .alarmed { font-size: .8rem; font-weight: 700; color: #c00000; white-space: nowrap;
                      overflow: hidden; text-overflow: ellipsis; max-width: 12rem; }
</style>
</head>
<body>
<h1 id="title">linebridge</h1>
<div id="status">connecting…</div>
<div id="alarms" role="alert" aria-live="assertive"></div>
<div id="out-of-service"></div>
<div id="layout">
<main>
<div id="line"></div>
<section id="trend-panel" hidden>
<h2 id="trend-title">trend</h2>
<div class="trend-controls">
<label>last <select id="trend-minutes"><option value="5">5 min</option><option value="10" selected>10 min</option>
<option value="30">30 min</option><option value="60">60 min</option></select></label>
<span id="trend-source"></span>
<button type="button" id="trend-close">close</button>
</div>
<svg id="trend-chart" viewBox="0 0 640 220" role="img" aria-label="trend"></svg>
</section>
<h2>Orders</h2>
<div class="table-wrap"><table id="orders"><thead></thead><tbody></tbody></table></div>
</main>
<aside id="order-panel">
<h2>New order</h2>
<div id="refusing" role="status"></div>
<form id="order-form"></form>
</aside>
</div>
<script>
"use strict";
let snapshot = null, formBuilt = false, alarmsShown = "", outShown = "", trendOf = null;
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

function drawLine(s) {
  const line = document.getElementById("line");
  line.replaceChildren();
  s.route.forEach((benches, i) => {
    if (i) line.append(el("div", {class: "arrow"}, "→"));
    const step = el("div", {class: "step"});
    for (const name of benches) {
      const st = s.stations[name] || {};
      const box = el("div", {class: "station", "data-station": name, "data-state": st.state || ""});
      const shape = {idle: "○", busy: "▶", done: "■", offline: "✕", error: "!"}[st.state] || "?";
      box.append(el("div", {class: "name"}, name), el("div", {class: "state"}, shape + " " + (st.state || "unknown")));
      // every row always there, so a box keeps its height when an order comes or goes
      box.append(el("div", {class: "order"}, "order " + (st.current_order || "—")));
      box.append(el("div", {class: "cycles"}, (st.cycle_count == null ? "—" : st.cycle_count) + " cycles"));
      const alarms = st.alarms || [];  // the row is always there (a blank one): the box keeps its size
      box.append(el("div", {class: "alarmed"}, alarms.length ? "▲ alarm: " + alarms.join(", ") : "\u00a0"));
      const tel = el("div", {class: "telemetry"});
      // values as last read: stale (with their age) once the PLC stopped answering
      const age = st.read_at == null ? null : Math.max(0, Date.now() / 1000 - st.read_at);
      const stale = !st.connected && st.read_at != null;
      for (const [k, v] of Object.entries(st.telemetry || {})) {
        const row = el("div", {class: "tag" + (stale ? " stale" : ""), "data-tag": k, "data-quality": stale ? "stale" : "good"},
                       k + " " + (v == null ? "—" : (typeof v === "number" ? shown(v, (st.precision || {})[k]) : v)) + " ");
        if (typeof v === "number") {  // a number opens its trend
          row.setAttribute("role", "button"); row.setAttribute("tabindex", "0");
          row.onclick = () => openTrend(name, k);
        }
        const unit = (st.units || {})[k];
        if (unit) row.append(el("span", {class: "unit"}, unit + " "));
        if (stale) row.append(el("span", {class: "quality"}, "stale, " + Math.round(age) + " s"));
        const points = (st.trends || {})[k];
        if (points && points.length > 1) row.append(sparkline(points, (st.ranges || {})[k] || []));
        tel.append(row);
      }
      box.append(tel);
      step.append(box);
    }
    line.append(step);
  });
}

// a number with the mapping's precision (digits after the point) where it gives one
const shown = (v, digits) => digits == null ? String(+v.toFixed(2)) : v.toFixed(digits);

function sparkline(points, range) {
  // scaled to the mapping's range when it has one: noise stays small, as it is
  const w = 60, h = 14;
  const lo = range[0] ?? Math.min(...points), hi = range[1] ?? Math.max(...points), span = hi - lo || 1;
  const y = p => (h - 1 - (Math.min(hi, Math.max(lo, p)) - lo) * (h - 2) / span).toFixed(1);
  const xy = points.map((p, i) => (i * w / (points.length - 1)).toFixed(1) + "," + y(p));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "trend");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", xy.join(" ")); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#1f77b4");
  svg.append(line);
  return svg;
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function openTrend(station, field) {
  trendOf = {station, field};
  document.getElementById("trend-panel").hidden = false;
  await drawTrend();
}

async function drawTrend() {
  if (!trendOf) return;
  const minutes = document.getElementById("trend-minutes").value;
  const reply = await fetch("/api/trends/" + encodeURIComponent(trendOf.station) + "/" + encodeURIComponent(trendOf.field) + "?minutes=" + minutes);
  if (!reply.ok) return;
  const t = await reply.json();
  const values = t.points.map(p => p[1]).filter(v => v != null);
  const lo = t.min ?? Math.min(...values), hi = t.max ?? Math.max(...values), span = hi - lo || 1;
  const W = 640, H = 220, L = 64, R = 10, T = 10, B = 26;
  const x = at => L + (at - t.from) * (W - L - R) / (t.to - t.from);
  const y = v => T + (hi - Math.min(hi, Math.max(lo, v))) * (H - T - B) / span;
  const chart = document.getElementById("trend-chart");
  chart.replaceChildren();
  for (let i = 0; i <= 4; i++) {  // the value axis: the mapping's range, in the field's unit
    const v = lo + i * span / 4;
    chart.append(svgEl("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
    chart.append(svgEl("text", {class: "y-label", x: L - 4, y: y(v) + 4, "text-anchor": "end"}, +v.toFixed(2) + " " + t.unit));
  }
  const step = Math.max(1, Math.ceil(minutes / 5));  // the time axis: minutes before now
  for (let m = 0; m <= minutes; m += step) {
    const at = t.to - m * 60;
    chart.append(svgEl("line", {class: "grid", x1: x(at), x2: x(at), y1: T, y2: H - B}));
    chart.append(svgEl("text", {class: "x-label", x: x(at), y: H - 8, "text-anchor": m ? "middle" : "end"}, m ? "-" + m + " min" : "now"));
  }
  chart.append(svgEl("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}));
  const xy = t.points.filter(p => p[1] != null).map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1));
  chart.append(svgEl("polyline", {class: "value", points: xy.join(" ")}));
  const last = values.length ? " · now " + +values[values.length - 1].toFixed(2) + " " + t.unit : "";
  document.getElementById("trend-title").textContent = t.station + " · " + t.field + last;
  document.getElementById("trend-source").textContent = t.points.length + " values from " + (t.source === "history" ? "the history store" : "memory");
  chart.dataset.points = String(t.points.length);
}

document.getElementById("trend-minutes").onchange = drawTrend;
document.getElementById("trend-close").onclick = () => { trendOf = null; document.getElementById("trend-panel").hidden = true; };
setInterval(drawTrend, 2000);

function drawOrders(s) {
  const head = document.querySelector("#orders thead"), body = document.querySelector("#orders tbody");
  const columns = s.route.map(b => b.join(" | "));
  head.replaceChildren(el("tr"));
  for (const h of ["order", "product", "state", "units", ...columns, "", ""]) head.firstChild.append(el("th", {}, h));
  body.replaceChildren();
  for (const o of s.orders) {
    for (let unit = 0; unit < o.quantity; unit++) {
      const row = el("tr", {"data-order": o.order_id, "data-unit": unit});
      row.append(el("td", {}, unit ? "" : o.order_id), el("td", {}, unit ? "" : o.product));
      row.append(el("td", {class: "order-state"}, unit ? "" : o.state), el("td", {}, unit ? "" : o.units_done + "/" + o.quantity));
      s.route.forEach((benches, i) => {
        const step = o.steps.filter(x => x.unit === unit && x.route_index === i).pop();
        let cls = "cell", text = "·", title = "";
        if (step) {
          if (step.phase !== "closed") { cls += " running"; text = "▶ " + step.station; }
          else if (step.result_code) { cls += " failed"; text = "✗ " + step.result_code; }
          else { cls += " closed"; text = "✓"; }
          title = "parameters " + JSON.stringify(step.parameters) + "\\nresults " + JSON.stringify(step.results);
        }
        row.append(el("td", {class: cls, title}, text));
      });
      const why = o.fault_station ? "faulted at " + o.fault_station + " (" + o.result_code + ")" : o.waiting_for;
      row.append(el("td", {class: "why"}, unit ? "" : why));
      const act = el("td");
      if (!unit && !["completed", "faulted", "cancelled"].includes(o.state)) {
        const b = el("button", {type: "button", "data-cancel": o.order_id}, "cancel");
        b.onclick = () => fetch("/api/orders/" + encodeURIComponent(o.order_id) + "/cancel", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
        act.append(b);
      }
      row.append(act);
      body.append(row);
    }
  }
}

function buildForm(s) {
  const form = document.getElementById("order-form");
  const product = el("select", {name: "product", id: "product"});
  for (const p of Object.keys(s.products)) product.append(el("option", {value: p}, p));
  const fields = el("div", {style: "display: contents"});
  const draw = () => {
    fields.replaceChildren();
    for (const [name, o] of Object.entries(s.products[product.value].options)) {
      fields.append(el("label", {for: "opt-" + name}, name));
      let input;
      if (o.type === "enum") {
        input = el("select", {id: "opt-" + name, name});
        for (const v of o.values) input.append(el("option", {value: JSON.stringify(v)}, String(v)));
        if (o.default !== undefined) input.value = JSON.stringify(o.default);
      } else if (o.type === "bool") {
        input = el("input", {id: "opt-" + name, name, type: "checkbox"});
        input.checked = !!o.default;
      } else {
        input = el("input", {id: "opt-" + name, name, type: o.type === "string" ? "text" : "number"});
        if (o.type === "number") input.step = "any";
        if (o.default !== undefined) input.value = o.default;
      }
      input.dataset.kind = o.type;
      fields.append(input);
      const bounds = [o.min !== undefined ? "min " + o.min : "", o.max !== undefined ? "max " + o.max : "",
                      o.max_length !== undefined ? "up to " + o.max_length + " characters" : "",
                      o.default !== undefined && o.default !== "" ? "default " + o.default : ""].filter(Boolean).join(", ");
      fields.append(el("div", {class: "hint"}, [o.description, bounds].filter(Boolean).join(" — ")));
    }
  };
  product.onchange = draw;
  form.append(el("label", {for: "order-id"}, "order id"), el("input", {id: "order-id", name: "order_id", required: ""}));
  form.append(el("label", {for: "product"}, "product"), product);
  form.append(el("label", {for: "quantity"}, "quantity"), el("input", {id: "quantity", name: "quantity", type: "number", value: "1", min: "1"}));
  form.append(el("label", {for: "priority"}, "priority"), el("input", {id: "priority", name: "priority", type: "number", value: "0", step: "1"}));
  form.append(el("div", {class: "hint"}, "higher goes first"));
  form.append(fields);
  form.append(el("span"), el("button", {type: "submit", id: "submit"}, "submit"));
  form.append(el("div", {id: "refusal"}), el("div", {id: "accepted"}));
  draw();
  form.onsubmit = async (event) => {
    event.preventDefault();
    const options = {};
    for (const input of fields.querySelectorAll("input, select")) {
      const kind = input.dataset.kind;
      if (kind === "enum") options[input.name] = JSON.parse(input.value);
      else if (kind === "bool") options[input.name] = input.checked;
      else if (kind === "integer" || kind === "number") options[input.name] = input.value === "" ? null : Number(input.value);
      else options[input.name] = input.value;
    }
    const body = {order_id: form.order_id.value, product: product.value, quantity: Number(form.quantity.value),
                  priority: Number(form.priority.value), options};
    const reply = await fetch("/api/orders", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await reply.json();
    document.getElementById("refusal").textContent = reply.ok ? "" : "refused: " + answer.reason;
    document.getElementById("accepted").textContent = reply.ok ? "accepted " + answer.order_id : "";
  };
}

function drawAlarms(s) {
  const text = JSON.stringify(s.alarms);
  if (text === alarmsShown) return;  // redrawn only when they change: a comment being typed stays
  alarmsShown = text;
  const banner = document.getElementById("alarms");
  banner.replaceChildren();
  for (const a of s.alarms) {
    const priority = a.severity >= 700 ? "high" : a.severity >= 400 ? "medium" : "low";
    const shape = {high: "▲", medium: "◆", low: "●"}[priority];
    const row = el("div", {class: "alarm", "data-alarm": a.id, "data-priority": priority, "data-active": String(a.active)});
    row.append(el("span", {class: "priority"}, shape + " " + priority.toUpperCase() + " " + a.severity));
    row.append(el("span", {class: "what"}, a.message));
    const answered = a.acked ? (a.confirmed ? "confirmed" : "acknowledged") + " by " + a.user + (a.comment ? ": " + a.comment : "") : "unacknowledged";
    const meta = el("span", {class: "meta"}, (a.active ? "active" : "back to normal") + " · " + answered + " · since " + new Date(a.since * 1000).toLocaleTimeString());
    row.append(meta);
    const action = !a.acked ? "ack" : !a.confirmed ? "confirm" : null;
    if (action) {
      const answer = el("span", {class: "answer"});
      const comment = el("input", {class: "comment", placeholder: "comment", "aria-label": "comment", maxlength: "256"});
      const button = el("button", {type: "button", "data-action": action}, action === "ack" ? "acknowledge" : "confirm");
      button.onclick = async () => {
        const reply = await fetch("/api/alarms/" + encodeURIComponent(a.id) + "/" + action,
          {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({comment: comment.value})});
        if (!reply.ok) meta.textContent = "refused: " + (await reply.json()).reason;
      };
      answer.append(comment, button);
      row.append(answer);
    }
    banner.append(row);
  }
}

function drawOutOfService(s) {
  const text = JSON.stringify(s.out_of_service || []);
  if (text === outShown) return;  // redrawn only when it changes: a button stays under the pointer
  outShown = text;
  const line = document.getElementById("out-of-service");
  const items = (s.out_of_service || []).map((a) => {
    const how = !a.enabled ? "disabled"
      : a.shelving === "OneShotShelved" ? "shelved until it returns to normal"
      : "shelved until " + new Date(a.until * 1000).toLocaleTimeString();
    const item = el("span", {"data-alarm": a.id}, a.id + " " + how + (a.user ? " by " + a.user : "") + (a.active ? " (active)" : "") + " ");
    const action = a.enabled ? "unshelve" : "enable";
    const button = el("button", {type: "button", "data-action": action}, action);
    button.onclick = async () => {
      const reply = await fetch("/api/alarms/" + encodeURIComponent(a.id) + "/" + action,
        {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
      if (!reply.ok) item.append(" refused: " + (await reply.json()).reason);
    };
    item.append(button);
    return item;
  });
  line.replaceChildren();
  if (!items.length) return;
  line.append("Out of service, not in the banner: ");
  items.forEach((item, i) => line.append(...(i ? ["; ", item] : [item])));
}

function show(s) {
  snapshot = s;
  drawAlarms(s);
  drawOutOfService(s);
  document.getElementById("title").textContent = s.line + (s.description ? " — " + s.description : "");
  drawLine(s);
  drawOrders(s);
  if (!formBuilt) { buildForm(s); formBuilt = true; }
  document.getElementById("refusing").textContent = s.refusing ? "✕ new orders are refused: " + s.refusing : "";
  document.getElementById("status").textContent = "live · updated " + new Date().toLocaleTimeString();
  document.body.dataset.ready = "yes";
}

const source = new EventSource("/api/events");
source.onmessage = (m) => show(JSON.parse(m.data));
source.onerror = () => { document.getElementById("status").textContent = "reconnecting…"; };
</script>
</body>
</html>
"""
