// searchmm's web page: plain JS over the JSON API (no build step, nothing loaded from elsewhere).
"use strict";

const PAGE_SIZE = 24;
const $ = (id) => document.getElementById(id);

// What the results on screen answer: {kind: "text"|"image"|"similar", q, file, itemId, label}.
let current = null;
let offset = 0;
let maxUploadBytes = Infinity;
let detailHit = null; // the result the detail view shows

function target() {
  return document.querySelector('input[name="target"]:checked').value;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function baseName(path) {
  return (path || "").split(/[\\/]/).pop();
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// A server with a token answers 401 until the page has traded the token for a cookie (which
// <img> requests carry too): ask once, then go on with the request that was refused.
let tokenAsked = null;

function askForToken() {
  if (tokenAsked) return tokenAsked;
  tokenAsked = new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const response = await fetch("/api/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: $("token-input").value }),
      });
      if (response.ok) {
        dialog.close();
        resolve();
      } else {
        $("token-error").textContent = "That is not this server's token.";
        $("token-error").hidden = false;
      }
    });
    dialog.showModal();
  });
  return tokenAsked;
}

async function api(url, options, retried = false) {
  const response = await fetch(url, options);
  if (response.status === 401 && !retried) {
    await askForToken();
    return api(url, options, true);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// The filter bar, as POST /api/query takes it; null when no filter is set.
function filters() {
  const value = (id) => $(id).value.trim();
  const number = (id) => (value(id) ? Number(value(id)) : null);
  const where = value("filter-where")
    .split(",")
    .map((pair) => pair.trim())
    .filter((pair) => pair.includes("="))
    .map((pair) => [pair.slice(0, pair.indexOf("=")).trim(), pair.slice(pair.indexOf("=") + 1)]);
  const chosen = {
    path_glob: value("filter-path") || null,
    modified_after: value("filter-after") || null,
    modified_before: value("filter-before") || null,
    min_width: number("filter-min-width"),
    min_height: number("filter-min-height"),
    where,
  };
  const active = Object.values(chosen).some((v) => (Array.isArray(v) ? v.length : v !== null));
  return active ? chosen : null;
}

function searchRequest(query, from) {
  const chosen = query.kind === "image" ? null : filters();
  if (chosen) {
    // Filtered searches go the way `searchmm query` does: one JSON query with its terms.
    const term =
      query.kind === "text"
        ? { scheme: "text", value: query.q }
        : { scheme: "item", value: String(query.itemId) };
    const body = { terms: [term], target: target(), k: PAGE_SIZE, offset: from, filters: chosen };
    const headers = { "Content-Type": "application/json" };
    return ["/api/query", { method: "POST", headers, body: JSON.stringify(body) }];
  }
  const params = new URLSearchParams({ target: target(), k: PAGE_SIZE, offset: from });
  if (query.kind === "text") {
    params.set("q", query.q);
    return [`/api/search?${params}`, undefined];
  }
  if (query.kind === "similar") {
    return [`/api/items/${query.itemId}/similar?${params}`, undefined];
  }
  const form = new FormData();
  form.append("file", query.file, query.file.name || "query-image");
  return [`/api/search/image?${params}`, { method: "POST", body: form }];
}

async function run(query, append = false) {
  current = query;
  offset = append ? offset : 0;
  showError("");
  $("status").textContent = `Searching ${target()} ${query.label}…`;
  const preview = $("query-image");
  if (query.kind !== "image") preview.hidden = true;
  const [url, options] = searchRequest(query, offset);
  try {
    const page = await api(url, options);
    if (current !== query) return; // a newer search started meanwhile
    render(page.hits, append);
    offset += page.hits.length;
    const shown = $("results").children.length;
    $("status").textContent = `${shown} ${target()} ${query.label}`;
    $("load-more").hidden = !page.has_more || page.hits.length === 0;
  } catch (err) {
    if (current !== query) return;
    if (!append) render([], false);
    $("status").textContent = "";
    $("load-more").hidden = true;
    showError(err.message);
  }
}

function render(hits, append) {
  const list = $("results");
  if (!append) list.replaceChildren();
  for (const hit of hits) list.append(hit.kind === "image" ? imageCard(hit) : textCard(hit));
}

function moreLikeThisButton(hit) {
  const button = el("button", {
    type: "button",
    class: "more-like-this",
    text: "More like this",
    "data-id": String(hit.id),
  });
  button.setAttribute("aria-label", `More like result ${hit.rank}`);
  button.addEventListener("click", () => moreLikeThis(hit));
  return button;
}

function imageCard(hit) {
  const name = baseName(hit.path);
  const img = el("img", { class: "thumb", src: hit.thumbnail_url, alt: name, decoding: "async" });
  const open = el("button", { type: "button", class: "open" }, [img]);
  open.setAttribute("aria-label", `Open ${name}`);
  open.addEventListener("click", () => openDetail(hit));
  const caption = el("div", { class: "caption" }, [
    el("span", { class: "name", text: `${hit.rank}. ${name}`, title: hit.path }),
    el("span", { class: "score", text: hit.score.toFixed(3), title: "cosine similarity" }),
  ]);
  return el("li", { class: "result image-result", "data-id": String(hit.id) }, [
    open,
    caption,
    moreLikeThisButton(hit),
  ]);
}

function textCard(hit) {
  const text = el("blockquote", { class: "text", text: hit.text, tabIndex: 0 });
  text.addEventListener("click", () => openDetail(hit));
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter") openDetail(hit);
  });
  const where = `${baseName(hit.source)}${hit.locator ? ` · ${hit.locator}` : ""}`;
  const caption = el("div", { class: "caption" }, [
    el("span", { class: "source", text: `${hit.rank}. ${where}`, title: hit.source }),
    el("span", { class: "score", text: hit.score.toFixed(3), title: "cosine similarity" }),
  ]);
  return el("li", { class: "result text-card", "data-id": String(hit.id) }, [
    text,
    caption,
    moreLikeThisButton(hit),
  ]);
}

function metaRows(item, hit) {
  const rows = [["id", item.id]];
  if (hit) rows.push(["score", hit.score.toFixed(4)], ["rank", hit.rank]);
  if (item.kind === "image") {
    rows.push(["path", item.path], ["size", `${item.width} × ${item.height}`]);
  } else {
    rows.push(["source", item.source], ["locator", item.locator]);
  }
  for (const [key, value] of Object.entries(item.metadata || {})) {
    rows.push([key, typeof value === "object" ? JSON.stringify(value) : value]);
  }
  return rows;
}

async function openDetail(hit) {
  const dialog = $("detail");
  detailHit = hit;
  let item = hit;
  try {
    item = await api(`/api/items/${hit.id}`);
  } catch (err) {
    showError(err.message);
    return;
  }
  $("detail-title").textContent = item.kind === "image" ? baseName(item.path) : `Text ${item.id}`;
  const image = $("detail-image");
  image.hidden = item.kind !== "image";
  if (item.kind === "image") {
    image.src = item.image_url;
    image.alt = baseName(item.path);
  } else {
    image.removeAttribute("src");
  }
  const text = $("detail-text");
  text.hidden = item.kind !== "text";
  text.textContent = item.kind === "text" ? item.text : "";
  const meta = $("detail-meta");
  meta.replaceChildren();
  for (const [key, value] of metaRows(item, hit)) {
    meta.append(el("dt", { text: key }), el("dd", { text: String(value ?? "") }));
  }
  if (!dialog.open) dialog.showModal();
}

function shortName(hit) {
  if (hit.kind === "image") return baseName(hit.path);
  return hit.text.length > 40 ? `“${hit.text.slice(0, 40)}…”` : `“${hit.text}”`;
}

function moreLikeThis(hit) {
  const dialog = $("detail");
  if (dialog.open) dialog.close();
  run({ kind: "similar", itemId: hit.id, label: `like ${shortName(hit)} (#${hit.id})` });
}

function searchByImage(file) {
  if (!file) return;
  if (file.size > maxUploadBytes) {
    showError(`${file.name} is larger than the server's limit of ${maxUploadBytes / 1e6} MB`);
    return;
  }
  const preview = $("query-image");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  run({ kind: "image", file, label: `like ${file.name || "the dropped image"}` });
}

function setUpDragAndDrop() {
  const zone = $("dropzone");
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
  // The whole page takes a dropped image; without this the browser would open the file.
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (e) => {
    if (e.target === document.documentElement || e.target === zone) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    zone.classList.remove("dragging");
    searchByImage(e.dataTransfer.files[0]);
  });
}

function init() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("query").value.trim();
    if (q) run({ kind: "text", q, label: `for “${q}”` });
  });
  for (const radio of document.querySelectorAll('input[name="target"]')) {
    radio.addEventListener("change", () => current && run(current));
  }
  $("upload").addEventListener("change", (e) => {
    searchByImage(e.target.files[0]);
    e.target.value = ""; // choosing the same file again still searches
  });
  $("load-more").addEventListener("click", () => current && run(current, true));
  $("filter-form").addEventListener("change", () => current && run(current));
  $("filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (current) run(current);
  });
  $("filter-form").addEventListener("reset", () => setTimeout(() => current && run(current)));
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail-more").addEventListener("click", () => moreLikeThis(detailHit));
  $("query-image").addEventListener("error", (e) => {
    e.target.hidden = true; // not an image after all: the server's error says why
  });
  setUpDragAndDrop();
  api("/api/health")
    .then((health) => {
      maxUploadBytes = health.max_upload_bytes;
      const counts = Object.entries(health.items)
        .map(([kind, n]) => `${n} ${kind}s`)
        .join(", ");
      if (!current) $("status").textContent = health.indexed ? `Index: ${counts}` : "No index yet";
    })
    .catch((err) => showError(err.message));
}

init();
