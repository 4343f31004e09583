// edgeocr web page: pick / drop / paste an image or a document → look it up by hash → else
// send it (POST /ocr, or POST /uploads + PUT when it is over the synchronous limit) → follow
// its progress → show it page by page. Plain browser JavaScript, no build step. The API
// contract is DESIGN.md §2 (result schema edgeocr.result/2).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const HISTORY_KEY = "edgeocr.history";
  const HISTORY_MAX = 20;

  const el = {
    file: $("file"), zone: $("dropzone"), progress: $("progress"), status: $("status"),
    error: $("error"), errorTitle: $("error-title"), errorDetail: $("error-detail"),
    result: $("result"), resultHeading: $("result-heading"), meta: $("meta"),
    image: $("image"), overlay: $("overlay"), stage: $("stage"), caption: $("caption"),
    pages: $("pages"), thumbs: $("thumbs"), linesHeading: $("lines-heading"),
    lines: $("lines"), copyText: $("copy-text"), download: $("download"),
    link: $("result-link"), copyLink: $("copy-link"),
    history: $("history"), historyList: $("history-list"), clearHistory: $("clear-history"),
  };

  const FORMATS = "a JPEG, PNG, WebP, GIF, BMP, TIFF or PDF";
  // What each API error code means to a person; the server's own message is shown beneath.
  const MESSAGES = {
    unsupported_format: `That file is not an image or document we can read. Try ${FORMATS}.`,
    unsupported_media_type: `That file does not look like an image or a PDF. Choose ${FORMATS}.`,
    too_large: "The file is too large. Try a smaller or more compressed one.",
    too_many_bytes: "The file is too large to upload. Try a smaller or more compressed one.",
    too_many_pixels: "The image has too many pixels. Scale it down and try again.",
    too_many_pages: "The document has too many pages. Split it and try again.",
    corrupt_image: "The image looks damaged or truncated and could not be decoded.",
    unreadable_image: "The image could not be decoded.",
    unreadable_document: "The document looks damaged and could not be opened.",
    encrypted_document: "The document is password-protected. Remove the password and try again.",
    checksum_mismatch: "The upload arrived damaged (its checksum did not match). Please try again.",
    invalid_upload_token: "The upload link expired. Please choose the file again.",
    processing_failed: "Reading the document failed repeatedly. Please try again later.",
    not_found: "That result is no longer available.",
    empty_body: "The file is empty.",
    store_unavailable: "Result storage is unavailable right now. Please try again in a moment.",
    insecure_context: "Large files need a secure (https) connection to be fingerprinted in the browser.",
  };
  // Headers a page may not set itself; the browser sends them from the body.
  const FORBIDDEN_HEADERS = new Set(["content-length", "host", "connection"]);

  let run = 0;            // increments per chosen file; stale async work checks it and stops
  let xhr = null;         // the transfer in flight, aborted when a new file is chosen
  let previewUrl = null;  // object URL of the chosen image, revoked when replaced
  let downloadUrl = null; // object URL of the JSON download
  let healthz = null;     // promise of the config (in the page, else /config.json)
  let view = null;        // what is shown: { res, name, preview, page }

  health(); // read the config now, so the first file does not wait for it
  renderHistory();

  // ---- choosing a file ---------------------------------------------------------------------

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
    const files = Array.from(e.dataTransfer.files);
    const file = files.find((f) => readable(contentType(f))) || files[0];
    if (file) start(file);
  });

  document.addEventListener("paste", (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
    const file = files.find((f) => readable(contentType(f))) || files[0];
    if (!file) return; // pasting text into the page is not ours to handle
    e.preventDefault();
    start(file);
  });

  function hasFiles(e) {
    return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  }

  // The type to declare: the browser's, else one guessed from the name (some systems give
  // TIFF and PDF no type), else octet-stream and the server goes by the magic bytes.
  function contentType(file) {
    if (file.type) return file.type.toLowerCase();
    const ext = (/\.([a-z0-9]+)$/i.exec(file.name || "") || [])[1];
    return { pdf: "application/pdf", tif: "image/tiff", tiff: "image/tiff" }[
      (ext || "").toLowerCase()] || "application/octet-stream";
  }

  function readable(type) {
    return type.startsWith("image/") || type === "application/pdf"
      || type === "application/octet-stream";
  }

  function isDocumentType(type) {
    return type === "application/pdf" || type === "image/tiff";
  }

  // ---- the flow ----------------------------------------------------------------------------

  async function start(file) {
    const mine = ++run;
    cancelTransfer();
    hideError();
    const name = file.name || "pasted file";
    const type = contentType(file);
    setState("starting", `Preparing ${name}…`); // at once: the last result is no longer current
    try {
      if (!readable(type)) {
        throw Object.assign(new Error(`${name} is ${type}`), { code: "unsupported_media_type" });
      }
      setPreview(type.startsWith("image/") && !isDocumentType(type) ? file : null);
      const limits = await health();
      if (mine !== run) return;
      const big = Number.isFinite(limits.max_bytes) && file.size > limits.max_bytes;
      const { res, how } = big
        ? await viaUploads(file, type, limits, mine)
        : await viaOcr(file, type, limits, mine);
      if (mine !== run) return;
      show(res, { name, preview: previewUrl, how });
    } catch (err) {
      if (mine !== run || err.name === "AbortError") return;
      fail(err);
    }
  }

  // What the page needs to find a stored result on the CDN (pipeline id, CDN base, HMAC
  // mode, limits) comes inside the page itself, which the edge caches: no request for it.
  function health() {
    if (!healthz) {
      let config = null;
      try {
        const el = document.getElementById("edgeocr-config");
        config = el ? JSON.parse(el.textContent) : null;
      } catch {
        config = null;
      }
      healthz = config ? Promise.resolve(config)
        : fetch("/config.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
    }
    return healthz;
  }

  // In HMAC mode the key is not the SHA-256 of the file, so the browser cannot derive it.
  // crypto.subtle exists only in secure contexts (https, localhost, 127.0.0.1).
  function canHash() {
    return Boolean(window.crypto && crypto.subtle);
  }

  // Small files: a stored result costs one small GET and no upload at all; else POST /ocr.
  async function viaOcr(file, type, limits, mine) {
    if (limits.hmac === false && canHash()) {
      setState("hashing", "Checking for a stored result…");
      const digest = await sha256Hex(file);
      checkRun(mine);
      const found = await lookup(digest, limits);
      checkRun(mine);
      if (found && found.status === 200) return { res: found.body, how: "lookup" };
      if (found && found.status === 202) {
        return { res: await poll(found.body.status_url || `/ocr/${digest}`, found, mine),
                 how: "lookup" };
      }
    }
    const sent = await transfer({
      method: "POST", url: "/ocr", headers: { "Content-Type": type }, body: file, mine,
      label: "Uploading",
    });
    checkRun(mine);
    if (sent.status === 200 && sent.body && Array.isArray(sent.body.pages)) {
      return { res: sent.body, how: "uploaded" };
    }
    if (sent.status === 202 && sent.body) {
      return { res: await poll(sent.body.status_url, sent, mine), how: "uploaded" };
    }
    const err = apiError(sent.status, sent.body);
    // The health check failed or the limit changed: the large-file route still works.
    if (err.code === "too_many_bytes" && sent.status === 413 && canHash()) {
      return viaUploads(file, type, limits, mine);
    }
    throw err;
  }

  // Large files: declare the SHA-256, upload only when nobody has read this file yet.
  async function viaUploads(file, type, limits, mine) {
    if (!canHash()) throw Object.assign(new Error("crypto.subtle is unavailable"),
                                        { code: "insecure_context" });
    setState("hashing", "Fingerprinting the file…");
    const digest = await sha256Hex(file);
    checkRun(mine);
    if (limits.hmac === false) {
      const found = await lookup(digest, limits);
      checkRun(mine);
      if (found && found.status === 200) return { res: found.body, how: "lookup" };
    }
    const asked = await getJson("/uploads", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ sha256: digest, bytes: file.size, content_type: type }),
    });
    checkRun(mine);
    const body = asked.body;
    if (asked.status === 200 && body && Array.isArray(body.pages)) {
      return { res: body, how: "already-read" };
    }
    if (asked.status === 202 && body) {
      return { res: await poll(body.status_url || `/ocr/${digest}`, asked, mine),
               how: "already-read" };
    }
    if (asked.status !== 201 || !body || !body.upload) throw apiError(asked.status, body);
    const { upload } = body;
    const put = await transfer({
      method: upload.method || "PUT", url: upload.url, headers: upload.headers || {},
      body: file, mine, label: "Uploading",
    });
    checkRun(mine);
    if (put.status < 200 || put.status >= 300) throw apiError(put.status, put.body);
    setState("reading", "Uploaded. Waiting for the reader…");
    return { res: await poll(body.status_url, null, mine), how: "uploaded" };
  }

  async function sha256Hex(file) {
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The stored result straight from the CDN (results/{pipeline}/{sha256}.json: S3 behind
  // CloudFront, no Lambda); a 403/404 there (cached for a second) or an outage: send it.
  async function lookup(digest, limits) {
    const url = limits && limits.pipeline
      ? `${limits.cdn_base || ""}/results/${limits.pipeline}/${digest}.json` : `/ocr/${digest}`;
    try {
      const r = await getJson(url, { headers: { Accept: "application/json" } });
      if (r.status === 200 && r.body && Array.isArray(r.body.pages)) {
        r.body = { cached: true, stored: true, ...r.body };  // the stored object, as read
      }
      return r.status === 200 || r.status === 202 ? r : null;
    } catch {
      return null;
    }
  }

  async function getJson(url, init) {
    let r;
    try {
      r = await fetch(url, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw Object.assign(new Error("network"), { code: "network" });
    }
    let body = null;
    try {
      body = await r.json();
    } catch {
      // not JSON: the status code says what happened
    }
    return { status: r.status, body: located(body, r.url), headers: r.headers };
  }

  // A result too large for one response is a 303 to its result_url, which fetch and XHR
  // follow: the object there is the stored one, without result_url, so take it from there.
  function located(body, url) {
    if (!body || !Array.isArray(body.pages) || body.result_url !== undefined) return body;
    return /\.json(\?|$)/.test(url || "") ? { ...body, result_url: url } : body;
  }

  // Follow a document being read: 202 {status, pages_done, pages} with Retry-After until a
  // 200 (the result; a 303 to the CDN is followed by fetch), or a final 4xx error. Network
  // blips and 5xx are retried a few times, since the server retries those itself.
  async function poll(statusUrl, first, mine) {
    let answer = first;
    let failures = 0;
    for (;;) {
      if (answer && answer.body) showProgress(answer.body);
      const wait = answer && answer.headers ? retryAfter(answer.headers) : 0;
      if (answer) await sleep(wait || 1000);
      checkRun(mine);
      try {
        answer = await getJson(statusUrl, { cache: "no-store", headers: { Accept: "application/json" } });
      } catch (err) {
        if (err.code !== "network" || ++failures > 5) throw err;
        answer = { status: 0, body: null };
        await sleep(1000 * failures);
        continue;
      }
      checkRun(mine);
      if (answer.status === 200 && answer.body && Array.isArray(answer.body.pages)) {
        return answer.body;
      }
      if (answer.status === 202 && answer.body) {
        failures = 0;
        continue;
      }
      if ((answer.status >= 500 || answer.status === 0) && ++failures <= 5) continue;
      throw apiError(answer.status, answer.body);
    }
  }

  function retryAfter(headers) {
    const s = Number(headers.get && headers.get("Retry-After"));
    return Number.isFinite(s) && s > 0 ? Math.min(s, 10) * 1000 : 0;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function checkRun(mine) {
    if (mine !== run) throw Object.assign(new Error("superseded"), { name: "AbortError" });
  }

  function showProgress(status) {
    const n = Number(status.pages);
    const done = Math.max(0, Number(status.pages_done) || 0);
    if (!n) {
      setState("reading", "Waiting for the reader…");
      return;
    }
    const k = Math.min(done + 1, n);
    const waiting = status.status === "queued" ? " (queued)" : "";
    setState("reading", `Reading… page ${k} of ${n}${waiting}`);
    el.progress.max = n;
    el.progress.value = Math.min(done, n);
  }

  // XMLHttpRequest rather than fetch: fetch reports no upload progress.
  function transfer({ method, url, headers, body, mine, label }) {
    return new Promise((resolve, reject) => {
      const req = new XMLHttpRequest();
      xhr = req;
      req.open(method, url);
      for (const [name, value] of Object.entries(headers)) {
        if (!FORBIDDEN_HEADERS.has(name.toLowerCase())) req.setRequestHeader(name, value);
      }
      req.responseType = "text";
      setState("uploading", `${label}… 0%`);
      el.progress.max = 100;
      el.progress.value = 0;
      req.upload.onprogress = (e) => {
        if (mine !== run || !e.lengthComputable) return;
        const pct = Math.round((e.loaded / e.total) * 100);
        el.progress.value = pct;
        el.status.textContent = `${label}… ${pct}%`;
      };
      req.upload.onload = () => {
        if (mine === run && url === "/ocr") setState("recognising", "Reading text…");
      };
      req.onload = () => {
        if (xhr === req) xhr = null;
        let parsed = null;
        try {
          parsed = JSON.parse(req.responseText);
        } catch {
          // not JSON (S3 answers XML): the status code says what happened
        }
        resolve({ status: req.status, body: located(parsed, req.responseURL),
                  headers: { get: (h) => req.getResponseHeader(h) } });
      };
      req.onerror = () => {
        if (xhr === req) xhr = null;
        reject(Object.assign(new Error("network"), { code: "network" }));
      };
      req.onabort = () => reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      req.send(body);
    });
  }

  function cancelTransfer() {
    if (xhr) xhr.abort();
    xhr = null;
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
    const busy = ["starting", "hashing", "uploading", "recognising", "reading", "loading"]
      .includes(state);
    el.zone.setAttribute("aria-busy", String(busy));
    if (message !== undefined) el.status.textContent = message;
    if (state === "uploading") {
      el.progress.hidden = false;
    } else if (busy) {
      el.progress.hidden = false;
      el.progress.removeAttribute("value"); // no value = indeterminate (reading sets one)
    } else {
      el.progress.hidden = true;
    }
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
      title = "The file could not be read.";
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

  function setPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = file ? URL.createObjectURL(file) : null;
  }

  // ---- the result --------------------------------------------------------------------------

  // The stored object holds keys; API answers add absolute URLs. A result read straight from
  // its result_url (history, a 303) has none, so build them beside the result's own URL.
  function normalise(res, url) {
    const resultUrl = res.result_url !== undefined ? res.result_url : url || null;
    const base = resultUrl ? resultUrl.replace(/results\/[^/]+\/[^/]+\.json(\?.*)?$/, "") : null;
    let pages = res.pages;
    if (!Array.isArray(pages)) { // edgeocr.result/1: one image, lines at the top
      const img = res.image || {};
      pages = [{ page: 1, width: img.width, height: img.height, rotation: 0, source: "ocr",
                 thumbnail: null, text: res.text || "", lines: res.lines || [] }];
    }
    pages = pages.map((p) => ({
      ...p,
      lines: p.lines || [],
      thumbnail_url: p.thumbnail_url !== undefined ? p.thumbnail_url
        : (p.thumbnail && base ? base + p.thumbnail : null),
    }));
    const document_ = res.document || { format: (res.image || {}).format, pages: pages.length };
    return { ...res, result_url: resultUrl, pages, document: document_ };
  }

  function show(raw, { name, preview, how }) {
    const res = normalise(raw);
    const pages = res.pages;
    const single = pages.length === 1 && !isDocumentFormat(res.document.format);
    view = { res, name, preview: single ? preview : null, page: 0 };

    el.thumbs.replaceChildren(...pages.map((p, i) => thumb(p, i)));
    el.pages.hidden = pages.length < 2;
    selectPage(0);

    el.meta.replaceChildren(...metaParts(res, how));
    setDownload(raw);
    if (res.result_url) {
      el.link.href = res.result_url;
      el.link.textContent = res.result_url;
      el.copyLink.hidden = false;
    } else {
      el.link.removeAttribute("href");
      el.link.textContent = "not stored (storage was unavailable)";
      el.copyLink.hidden = true;
    }
    // Pages are separated by form feeds in the result; people paste a blank line instead.
    el.copyText.dataset.text = (res.text || "").split("\f").join("\n\n");

    el.result.hidden = false;
    const n = pages.reduce((sum, p) => sum + p.lines.length, 0);
    const onPages = pages.length > 1 ? ` on ${pages.length} pages` : "";
    const why = { lookup: " (stored result, nothing uploaded)",
                  "already-read": " (read before, nothing uploaded)",
                  history: " (from your history)" }[how] || "";
    setState("done", `${n} line${n === 1 ? "" : "s"} recognised${onPages}${why}.`);
    addHistory(res, name);
  }

  function isDocumentFormat(format) {
    return format === "pdf" || format === "tiff";
  }

  function thumb(p, i) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.dataset.page = String(i);
    button.tabIndex = i === 0 ? 0 : -1;
    const n = p.lines.length;
    button.setAttribute("aria-label", `Page ${p.page || i + 1}, ${p.error ? "not read"
      : `${n} line${n === 1 ? "" : "s"}`}`);
    if (p.thumbnail_url) {
      const img = document.createElement("img");
      img.src = p.thumbnail_url;
      img.alt = "";
      img.loading = "lazy";
      img.decoding = "async";
      if (p.width && p.height) img.style.aspectRatio = String(p.width / p.height);
      button.append(img);
    }
    const label = document.createElement("span");
    label.className = "thumb-n";
    label.textContent = String(p.page || i + 1);
    button.append(label);
    li.append(button);
    return li;
  }

  function selectPage(i) {
    if (!view) return;
    const pages = view.res.pages;
    const at = Math.max(0, Math.min(pages.length - 1, i));
    view.page = at;
    const p = pages[at];
    const width = p.width || 1;
    const height = p.height || 1;
    const lines = p.lines;
    const multi = pages.length > 1;
    const of = multi ? ` ${p.page || at + 1} of ${pages.length}` : "";

    for (const b of el.thumbs.querySelectorAll("button.thumb")) {
      const current = b.dataset.page === String(at);
      if (current) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }

    // The stage keeps the page's aspect ratio; the SVG's viewBox is the page's own pixel
    // grid, so the boxes (page pixel coordinates) scale with whatever size it is shown at.
    el.stage.style.setProperty("--ar", String(width / height));
    el.overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    el.overlay.replaceChildren(...lines.map((line, k) => box(line, k)));
    el.lines.replaceChildren(...lines.map((line, k) => row(line, k)));
    if (lines.length === 0) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = p.error
        ? `This page could not be read: ${p.error.message || p.error.code}`
        : `No text found on this ${multi ? "page" : "image"}.`;
      el.lines.append(li);
    }
    el.linesHeading.textContent = multi ? `Lines on page${of}` : "Lines";

    // An image chosen here is shown itself; a document page (or a result opened from its URL)
    // by its thumbnail, scaled up under the boxes.
    setStageImage(view.preview || p.thumbnail_url, view.preview ? p.thumbnail_url : null);
    const what = multi ? `Page${of} of ${view.name}` : view.name;
    el.image.alt = lines.length
      ? `${what}, with ${lines.length} text line${lines.length === 1 ? "" : "s"} outlined`
      : what;
    const parts = [view.name, `${width}×${height} ${view.res.document.format || ""}`.trim()];
    if (multi) parts.push(`page${of}`);
    if (p.source === "text") parts.push("text layer");
    el.caption.textContent = parts.join(" · ");
  }

  function setStageImage(src, fallback) {
    el.stage.classList.toggle("no-preview", !src);
    el.image.dataset.fallback = fallback || "";
    if (src) el.image.src = src;
    else el.image.removeAttribute("src");
  }

  // Browsers cannot show every format we read (TIFF): use the thumbnail, else keep the boxes
  // and drop the picture.
  el.image.addEventListener("error", () => {
    if (!el.image.getAttribute("src")) return;
    const fallback = el.image.dataset.fallback;
    if (fallback && el.image.src !== fallback) {
      el.image.dataset.fallback = "";
      el.image.src = fallback;
    } else {
      el.stage.classList.add("no-preview");
    }
  });

  el.thumbs.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button.thumb");
    if (b) focusThumb(b);
  });

  // The strip is one Tab stop (roving tabindex); arrows, Home and End move between pages.
  el.thumbs.addEventListener("keydown", (e) => {
    const buttons = Array.from(el.thumbs.querySelectorAll("button.thumb"));
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1,
                 Home: 0, End: buttons.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    focusThumb(buttons[Math.max(0, Math.min(buttons.length - 1, to))]);
  });

  function focusThumb(b) {
    for (const other of el.thumbs.querySelectorAll("button.thumb[tabindex='0']")) {
      other.tabIndex = -1;
    }
    b.tabIndex = 0;
    b.focus();
    b.scrollIntoView({ block: "nearest", inline: "nearest" });
    selectPage(Number(b.dataset.page));
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
    text.append(...lineText(line, i));
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

  // A line's text as nodes: one <span class="word"> per word that has a box, and the text
  // between words (spaces; none in CJK) as it is, so the row reads exactly as the line's
  // text. Words are matched in order from where the last one ended (a word's text is the
  // line's text with its spaces taken out, cut up); a word that does not match there gets no
  // span, and a line without words (older results, some text-layer pages) is its plain text.
  function lineText(line, i) {
    const text = line.text || "";
    const words = Array.isArray(line.words) ? line.words : [];
    const nodes = [];
    let at = 0; // everything before this is in nodes
    let next = 0; // where the next word may start
    words.forEach((word, k) => {
      const w = word && typeof word.text === "string" ? word.text : "";
      if (!w || !validBox(word.box)) return;
      let start = next;
      while (start < text.length && /\s/.test(text[start])) start += 1;
      if (!text.startsWith(w, start)) return;
      if (start > at) nodes.push(document.createTextNode(text.slice(at, start)));
      const span = document.createElement("span");
      span.className = "word";
      span.dataset.line = String(i);
      span.dataset.word = String(k);
      span.textContent = w;
      nodes.push(span);
      at = next = start + w.length;
    });
    if (at < text.length || nodes.length === 0) nodes.push(document.createTextNode(text.slice(at)));
    return nodes;
  }

  function validBox(b) {
    return Array.isArray(b) && b.length >= 3
      && b.every((pt) => Array.isArray(pt) && pt.length >= 2 && pt.every(Number.isFinite));
  }

  function metaParts(res, how) {
    const parts = [];
    const add = (label, value) => {
      const span = document.createElement("span");
      span.className = "meta-item";
      span.textContent = `${label}: ${value}`;
      parts.push(span);
    };
    if (res.cached !== undefined) add("cached", String(Boolean(res.cached)));
    if (how === "lookup") add("source", "lookup by hash, not uploaded");
    if (how === "already-read") add("source", "read before, not uploaded");
    if (how === "history") add("source", "history");
    const doc = res.document || {};
    if (doc.format) add("format", doc.format);
    if (res.pages.length > 1) add("pages", String(res.pages.length));
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

  // ---- history -----------------------------------------------------------------------------

  // localStorage can be missing, full or refused (private windows): history is a nicety.
  function loadHistory() {
    try {
      const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
      return Array.isArray(items)
        ? items.filter((h) => h && typeof h.result_url === "string").slice(0, HISTORY_MAX) : [];
    } catch {
      return [];
    }
  }

  function saveHistory(items) {
    try {
      if (items.length) localStorage.setItem(HISTORY_KEY, JSON.stringify(items));
      else localStorage.removeItem(HISTORY_KEY);
    } catch {
      // not kept: fine
    }
  }

  function addHistory(res, name) {
    if (!res.result_url) return; // nothing to open it from later
    const first = res.pages[0] || {};
    const entry = {
      result_url: res.result_url, hash: res.hash, name,
      thumbnail_url: first.thumbnail_url || null, pages: res.pages.length,
      date: new Date().toISOString(),
    };
    const rest = loadHistory().filter((h) => h.result_url !== entry.result_url);
    saveHistory([entry, ...rest].slice(0, HISTORY_MAX));
    renderHistory();
  }

  function renderHistory() {
    const items = loadHistory();
    el.history.hidden = items.length === 0;
    el.historyList.replaceChildren(...items.map((h, i) => historyItem(h, i)));
  }

  function historyItem(h, i) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "history-item";
    button.dataset.index = String(i);
    const pic = document.createElement("span");
    pic.className = "history-thumb";
    if (h.thumbnail_url) {
      const img = document.createElement("img");
      img.src = h.thumbnail_url;
      img.alt = "";
      img.loading = "lazy";
      img.addEventListener("error", () => img.remove());
      pic.append(img);
    }
    const text = document.createElement("span");
    text.className = "history-text";
    const title = document.createElement("span");
    title.className = "history-name";
    title.textContent = h.name || "untitled";
    const meta = document.createElement("span");
    meta.className = "history-meta";
    const when = new Date(h.date);
    const date = Number.isNaN(when.getTime()) ? "" : when.toLocaleString(undefined, {
      dateStyle: "medium", timeStyle: "short" });
    const pages = h.pages > 1 ? `${h.pages} pages` : "";
    meta.textContent = [date, pages].filter(Boolean).join(" · ");
    text.append(title, meta);
    button.append(pic, text);
    button.setAttribute("aria-label", `Open ${h.name || "result"}${date ? `, read ${date}` : ""}`);
    li.append(button);
    return li;
  }

  el.historyList.addEventListener("click", (e) => {
    const b = e.target.closest && e.target.closest("button.history-item");
    if (b) openHistory(loadHistory()[Number(b.dataset.index)]);
  });

  el.clearHistory.addEventListener("click", () => {
    saveHistory([]);
    renderHistory();
    el.status.textContent = "History cleared.";
    el.file.focus();
  });

  async function openHistory(entry) {
    if (!entry) return;
    const mine = ++run;
    cancelTransfer();
    hideError();
    setPreview(null);
    setState("loading", `Opening ${entry.name || "the result"}…`);
    try {
      // Results are immutable: the browser's and the CDN's caches may answer this.
      const got = await getJson(entry.result_url, { headers: { Accept: "application/json" } });
      checkRun(mine);
      if (got.status !== 200 || !got.body || !got.body.hash) {
        throw apiError(got.status, got.body && got.body.error ? got.body
          : { error: { code: got.status === 404 || got.status === 403 ? "not_found" : "http",
                       message: `HTTP ${got.status} for ${entry.result_url}` } });
      }
      show(normalise(got.body, entry.result_url), { name: entry.name, preview: null,
                                                     how: "history" });
      el.resultHeading.focus({ preventScroll: true });
      el.result.scrollIntoView({ block: "start" });
    } catch (err) {
      if (mine !== run || err.name === "AbortError") return;
      fail(err);
    }
  }

  // ---- linking lines and boxes -------------------------------------------------------------

  function highlight(i, on) {
    const sel = `[data-line="${i}"]`;
    for (const node of [el.overlay.querySelector(`polygon:not(.word)${sel}`),
                        el.lines.querySelector(`li${sel}`)]) {
      if (node) node.classList.toggle("highlight", on);
    }
  }

  // A hovered word: its own box, drawn over the line's box only while the pointer is on it
  // (one polygon at a time, so the overlay otherwise holds one box per line), and the word
  // itself marked in the text.
  function showWord(span) {
    hideWord();
    const p = view && view.res.pages[view.page];
    const line = p && p.lines[Number(span.dataset.line)];
    const word = line && Array.isArray(line.words) ? line.words[Number(span.dataset.word)] : null;
    if (!word || !validBox(word.box)) return;
    const poly = document.createElementNS(SVG_NS, "polygon");
    poly.setAttribute("points", word.box.map(([x, y]) => `${x},${y}`).join(" "));
    poly.setAttribute("class", "word highlight");
    poly.dataset.line = span.dataset.line;
    poly.dataset.word = span.dataset.word;
    el.overlay.append(poly);
    span.classList.add("highlight");
  }

  function hideWord() {
    for (const node of el.overlay.querySelectorAll("polygon.word")) node.remove();
    for (const node of el.lines.querySelectorAll("span.word.highlight")) {
      node.classList.remove("highlight");
    }
  }

  function wordSpan(node) {
    return node && node.closest ? node.closest("span.word") : null;
  }

  el.lines.addEventListener("mouseover", (e) => {
    const span = wordSpan(e.target);
    if (span) showWord(span);
  });
  el.lines.addEventListener("mouseout", (e) => {
    const span = wordSpan(e.target);
    if (span && wordSpan(e.relatedTarget) !== span) hideWord();
  });

  function lineIndex(e) {
    const node = e.target.closest && e.target.closest("[data-line]");
    return node ? node.dataset.line : null;
  }

  // Delegated handlers: mouseover/mouseout and focusin/focusout bubble, so one listener serves
  // every line and every box however many there are (and survives a change of page).
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
