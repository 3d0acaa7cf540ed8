// es-metric search page: upload or drop an image, add text, filters and facets; mark results
// "more like this" / "not like this" (relevance feedback); the bar above the results shows what
// the search is built from, and each part can be removed. Click a result to search like it.
const $ = (id) => document.getElementById(id);
const state = { file: null, like: [], unlike: [], filters: [] };
let lastIndex = "";

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function searchDone() {  // a count of finished searches (the page tests wait on it)
  document.body.dataset.searches = String(Number(document.body.dataset.searches || 0) + 1);
}

function headers() {
  const key = $("apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setFile(f) {
  state.file = f;
  $("preview").src = f ? URL.createObjectURL(f) : "";
  $("drop-text").textContent = f ? f.name : "Drop an image here or click to choose one";
  renderParts();
}

const drop = $("drop");
drop.addEventListener("click", () => $("image").click());
$("image").addEventListener("change", (e) => setFile(e.target.files[0] || null));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
});

function typedFilters() {
  return $("filters").value.split(",").map((s) => s.trim()).filter(Boolean);
}

function formData() {
  const fd = new FormData();
  if (state.file) fd.append("image", state.file);
  state.like.forEach((id) => fd.append("like", id));
  state.unlike.forEach((id) => fd.append("unlike", id));
  const text = $("text").value.trim();
  if (text) fd.append("text", text);
  [...typedFilters(), ...state.filters].forEach((f) => fd.append("filters", f));
  $("facets").value.split(",").map((s) => s.trim()).filter(Boolean).forEach((f) => fd.append("facets", f));
  fd.append("k", $("k").value || "12");
  fd.append("fusion", $("fusion").value);
  const collapse = $("collapse").value.trim();
  if (collapse) fd.append("collapse", collapse);
  if ($("diversify").value) fd.append("diversify", $("diversify").value);
  if ($("explain").checked) fd.append("explain", "true");
  return fd;
}

async function search() {
  lastIndex = encodeURIComponent($("index").value.trim());
  renderParts();
  showStatus("searching…");
  let resp;
  try {
    resp = await fetch(`/api/indices/${lastIndex}/search`, { method: "POST", body: formData(), headers: headers() });
  } catch (err) {
    showStatus(`network error: ${err}`, true);
    return;
  }
  const body = await resp.json();
  if (!resp.ok) {
    showStatus(`${body.error || body.detail || resp.statusText}${body.hint ? " — " + body.hint : ""}`, true);
  } else {
    render(body);
  }
  searchDone();
}

async function loadImage(img, url) {
  // fetched with the key (an <img src> cannot send X-API-Key); the API answers every photo
  // from this origin, and a redirect is refused, so the key never follows one to another host
  try {
    const resp = await fetch(url, { headers: headers(), redirect: "error" });
    if (resp.ok) img.src = URL.createObjectURL(await resp.blob());
  } catch (err) { /* the card keeps its grey box */ }
}

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function feedback(id, list, other) {
  state[other] = state[other].filter((x) => x !== id);
  if (!state[list].includes(id)) state[list].push(id);
  search();
}

function render(body) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of body.hits) {
    const card = document.createElement("div");
    card.className = "hit";
    card.dataset.id = hit.id;
    const img = document.createElement("img");
    const photo = hit.matched_image ? `?photo=${hit.matched_image.offset}` : "";  // the photo that matched
    img.alt = hit.id;
    loadImage(img, `/api/indices/${lastIndex}/image/${encodeURIComponent(hit.id)}${photo}`);
    const title = hit.source.title || hit.source.product || hit.source.label || hit.id;
    const meta = document.createElement("div");
    meta.innerHTML = `<span class="score"></span> <span class="title"></span>`;
    meta.querySelector(".score").textContent = hit.score.toFixed(3);
    meta.querySelector(".title").textContent = title;
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(button("more like this", "more", () => feedback(hit.id, "like", "unlike")),
                   button("not like this", "less", () => feedback(hit.id, "unlike", "like")));
    card.append(img, meta, actions);
    if (hit.explain) card.append(explanation(hit.explain));
    card.addEventListener("click", () => {  // start over from this result alone
      setFile(null); state.like = [hit.id]; state.unlike = []; search();
    });
    grid.append(card);
  }
  renderFacets(body.facets || {});
  const what = state.like.length && !state.file && state.like.length === 1 ? `more like ${state.like[0]}` : "results";
  showStatus(`${body.hits.length} ${what} in ${body.took_ms} ms (model ${body.model_id})` +
             (body.note ? ` — ${body.note}` : ""));
}

const num = (x) => (x === null || x === undefined ? "–" : Number(x).toPrecision(3));

function explanation(why) {
  // each leg: its raw score and rank -> normalised x weight; then MMR's relevance and redundancy
  const box = document.createElement("div");
  box.className = "explain";
  for (const [name, leg] of Object.entries(why.legs)) {
    const line = document.createElement("div");
    line.className = `leg ${name}`;
    const rank = leg.rank ? ` #${leg.rank}` : " (not returned)";
    const norm = leg.normalised === null ? "" : ` → ${num(leg.normalised)} × ${leg.weight}`;
    line.textContent = `${name} ${num(leg.score)}${rank}${norm}`;
    box.append(line);
  }
  if (why.adaptive) {
    const line = document.createElement("div");
    line.className = "leg adaptive";
    const a = why.adaptive;
    line.textContent = `legs agree ${num(a.agreement)}: text weight ${num(a.text_weight)} (asked ${num(a.text_weight_asked)})`;
    box.append(line);
  }
  if (why.mmr) {
    const line = document.createElement("div");
    line.className = "leg mmr";
    line.textContent = `variety: relevance ${num(why.mmr.relevance)}, like above ${num(why.mmr.redundancy)}`;
    box.append(line);
  }
  return box;
}

function renderFacets(facets) {
  const box = $("facet-list");
  box.replaceChildren();
  for (const [field, rows] of Object.entries(facets)) {
    const group = document.createElement("div");
    group.className = "facet";
    const name = document.createElement("strong");
    name.textContent = field;
    group.append(name);
    for (const row of rows) {
      const value = row.other ? "other" : typeof row.value === "object" ? `${row.value.from}–${row.value.to}` : String(row.value);
      const b = button(`${value} (${row.count})`, row.other ? "facet-value other" : "facet-value", () => {
        if (!row.filter) return;
        if (!state.filters.includes(row.filter)) state.filters.push(row.filter);
        search();
      });
      if (row.filter) b.dataset.filter = row.filter;
      group.append(b);
    }
    box.append(group);
  }
}

function chip(label, kind, onRemove) {
  const c = document.createElement("span");
  c.className = `part ${kind}`;
  c.textContent = label;
  c.append(button("×", "remove", () => { onRemove(); renderParts(); search(); }));
  return c;
}

function renderParts() {
  const bar = $("parts");
  bar.replaceChildren();
  if (state.file) bar.append(chip(`image: ${state.file.name}`, "image", () => setFile(null)));
  state.like.forEach((id) => bar.append(chip(`like: ${id}`, "like", () => { state.like = state.like.filter((x) => x !== id); })));
  state.unlike.forEach((id) => bar.append(chip(`not like: ${id}`, "unlike", () => { state.unlike = state.unlike.filter((x) => x !== id); })));
  const text = $("text").value.trim();
  if (text) bar.append(chip(`text: ${text}`, "text", () => { $("text").value = ""; }));
  typedFilters().forEach((f) => bar.append(chip(`filter: ${f}`, "filter", () => {
    $("filters").value = typedFilters().filter((x) => x !== f).join(", ");
  })));
  state.filters.forEach((f) => bar.append(chip(`filter: ${f}`, "filter", () => { state.filters = state.filters.filter((x) => x !== f); })));
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
