// edgeocr web page: pick / drop / paste an image → look it up by hash → else upload → show.
// Plain browser JavaScript, no build step. The API contract is DESIGN.md §2.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";

  const el = {
    file: $("file"), zone: $("dropzone"), progress: $("progress"), status: $("status"),
    error: $("error"), errorTitle: $("error-title"), errorDetail: $("error-detail"),
    result: $("result"), meta: $("meta"), image: $("image"), overlay: $("overlay"),
    stage: $("stage"), caption: $("caption"), lines: $("lines"), copyText: $("copy-text"),
    download: $("download"), link: $("result-link"), copyLink: $("copy-link"),
  };

  // What each API error code means to a person; the server's own message is shown beneath.
  const MESSAGES = {
    unsupported_format: "That file is not an image we can read. Try a JPEG, PNG, WebP, GIF, BMP or TIFF.",
    unsupported_media_type: "That file does not look like an image. Choose a JPEG, PNG, WebP, GIF, BMP or TIFF.",
    too_large: "The image is too large. Try a smaller or more compressed image.",
    too_many_bytes: "The file is too large to upload. Try a smaller or more compressed image.",
    too_many_pixels: "The image has too many pixels. Scale it down and try again.",
    corrupt_image: "The image looks damaged or truncated and could not be decoded.",
    unreadable_image: "The image could not be decoded.",
    empty_body: "The file is empty.",
    store_unavailable: "Result storage is unavailable right now. Please try again in a moment.",
  };

  let run = 0;            // increments per chosen image; stale async work checks it and stops
  let xhr = null;         // the upload in flight, aborted when a new image is chosen
  let imageUrl = null;    // object URL of the shown image, revoked when replaced
  let downloadUrl = null; // object URL of the JSON download
  let healthz = null;     // promise of GET /healthz, fetched once

  lookupAllowed(); // fetch /healthz now, so the first image does not wait for it

  // ---- choosing an image -------------------------------------------------------------------

  el.file.addEventListener("change", () => {
    const file = el.file.files && el.file.files[0];
    el.file.value = ""; // so that choosing the same file again fires "change" again
    if (file) start(file);
  });

  // Drops are accepted anywhere on the page, so a near miss does not open the file in the tab.
  let dragDepth = 0;
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    dragDepth += 1;
    el.zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) el.zone.classList.remove("dragging");
  });
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    el.zone.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) start(file);
  });

  document.addEventListener("paste", (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
    const file = files.find((f) => f.type.startsWith("image/")) || files[0];
    if (!file) return; // pasting text into the page is not ours to handle
    e.preventDefault();
    start(file);
  });

  function hasFiles(e) {
    return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  }

  // ---- the flow ----------------------------------------------------------------------------

  async function start(file) {
    const mine = ++run;
    if (xhr) xhr.abort();
    hideError();
    showImage(file);
    try {
      // Hash lookup first: a stored result costs one small GET and no upload at all.
      if (await lookupAllowed()) {
        setState("hashing", "Checking for a stored result…");
        const digest = await sha256Hex(file);
        if (mine !== run) return;
        const stored = await lookup(digest);
        if (mine !== run) return;
        if (stored) {
          show(stored, file, { lookedUp: true });
          return;
        }
      }
      const answer = await upload(file, mine);
      if (mine !== run) return;
      show(answer, file, { lookedUp: false });
    } catch (err) {
      if (mine !== run || err.name === "AbortError") return;
      fail(err);
    }
  }

  // In HMAC mode the key is not the SHA-256 of the file, so the browser cannot derive it.
  // crypto.subtle exists only in secure contexts (https, localhost, 127.0.0.1).
  async function lookupAllowed() {
    if (!(window.crypto && crypto.subtle)) return false;
    if (!healthz) {
      healthz = fetch("/healthz", { cache: "no-store" })
        .then((r) => (r.ok ? r.json() : {}))
        .catch(() => ({}));
    }
    const health = await healthz;
    return health.hmac === false;
  }

  async function sha256Hex(file) {
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // A 200 is the stored result; anything else (404, an outage, no network) means "upload".
  async function lookup(digest) {
    try {
      const r = await fetch(`/ocr/${digest}`, { headers: { Accept: "application/json" } });
      return r.ok ? await r.json() : null;
    } catch {
      return null;
    }
  }

  // XMLHttpRequest rather than fetch: fetch reports no upload progress.
  function upload(file, mine) {
    return new Promise((resolve, reject) => {
      const req = new XMLHttpRequest();
      xhr = req;
      req.open("POST", "/ocr");
      req.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      req.responseType = "text";
      setState("uploading", "Uploading… 0%");
      setProgress(0);
      req.upload.onprogress = (e) => {
        if (mine !== run || !e.lengthComputable) return;
        const pct = Math.round((e.loaded / e.total) * 100);
        setProgress(pct);
        el.status.textContent = `Uploading… ${pct}%`;
      };
      req.upload.onload = () => {
        if (mine === run) setState("recognising", "Recognising text…"); // indeterminate
      };
      req.onload = () => {
        if (xhr === req) xhr = null;
        let body = null;
        try {
          body = JSON.parse(req.responseText);
        } catch {
          // not JSON: handled below by the status code
        }
        if (req.status === 200 && body && Array.isArray(body.lines)) resolve(body);
        else reject(apiError(req.status, body));
      };
      req.onerror = () => {
        if (xhr === req) xhr = null;
        reject(Object.assign(new Error("network"), { code: "network" }));
      };
      req.onabort = () => reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      req.send(file);
    });
  }

  function apiError(status, body) {
    const err = new Error((body && body.error && body.error.message) || `HTTP ${status}`);
    err.status = status;
    err.code = (body && body.error && body.error.code) || (status >= 500 ? "server" : "http");
    return err;
  }

  // ---- showing state -----------------------------------------------------------------------

  // data-state on <body> drives the CSS and lets tests wait for a stage.
  function setState(state, message) {
    document.body.dataset.state = state;
    el.zone.setAttribute("aria-busy", String(state === "uploading" || state === "recognising"
                                             || state === "hashing"));
    if (message !== undefined) el.status.textContent = message;
    if (state === "uploading") {
      el.progress.hidden = false;
    } else if (state === "recognising" || state === "hashing") {
      el.progress.hidden = false;
      el.progress.removeAttribute("value"); // no value = indeterminate
    } else {
      el.progress.hidden = true;
    }
  }

  function setProgress(pct) {
    el.progress.value = pct;
  }

  function fail(err) {
    let title;
    if (err.code === "network") {
      title = "Could not reach the service. Check your connection and try again.";
    } else if (MESSAGES[err.code]) {
      title = MESSAGES[err.code];
    } else if (err.status >= 500) {
      title = `The service had a problem (HTTP ${err.status}). Please try again in a moment.`;
    } else {
      title = "The image could not be recognised.";
    }
    el.errorTitle.textContent = title;
    // The server's own words help when the mapping above is too general.
    el.errorDetail.textContent = err.code === "network" ? "" : err.message;
    el.errorDetail.hidden = !el.errorDetail.textContent;
    el.error.dataset.code = err.code || "";
    el.error.hidden = false;
    el.result.hidden = true;
    setState("error", "");
  }

  function hideError() {
    el.error.hidden = true;
    el.error.dataset.code = "";
  }

  function showImage(file) {
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = URL.createObjectURL(file);
    el.stage.classList.remove("no-preview");
    el.image.src = imageUrl;
  }

  // Browsers cannot show every format we read (TIFF): keep the boxes, drop the picture.
  el.image.addEventListener("error", () => {
    if (el.image.getAttribute("src")) el.stage.classList.add("no-preview");
  });

  function show(res, file, { lookedUp }) {
    const { width, height } = res.image;
    const lines = res.lines || [];

    // The stage keeps the image's aspect ratio; the SVG's viewBox is the image's own pixel
    // grid, so the boxes (image pixel coordinates) scale with whatever size it is shown at.
    el.stage.style.setProperty("--ar", String(width / height));
    el.overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    el.overlay.replaceChildren(...lines.map((line, i) => box(line, i)));
    el.lines.replaceChildren(...lines.map((line, i) => row(line, i)));
    if (lines.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No text found in this image.";
      el.lines.append(li);
    }
    el.image.alt = lines.length
      ? `The uploaded image, ${file.name || "pasted"}, with ${lines.length} text lines outlined`
      : `The uploaded image, ${file.name || "pasted"}`;
    el.caption.textContent = `${file.name || "Pasted image"} · ${width}×${height} ${res.image.format}`;

    el.meta.replaceChildren(...metaParts(res, lookedUp));
    setDownload(res);
    if (res.result_url) {
      el.link.href = res.result_url;
      el.link.textContent = res.result_url;
      el.copyLink.hidden = false;
    } else {
      el.link.removeAttribute("href");
      el.link.textContent = "not stored (storage was unavailable)";
      el.copyLink.hidden = true;
    }
    el.copyText.dataset.text = res.text || "";

    el.result.hidden = false;
    const n = lines.length;
    setState("done", `${n} line${n === 1 ? "" : "s"} recognised${lookedUp ? " (stored result, nothing uploaded)" : ""}.`);
  }

  function box(line, i) {
    const poly = document.createElementNS(SVG_NS, "polygon");
    poly.setAttribute("points", line.box.map(([x, y]) => `${x},${y}`).join(" "));
    poly.dataset.line = String(i);
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = line.text;
    poly.append(title);
    return poly;
  }

  function row(line, i) {
    const li = document.createElement("li");
    li.dataset.line = String(i);
    li.tabIndex = i === 0 ? 0 : -1; // roving tabindex: the list is one Tab stop, arrows move
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    const conf = document.createElement("span");
    conf.className = "conf";
    const pct = (line.confidence * 100).toFixed(1);
    conf.textContent = `${pct}%`;
    conf.title = "confidence";
    conf.setAttribute("aria-label", `confidence ${pct} percent`);
    if (line.confidence < 0.8) li.classList.add("low");
    li.append(text, conf);
    return li;
  }

  function metaParts(res, lookedUp) {
    const parts = [];
    const add = (label, value) => {
      const span = document.createElement("span");
      span.className = "meta-item";
      span.textContent = `${label}: ${value}`;
      parts.push(span);
    };
    add("cached", String(Boolean(res.cached)));
    if (lookedUp) add("source", "lookup by hash, not uploaded");
    const t = res.timings_ms || {};
    if (t.total !== undefined) {
      add("total", `${Math.round(t.total)} ms`);
      const rest = Object.entries(t).filter(([k]) => k !== "total");
      if (rest.length) {
        const details = document.createElement("details");
        details.className = "timings";
        const summary = document.createElement("summary");
        summary.textContent = "timings";
        const list = document.createElement("dl");
        for (const [k, v] of rest) {
          const dt = document.createElement("dt");
          dt.textContent = k;
          const dd = document.createElement("dd");
          dd.textContent = `${Math.round(v)} ms`;
          list.append(dt, dd);
        }
        details.append(summary, list);
        parts.push(details);
      }
    }
    return parts;
  }

  function setDownload(res) {
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    const json = JSON.stringify(res, null, 2);
    downloadUrl = URL.createObjectURL(new Blob([json], { type: "application/json" }));
    el.download.href = downloadUrl;
    el.download.download = `edgeocr-${String(res.hash).slice(0, 12)}.json`;
  }

  // ---- linking lines and boxes -------------------------------------------------------------

  function highlight(i, on) {
    const sel = `[data-line="${i}"]`;
    for (const node of [el.overlay.querySelector(sel), el.lines.querySelector(sel)]) {
      if (node) node.classList.toggle("highlight", on);
    }
  }

  function lineIndex(e) {
    const node = e.target.closest && e.target.closest("[data-line]");
    return node ? node.dataset.line : null;
  }

  // Delegated handlers: mouseover/mouseout and focusin/focusout bubble, so one listener serves
  // every line and every box however many there are.
  for (const container of [el.lines, el.overlay]) {
    container.addEventListener("mouseover", (e) => {
      const i = lineIndex(e);
      if (i === null) return;
      highlight(i, true);
      if (container === el.overlay) revealRow(i);
    });
    container.addEventListener("mouseout", (e) => {
      const i = lineIndex(e);
      if (i !== null && !isFocusedRow(i)) highlight(i, false); // focus keeps its highlight
    });
  }
  el.lines.addEventListener("focusin", (e) => {
    const i = lineIndex(e);
    if (i !== null) highlight(i, true);
  });
  el.lines.addEventListener("focusout", (e) => {
    const i = lineIndex(e);
    if (i !== null) highlight(i, false);
  });

  function isFocusedRow(i) {
    const active = document.activeElement;
    return Boolean(active && el.lines.contains(active) && active.dataset.line === String(i));
  }

  // Clicking a box moves focus to its line (and so scrolls it into view).
  el.overlay.addEventListener("click", (e) => {
    const i = lineIndex(e);
    if (i !== null) focusRow(el.lines.querySelector(`li[data-line="${i}"]`));
  });

  el.lines.addEventListener("keydown", (e) => {
    const rows = Array.from(el.lines.querySelectorAll("li[data-line]"));
    const at = rows.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    focusRow(rows[Math.max(0, Math.min(rows.length - 1, to))]);
  });

  function focusRow(li) {
    if (!li) return;
    for (const other of el.lines.querySelectorAll("li[tabindex='0']")) other.tabIndex = -1;
    li.tabIndex = 0;
    li.focus();
  }

  // Hovering a box scrolls its row into view inside the list, never the page itself.
  function revealRow(i) {
    const li = el.lines.querySelector(`li[data-line="${i}"]`);
    const list = el.lines;
    if (!li || list.scrollHeight <= list.clientHeight) return;
    const top = li.offsetTop - list.offsetTop;
    if (top < list.scrollTop) list.scrollTop = top;
    else if (top + li.offsetHeight > list.scrollTop + list.clientHeight) {
      list.scrollTop = top + li.offsetHeight - list.clientHeight;
    }
  }

  // ---- copy buttons ------------------------------------------------------------------------

  el.copyText.addEventListener("click", () => copy(el.copyText.dataset.text || "", "Text copied."));
  el.copyLink.addEventListener("click", () => copy(el.link.href, "Link copied."));

  async function copy(text, done) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch {
      ok = legacyCopy(text); // no clipboard API (insecure context) or permission refused
    }
    el.status.textContent = ok ? done : "Copying failed: select the text and copy it by hand.";
  }

  function legacyCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
})();
