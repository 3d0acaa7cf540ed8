// es-metric search page: upload or drop an image, add text and filters, see a grid of results;
// click a result to search "more like this".
const $ = (id) => document.getElementById(id);
let file = null;

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function setFile(f) {
  file = f;
  $("preview").src = f ? URL.createObjectURL(f) : "";
  $("drop-text").textContent = f ? f.name : "Drop an image here or click to choose one";
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

function formData(like) {
  const fd = new FormData();
  if (like) fd.append("like", like); else if (file) fd.append("image", file);
  const text = $("text").value.trim();
  if (text) fd.append("text", text);
  $("filters").value.split(",").map((s) => s.trim()).filter(Boolean).forEach((f) => fd.append("filters", f));
  fd.append("k", $("k").value || "12");
  fd.append("fusion", $("fusion").value);
  return fd;
}

async function search(like = null) {
  const index = encodeURIComponent($("index").value.trim());
  showStatus("searching…");
  let resp;
  try {
    resp = await fetch(`/api/indices/${index}/search`, { method: "POST", body: formData(like) });
  } catch (err) {
    showStatus(`network error: ${err}`, true);
    return;
  }
  const body = await resp.json();
  if (!resp.ok) {
    showStatus(`${body.error || body.detail || resp.statusText}${body.hint ? " — " + body.hint : ""}`, true);
    return;
  }
  render(index, body, like);
}

function render(index, body, like) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of body.hits) {
    const card = document.createElement("div");
    card.className = "hit";
    card.dataset.id = hit.id;
    const img = document.createElement("img");
    const photo = hit.matched_image ? `?photo=${hit.matched_image.offset}` : "";  // the photo that matched
    img.src = `/api/indices/${index}/image/${encodeURIComponent(hit.id)}${photo}`;
    img.alt = hit.id;
    const title = hit.source.title || hit.source.product || hit.source.label || hit.id;
    const meta = document.createElement("div");
    meta.innerHTML = `<span class="score"></span> <span class="title"></span>`;
    meta.querySelector(".score").textContent = hit.score.toFixed(3);
    meta.querySelector(".title").textContent = title;
    card.append(img, meta);
    card.addEventListener("click", () => search(hit.id));
    grid.append(card);
  }
  const what = like ? `more like ${like}` : "results";
  showStatus(`${body.hits.length} ${what} in ${body.took_ms} ms (model ${body.model_id})` +
             (body.note ? ` — ${body.note}` : ""));
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
