// The conversation: streams replies (rendered as Markdown while they arrive), edits, regenerates,
// keeps versions, switches the model, and keeps the latest message in view.
// Without this script every form on the page still works as a plain HTML form.
//
// Safety rule: text typed by people (messages, titles, chatbot names) is only ever inserted
// with textContent; the only HTML inserted is the server's nh3-sanitized `content_html`
// (saved replies) or the same renderer's answer from /api/chat-sessions/render-markdown/.
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root || !window.fetch || !window.TextDecoder || !("body" in Response.prototype)) return;

  const sessionId = root.dataset.sessionId;
  const api = `/api/chat-sessions/${sessionId}/`;
  const chatUrl = root.dataset.chatUrl;
  const botName = root.dataset.botName;
  const accountUrl = root.dataset.accountUrl;
  const pricingUrl = root.dataset.pricingUrl;
  const scroller = document.getElementById("scroller");
  const list = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const input = composer.querySelector("textarea");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const jumpButton = document.getElementById("jump-latest");
  const alerts = document.getElementById("chat-alerts");
  const statusRegion = document.getElementById("chat-status");
  const usageHint = document.getElementById("usage-hint");
  const demoBanner = document.getElementById("chat-demo-banner");
  const heading = root.querySelector(".chat-header h1");
  const STATUS_LABELS = {generating: "Generating", partial: "Partial", stopped: "Stopped", failed: "Failed"};
  // What people read when the AI provider fails: its own text names internal hosts and ports.
  const UPSTREAM_TEXT = {
    upstream_error: "The AI model could not answer this time.",
    upstream_timeout: "The AI model took too long to answer.",
  };
  const DRAFT_KEY = `chatsite-draft-${sessionId}`;
  const timeFormat = new Intl.DateTimeFormat(undefined, {day: "numeric", month: "short", hour: "2-digit", minute: "2-digit"});
  const resetFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  let busy = false;

  // ---- Small helpers -------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function csrfToken() {
    const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
    if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // JSON is asked for so that refusals (quota, validation) come back as {"detail", "code"};
  // a request that carries "stream": true is answered with server-sent events all the same.
  function request(method, url, body, headers) {
    return fetch(url, {
      method,
      credentials: "same-origin",
      headers: Object.assign(
        {Accept: "application/json", "X-CSRFToken": csrfToken()},
        body === undefined ? {} : {"Content-Type": "application/json"},
        headers || {},
      ),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async function errorOf(response) {
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!data || typeof data.detail !== "string") {
      data = {detail: `The server answered with an error (${response.status}). Try again in a moment.`, code: "http_error"};
    }
    return data;
  }

  const OFFLINE = {detail: "Could not reach the server. Check your connection and try again.", code: "network"};

  function announce(text) {
    statusRegion.textContent = "";
    // A fresh text node makes screen readers announce the same words twice in a row.
    window.setTimeout(() => { statusRegion.textContent = text; }, 50);
  }

  function grow(area) {
    area.style.height = "auto";
    const borders = area.offsetHeight - area.clientHeight;
    area.style.height = `${area.scrollHeight + borders}px`;
  }

  function localTimes(container) {
    for (const time of container.querySelectorAll("time[datetime]")) {
      const date = new Date(time.dateTime);
      if (!Number.isNaN(date.getTime())) time.textContent = timeFormat.format(date);
    }
  }

  // ---- Scrolling: open at the latest message, follow a reply only from the bottom --------------

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function toBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    jumpButton.hidden = true;
  }

  function keepBottom(wasNearBottom) {
    if (wasNearBottom) toBottom();
    else jumpButton.hidden = false;
  }

  scroller.addEventListener("scroll", () => {
    if (nearBottom()) jumpButton.hidden = true;
    else if (busy) jumpButton.hidden = false;
  }, {passive: true});
  jumpButton.addEventListener("click", () => {
    toBottom();
    input.focus();
  });

  // ---- Messages ------------------------------------------------------------------------------

  function messages() {
    return Array.from(list.querySelectorAll(".message[data-message-type]"));
  }

  function tag(li, className, text) {
    const meta = li.querySelector(".message-meta");
    let span = meta.querySelector(`.${className}`);
    if (!span) {
      span = el("span", {className: `tag ${className}`});
      meta.append(span);
    }
    span.textContent = text;
    return span;
  }

  function setStatus(li, status) {
    li.dataset.status = status;
    const old = li.querySelector(".tag-status");
    if (status === "complete") {
      if (old) old.remove();
    } else {
      const span = tag(li, "tag-status", STATUS_LABELS[status] || status);
      span.className = `tag tag-status tag-${status}`;
    }
    if (status === "generating") li.setAttribute("aria-busy", "true");
    else li.removeAttribute("aria-busy");
  }

  // Messages after `li` in the list (not in the version shown any more after an edit or a regenerate).
  function removeAfter(li, inclusive) {
    const all = messages();
    for (const later of all.slice(all.indexOf(li) + (inclusive ? 0 : 1))) later.remove();
  }

  function newMessage(type, data) {
    const li = el("li", {className: `message message-${type}`});
    li.dataset.messageType = type;
    li.dataset.messageId = data.message_id || "";
    li.dataset.status = data.status || "complete";
    li.dataset.disabled = "false";
    if (data.message_id) li.id = `m-${data.message_id}`;
    const created = data.created_at ? new Date(data.created_at) : new Date();
    const time = el("time", {dateTime: created.toISOString(), textContent: timeFormat.format(created)});
    const meta = el("p", {className: "message-meta"}, el("strong", {textContent: type === "user" ? "You" : botName}), " ", time);
    const body = el("div", {className: type === "user" ? "message-body plain" : "message-body markdown"});
    li.append(meta, body, el("div", {className: "message-actions"}));
    const empty = document.getElementById("messages-empty");
    if (empty) empty.remove();
    list.append(li);
    if (li.dataset.status !== "complete") setStatus(li, li.dataset.status);
    return li;
  }

  function addUserMessage(data) {
    const li = newMessage("user", data);
    li.querySelector(".message-body").textContent = data.content;
    setUpActions(li);
    toBottom();
    return li;
  }

  // ---- Markdown while a reply streams: the server's own renderer, asked at most one at a time --

  async function renderMarkdown(text) {
    const response = await request("POST", `${api.replace(/\d+\/$/, "")}render-markdown/`, {content: text});
    if (!response.ok) throw new Error(`render: ${response.status}`);
    return (await response.json()).content_html;
  }

  function drawStreaming(reply) {
    const body = reply.li.querySelector(".message-body");
    const wasNearBottom = nearBottom();
    if (reply.htmlDrawn !== reply.htmlLength) {
      // content_html comes from the server's sanitizer, as for a saved reply.
      reply.rendered.innerHTML = reply.html;
      enhanceCode(reply.rendered);
      reply.htmlDrawn = reply.htmlLength;
    }
    if (!reply.rendered.isConnected) body.replaceChildren(reply.rendered, reply.tail);
    reply.tail.data = reply.raw.slice(reply.htmlLength);
    keepBottom(wasNearBottom);
  }

  async function renderSoon(reply) {
    if (reply.rendering || reply.finished) return;
    reply.rendering = true;
    try {
      while (!reply.finished && reply.raw.length > reply.htmlLength) {
        const text = reply.raw;
        let html;
        try {
          html = await renderMarkdown(text);
        } catch (error) {
          return; // the plain text keeps coming; the saved reply arrives rendered at the end
        }
        if (reply.finished) return;
        reply.html = html;
        reply.htmlLength = text.length;
        drawStreaming(reply);
        await new Promise((resolve) => window.setTimeout(resolve, 80));
      }
    } finally {
      reply.rendering = false;
    }
  }

  // A reply being shown: its element (made when its first event arrives), and how far it has come
  // in characters as the server counts them (the events' ids), to resume from after a lost connection.
  function newReply(li) {
    const reply = {
      li: li || null, id: li ? li.dataset.messageId : "", offset: li ? Number(li.dataset.offset || 0) : 0,
      error: null, raw: "", html: "", htmlLength: 0, htmlDrawn: -1, rendering: false, finished: false,
      rendered: el("div", {className: "rendered"}), tail: document.createTextNode(""),
    };
    if (li) reply.raw = li.querySelector(".message-body").textContent;
    return reply;
  }

  function attachReply(reply) {
    if (reply.li) return;
    const wasNearBottom = nearBottom();
    reply.li = newMessage("assistant", {status: "generating"});
    keepBottom(wasNearBottom);
  }

  function appendDelta(reply, content) {
    attachReply(reply);
    reply.raw += content;
    drawStreaming(reply);
    renderSoon(reply);
  }

  function finishReply(reply, data) {
    attachReply(reply);
    reply.finished = true;
    const li = reply.li;
    reply.id = data.message_id;
    li.dataset.messageId = data.message_id;
    li.id = `m-${data.message_id}`;
    setStatus(li, data.status);
    const wasNearBottom = nearBottom();
    const body = li.querySelector(".message-body");
    if (data.image_url && !li.querySelector(".message-image")) {
      const image = el("img", {className: "message-image", src: data.image_url, alt: `Image generated for: ${data.content}`});
      li.insertBefore(image, body);
    }
    body.className = "message-body markdown";
    // content_html was rendered from Markdown and sanitized with nh3 on the server.
    body.innerHTML = data.content_html || "";
    enhanceCode(body);
    setUpActions(li);
    keepBottom(wasNearBottom);
  }

  function failReply(reply, error) {
    if (error.partial || !reply.li) return;
    reply.finished = true;
    if (reply.raw.trim()) {
      setStatus(reply.li, "failed");
    } else {
      // Nothing was said: the error by the composer tells what happened, once.
      reply.li.remove();
      reply.li = null;
    }
  }

  // ---- Server-sent events --------------------------------------------------------------------

  function parseEvent(block) {
    let name = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (!data.length) return null;
    try {
      return {name, id, data: JSON.parse(data.join("\n"))};
    } catch (error) {
      return null;
    }
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, {stream: true}).replace(/\r/g, "");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event) onEvent(event);
      }
    }
  }

  // Shows one reply's events as they come; resolves with the `done` event's data, or null if
  // the stream ended without one (an error, or a lost connection).
  async function streamInto(response, reply, handlers) {
    let done = null;
    await readEvents(response, (event) => {
      if (event.id !== null && /^\d+$/.test(event.id)) reply.offset = Math.max(reply.offset, Number(event.id));
      if (event.name === "user_message" && handlers && handlers.userMessage) handlers.userMessage(event.data);
      else if (event.name === "edited" && handlers && handlers.edited) handlers.edited(event.data);
      else if (event.name === "delta") appendDelta(reply, event.data.content || "");
      else if (event.name === "assistant_message") finishReply(reply, event.data);
      else if (event.name === "error") reply.error = event.data;
      else if (event.name === "done") done = event.data;
    });
    return done;
  }

  async function latestReplyId() {
    try {
      const response = await request("GET", `${api}messages/`);
      if (!response.ok) return "";
      const found = (await response.json()).messages.filter((m) => m.message_type === "assistant" && !m.disabled);
      return found.length ? found[found.length - 1].message_id : "";
    } catch (error) {
      return "";
    }
  }

  // Follows a reply that is being generated (after a reload or a lost connection) from where
  // the page has it: the server replays what came after Last-Event-ID, then what comes next.
  async function follow(reply) {
    for (let attempt = 0; attempt < 4; attempt += 1) {
      if (attempt) await new Promise((resolve) => window.setTimeout(resolve, 1000 * attempt));
      if (!reply.id) reply.id = await latestReplyId();
      if (!reply.id) continue;
      let response;
      try {
        response = await request("GET", `${api}messages/${reply.id}/stream/`, undefined, {"Last-Event-ID": String(reply.offset)});
      } catch (error) {
        continue;
      }
      if (!response.ok) {
        reply.error = await errorOf(response);
        return null;
      }
      try {
        const done = await streamInto(response, reply);
        if (done || reply.error) return done;
      } catch (error) {
        // The connection dropped again: try once more from the new offset.
      }
    }
    return null;
  }

  // Reads a reply to its end, following it again if the connection drops, then settles the page.
  async function runReply(response, reply, handlers) {
    let done = null;
    try {
      done = await streamInto(response, reply, handlers);
    } catch (error) {
      done = null;
    }
    if (!done && !reply.error && (reply.li || reply.id)) done = await follow(reply);
    await settle(reply, done);
    return done;
  }

  async function settle(reply, done) {
    reply.finished = true;
    if (reply.error) {
      failReply(reply, reply.error);
      showError(reply.error, {retry: true});
      announce("The reply failed.");
    } else if (!done) {
      showError({detail: "The connection was lost before the reply finished. Reload the page to see it.", code: "network"});
    } else {
      if (done.title && done.title !== heading.textContent) setTitle(done.title);
      announce(done.status === "stopped" ? "Reply stopped." : "Reply finished.");
    }
    setBusy(false);
    refreshUsage();
  }

  // ---- Errors: by the composer, once, saying what to do ----------------------------------------

  function clearErrors() {
    alerts.replaceChildren();
  }

  function errorText(error) {
    return UPSTREAM_TEXT[error.code] || error.detail;
  }

  // A limit's name as the account page says it: "hourly_max_messages" is "messages per hour".
  function limitLabel(name) {
    const windows = {hourly: "per hour", three_hours: "per 3 hours", twelve_hours: "per 12 hours", daily: "per day",
      weekly: "per week", monthly: "per 30 days"};
    const fixed = {max_tokens: "tokens in this plan period", max_tokens_free: "free-model tokens in this plan period",
      max_openrouter_cost_usd: "spending in this plan period", monthly_free_model_messages: "free-model messages per 30 days",
      monthly_free_model_tokens: "free-model tokens per 30 days"};
    if (fixed[name]) return fixed[name];
    const match = /^(hourly|three_hours|twelve_hours|daily|weekly|monthly)_(max_messages|max_tokens|image_generation_limit)$/.exec(name);
    if (!match) return name ? name.replace(/_/g, " ") : "usage limit";
    const what = {max_messages: "messages", max_tokens: "tokens", image_generation_limit: "images"}[match[2]];
    return `${what} ${windows[match[1]]}`;
  }

  function showError(error, options) {
    const box = el("div", {className: "error-box"});
    box.setAttribute("role", "alert");
    box.dataset.code = error.code || "";
    if (error.code === "quota_exceeded") {
      const limit = limitLabel(String(error.limit || ""));
      const counts = error.limit_value !== undefined ? ` (${error.used} of ${error.limit_value})` : "";
      box.append(el("p", {}, el("strong", {textContent: `You have reached your limit: ${limit}${counts}.`})));
      const resets = error.resets_at ? new Date(error.resets_at) : null;
      const when = resets && !Number.isNaN(resets.getTime())
        ? el("time", {className: "resets-at", dateTime: error.resets_at, textContent: resetFormat.format(resets)})
        : "later";
      box.append(el("p", {}, "It resets at ", when, ". Your message is still in the box. ",
        el("a", {href: accountUrl, textContent: "See your plan and limits"}), ", or ",
        el("a", {href: pricingUrl, textContent: "see the plans"}), "."));
    } else {
      box.append(el("p", {}, el("strong", {textContent: errorText(error)})));
      if (error.code === "unverified" || error.code === "no_subscription") {
        box.append(el("p", {}, el("a", {href: accountUrl, textContent: "Open your account page"}), "."));
      } else if (error.code === "network" && !(options && options.retry)) {
        box.append(el("p", {textContent: "Your message is still in the box: press Send again."}));
      }
    }
    if (options && options.retry) {
      box.append(el("p", {textContent: "Your message is kept in the chat: press Retry to ask again."}));
      const retry = el("button", {type: "button", className: "secondary", textContent: "Retry"});
      retry.addEventListener("click", () => regenerate());
      box.append(el("p", {className: "error-actions"}, retry));
    }
    alerts.replaceChildren(box);
    return box;
  }

  // ---- Busy state ----------------------------------------------------------------------------

  function setBusy(on) {
    busy = on;
    sendButton.disabled = on;
    sendButton.hidden = on;
    stopButton.hidden = !on;
    stopButton.disabled = false;
    composer.setAttribute("aria-busy", on ? "true" : "false");
    for (const button of list.querySelectorAll(".message-actions button:not(.copy-reply)")) button.disabled = on;
    for (const retry of alerts.querySelectorAll(".error-actions button")) retry.disabled = on;
    if (!on) updateVersionButtons();
  }

  // ---- Usage: the hint by the composer, worded by the server (which limit, which window) -------

  async function refreshUsage() {
    if (!usageHint) return;
    try {
      const response = await request("GET", `${chatUrl}usage-hint/`);
      if (!response.ok) return;
      const hint = (await response.json()).hint;
      usageHint.textContent = hint;
      usageHint.hidden = !hint;
    } catch (error) {
      // Offline: the old hint stays.
    }
  }

  // ---- Send ----------------------------------------------------------------------------------

  // POST that answers with a stream; on a network error or a refusal, say why, end busy, return null.
  async function streamStart(path, body) {
    let response;
    try {
      response = await request("POST", `${api}${path}`, body);
    } catch (error) {
      setBusy(false);
      showError(OFFLINE);
      return null;
    }
    if (!response.ok) {
      setBusy(false);
      showError(await errorOf(response));
      return null;
    }
    return response;
  }

  function saveDraft() {
    try {
      if (input.value) window.localStorage.setItem(DRAFT_KEY, input.value);
      else window.localStorage.removeItem(DRAFT_KEY);
    } catch (error) {
      // Storage full or blocked: the text is still in the box.
    }
  }

  async function send() {
    if (busy) return;
    const text = input.value;
    if (!text.trim()) {
      showError({detail: "Write a message first.", code: "blank"});
      input.focus();
      return;
    }
    clearErrors();
    setBusy(true);
    // Refused before anything was saved: the typed text stays in the box.
    const response = await streamStart("send/", {message: text, stream: true});
    if (!response) return;
    input.value = "";
    saveDraft();
    grow(input);
    announce("Message sent. Generating the reply.");
    const reply = newReply();
    await runReply(response, reply, {
      userMessage(data) {
        addUserMessage(data);
        attachReply(reply);
        toBottom();
      },
    });
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });

  function sendsOnEnter(event) {
    return event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229;
  }

  input.addEventListener("keydown", (event) => {
    if (sendsOnEnter(event)) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => {
    grow(input);
    saveDraft();
  });

  // ---- Stop (the button, or Esc anywhere on the page) ----------------------------------------

  async function stop() {
    if (!busy || stopButton.disabled) return;
    stopButton.disabled = true;
    try {
      const response = await request("POST", `${api}stop/`);
      if (!response.ok) showError(await errorOf(response));
    } catch (error) {
      showError(OFFLINE);
    }
    // The reply's stream then ends by itself, with the partial text and status "stopped".
  }

  stopButton.addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !busy || event.defaultPrevented) return;
    if (document.querySelector("dialog[open]")) return;
    event.preventDefault();
    stop();
  });

  // ---- Regenerate ----------------------------------------------------------------------------

  // Write a reply again: `li` (a shown reply), or the last one (Retry) when null.
  async function regenerate(li) {
    if (busy) return;
    clearErrors();
    setBusy(true);
    const body = {stream: true};
    if (li && li.dataset.messageId) body.message_id = li.dataset.messageId;
    const response = await streamStart("regenerate/", body);
    if (!response) return;
    const all = messages();
    const last = all[all.length - 1];
    // The reply written again (and what followed it) is another version now: the new one takes its place.
    if (li) removeAfter(li, true);
    else if (last && last.dataset.messageType === "assistant") last.remove();
    announce("Generating a new reply.");
    const reply = newReply();
    attachReply(reply);
    const done = await runReply(response, reply);
    if (done && reply.li) await loadVersions(reply.li);
  }

  // ---- Actions on each message: copy, regenerate, edit ----------------------------------------

  function setUpActions(li) {
    let actions = li.querySelector(".message-actions");
    if (!actions) {
      actions = el("div", {className: "message-actions"});
      li.append(actions);
    }
    const type = li.dataset.messageType;
    if (!actions.querySelector(".copy-reply")) {
      const copy = el("button", {type: "button", className: "link-button copy-reply", textContent: "Copy"});
      copy.setAttribute("aria-label", type === "user" ? "Copy message" : "Copy reply");
      copy.addEventListener("click", async () => {
        const copied = await copyText(li.querySelector(".message-body").innerText);
        copy.textContent = copied ? "Copied" : "Copy failed";
        announce(copied ? "Copied." : "Could not copy: select the text and copy it by hand.");
        window.setTimeout(() => { copy.textContent = "Copy"; }, 2000);
      });
      actions.append(copy);
    }
    if (type === "assistant" && li.dataset.status !== "generating" && !actions.querySelector(".regenerate-button")) {
      const button = el("button", {type: "button", className: "link-button regenerate-button", textContent: "Regenerate"});
      button.setAttribute("aria-label", "Regenerate this reply");
      actions.append(button);
    }
    const form = actions.querySelector(".regenerate-form");
    if (form) {
      const button = form.querySelector("button");
      form.replaceWith(button);
      button.type = "button";
    }
    const regen = actions.querySelector(".regenerate-button");
    if (regen && !regen.dataset.ready) {
      regen.dataset.ready = "true";
      regen.addEventListener("click", () => regenerate(li));
    }
    if (type === "user" && li.dataset.status === "complete") {
      const link = actions.querySelector(".edit-link");
      if (link) link.replaceWith(editButton(li));
      else if (!actions.querySelector(".edit-button")) actions.append(editButton(li));
    }
  }

  // ---- Versions: ‹ 1/2 › at the place of an edit or a regenerate ------------------------------

  function switchForm(messageId, className, label, symbol) {
    if (!messageId) {
      return el("button", {type: "button", className: `icon-button ${className}`, textContent: symbol, disabled: true, ariaLabel: label});
    }
    const form = el("form", {method: "post", action: `${chatUrl}messages/${messageId}/switch/`});
    form.append(el("input", {type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken()}));
    const button = el("button", {type: "submit", className: `icon-button ${className}`, textContent: symbol});
    button.setAttribute("aria-label", label);
    form.append(button);
    return form;
  }

  async function loadVersions(li) {
    let data;
    try {
      const response = await request("GET", `${api}messages/${li.dataset.messageId}/versions/`);
      if (!response.ok) return;
      data = await response.json();
    } catch (error) {
      return;
    }
    const old = li.querySelector(".versions");
    if (old) old.remove();
    if (data.versions.length < 2 || data.current < 0) return;
    const at = data.current;
    const nav = el("nav", {className: "versions"},
      switchForm(at > 0 ? data.versions[at - 1].message_id : "", "version-previous", "Previous version", "‹"),
      el("span", {className: "version-count", textContent: `${at + 1}/${data.versions.length}`}),
      switchForm(at + 1 < data.versions.length ? data.versions[at + 1].message_id : "", "version-next", "Next version", "›"));
    nav.setAttribute("aria-label", "Versions");
    li.querySelector(".message-actions").prepend(nav);
    updateVersionButtons();
  }

  function updateVersionButtons() {
    // A switch while a reply is being written would hide it: the server refuses, so the page does too.
    for (const form of list.querySelectorAll(".versions form button")) form.disabled = busy;
  }

  // ---- Inline edit ---------------------------------------------------------------------------

  function editButton(li) {
    const button = el("button", {type: "button", className: "link-button edit-button", textContent: "Edit", disabled: busy});
    button.addEventListener("click", () => startEdit(li, button));
    return button;
  }

  function startEdit(li, button) {
    if (busy || li.querySelector(".edit-form")) return;
    const body = li.querySelector(".message-body");
    const areaId = `edit-${li.dataset.messageId}`;
    const area = el("textarea", {id: areaId, value: body.textContent, maxLength: input.maxLength, rows: 3});
    const errors = el("div", {className: "edit-errors"});
    const save = el("button", {type: "submit", textContent: "Save"});
    const cancel = el("button", {type: "button", className: "secondary", textContent: "Cancel"});
    const form = el("form", {className: "edit-form"},
      el("label", {htmlFor: areaId, textContent: "Edit message"}),
      area,
      el("p", {className: "muted", textContent: "Saving answers the new text; the earlier version stays, a click away."}),
      errors,
      el("div", {className: "button-row"}, save, cancel));
    body.hidden = true;
    button.hidden = true;
    li.insertBefore(form, li.querySelector(".message-actions"));
    grow(area);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);

    function close() {
      form.remove();
      body.hidden = false;
      button.hidden = false;
    }
    cancel.addEventListener("click", () => {
      close();
      button.focus();
    });
    area.addEventListener("input", () => grow(area));
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        cancel.click();
      } else if (sendsOnEnter(event)) {
        event.preventDefault();
        form.requestSubmit(save);
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveEdit(li, area.value, {close, errors, save});
    });
  }

  function showEditorError(container, error) {
    const box = el("div", {className: "error-box"}, el("p", {textContent: errorText(error)}));
    box.setAttribute("role", "alert");
    container.replaceChildren(box);
  }

  async function saveEdit(li, text, editor) {
    if (busy) return;
    if (!text.trim()) {
      showEditorError(editor.errors, {detail: "The message is empty."});
      return;
    }
    clearErrors();
    editor.errors.replaceChildren();
    setBusy(true);
    editor.save.disabled = true;
    let response;
    try {
      response = await request("POST", `${api}messages/${li.dataset.messageId}/edit/`, {content: text, stream: true});
    } catch (error) {
      response = null;
    }
    if (!response || !response.ok) {
      setBusy(false);
      editor.save.disabled = false;
      showEditorError(editor.errors, response ? await errorOf(response) : OFFLINE);
      return;
    }
    // The edit is saved: what followed the old text is another version now, and the new reply
    // comes directly under the edited message.
    editor.close();
    li.querySelector(".message-body").textContent = text;
    tag(li, "tag-edited", "edited");
    removeAfter(li, false);
    announce("Message edited. Generating a new reply.");
    const reply = newReply();
    attachReply(reply);
    reply.li.scrollIntoView({block: "nearest"});
    await runReply(response, reply, {
      edited(data) {
        for (const id of data.disabled_message_ids || []) {
          const gone = list.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
          if (gone) gone.remove();
        }
      },
    });
    await loadVersions(li);
  }

  // ---- Code blocks: a bar with the language and a Copy button, above the code -----------------

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (error) {
        // Denied: fall back to the old way below.
      }
    }
    const area = el("textarea", {value: text, readOnly: true});
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    area.remove();
    return copied;
  }

  function enhanceCode(container) {
    for (const pre of container.querySelectorAll("pre")) {
      if (pre.parentElement.classList.contains("code-block")) continue;
      const code = pre.querySelector("code");
      const match = code ? /(?:^|\s)language-([\w#+.-]+)/.exec(code.className) : null;
      const wrapper = el("div", {className: "code-block"});
      pre.replaceWith(wrapper);
      const button = el("button", {type: "button", className: "copy-button", textContent: "Copy"});
      button.setAttribute("aria-label", match ? `Copy ${match[1]} code` : "Copy code");
      button.addEventListener("click", async () => {
        const copied = await copyText(pre.textContent);
        button.textContent = copied ? "Copied" : "Copy failed";
        announce(copied ? "Code copied." : "Could not copy: select the code and copy it by hand.");
        window.setTimeout(() => { button.textContent = "Copy"; }, 2000);
      });
      const bar = el("div", {className: "code-bar"}, el("span", {className: "code-language", textContent: match ? match[1] : "code"}), button);
      wrapper.append(bar, pre);
    }
  }

  // ---- Model switch -----------------------------------------------------------------------------

  function setUpModel() {
    const form = document.getElementById("model-form");
    if (!form) return;
    const select = form.querySelector("select");
    const description = document.getElementById("model-description");
    const submit = document.getElementById("model-submit");
    submit.hidden = true;
    let current = select.value;

    function describe() {
      const option = select.options[select.selectedIndex];
      const price = option.dataset.price.charAt(0).toUpperCase() + option.dataset.price.slice(1);
      description.textContent = option.dataset.description ? `${option.dataset.description} · ${price}` : price;
      if (demoBanner) demoBanner.hidden = option.dataset.demo !== "true";
    }
    describe();
    select.addEventListener("change", async () => {
      let response;
      try {
        response = await request("PATCH", api, {ai_model_id: select.value});
      } catch (error) {
        response = null;
      }
      if (!response || !response.ok) {
        showError(response ? await errorOf(response) : OFFLINE);
        select.value = current;
        describe();
        return;
      }
      current = select.value;
      describe();
      announce(`Replies now come from ${select.options[select.selectedIndex].text}.`);
      refreshUsage();
    });
  }

  // ---- Rename --------------------------------------------------------------------------------

  function setTitle(title) {
    heading.textContent = title;
    document.title = `${title} · chatsite`;
    for (const span of root.querySelectorAll(".js-title")) span.textContent = title;
    const field = document.querySelector("#rename-form input[name=title]");
    if (field) field.value = title;
    const item = document.querySelector(`.chat-item[data-session-id="${CSS.escape(sessionId)}"]`);
    if (item) {
      const link = item.querySelector(".session-title");
      link.lastChild.textContent = title;
      for (const node of item.querySelectorAll("[data-title]")) node.dataset.title = title;
    }
  }

  document.addEventListener("chatsite:renamed", (event) => {
    if (event.detail.id === sessionId) setTitle(event.detail.title);
  });

  function setUpRename() {
    const details = root.querySelector("details.rename");
    const form = document.getElementById("rename-form");
    if (!details || !form) return;
    const field = form.querySelector("input[name=title]");
    const error = form.querySelector(".form-error");
    const toggle = el("button", {type: "button", className: "secondary", textContent: "Rename"});
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-controls", "rename-form");
    const holder = el("div", {className: "rename"}, toggle, form);
    const open = details.open;
    details.replaceWith(holder);

    function show(visible) {
      form.hidden = !visible;
      toggle.setAttribute("aria-expanded", String(visible));
      if (visible) {
        field.focus();
        field.select();
      }
    }
    show(open);
    toggle.addEventListener("click", () => show(form.hidden));
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        show(false);
        toggle.focus();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      let response;
      try {
        response = await request("POST", `${api}update-title/`, {title: field.value});
      } catch (problem) {
        response = null;
      }
      if (!response || !response.ok) {
        error.textContent = (response ? await errorOf(response) : OFFLINE).detail;
        error.hidden = false;
        field.focus();
        return;
      }
      setTitle((await response.json()).title);
      show(false);
      toggle.focus();
      announce("Chat renamed.");
    });
  }

  // ---- Delete --------------------------------------------------------------------------------

  function setUpDelete() {
    const link = document.getElementById("delete-link");
    const dialog = document.getElementById("delete-dialog");
    if (!link || !dialog || typeof dialog.showModal !== "function") return;
    const button = el("button", {type: "button", className: "link-button danger-link", textContent: "Delete chat"});
    button.setAttribute("aria-haspopup", "dialog");
    link.replaceWith(button);
    button.addEventListener("click", () => dialog.showModal());
    // Focus goes back to the button at once: on Cancel here, on Escape by the browser itself
    // (a "close" listener would run a task later and could take focus from wherever it went next).
    dialog.querySelector("[data-close]").addEventListener("click", () => {
      dialog.close();
      button.focus();
    });
    // The dialog's form is a plain POST: the server deletes the chat and goes back to the list.
  }

  // ---- Start ---------------------------------------------------------------------------------

  for (const li of messages()) setUpActions(li);
  for (const body of list.querySelectorAll(".message-body.markdown")) enhanceCode(body);
  localTimes(list);
  setUpRename();
  setUpDelete();
  setUpModel();
  input.setAttribute("enterkeyhint", "send");
  input.rows = 1;
  try {
    const draft = window.localStorage.getItem(DRAFT_KEY);
    if (draft && !input.value) input.value = draft;
  } catch (error) {
    // No storage: nothing to restore.
  }
  grow(input);
  for (const retry of alerts.querySelectorAll(".error-actions")) {
    // The server's Retry form, run in place so the reply streams.
    const button = retry.querySelector("button");
    retry.addEventListener("submit", (event) => {
      event.preventDefault();
      regenerate();
    });
    button.type = "submit";
  }

  // Open at the message in the address (a version just switched to), else at the latest one.
  const target = window.location.hash.startsWith("#m-") ? document.getElementById(window.location.hash.slice(1)) : null;
  if (target) target.scrollIntoView({block: "center"});
  else toBottom();
  // A new chat is for typing in; on a touch screen an open chat is for reading first (no keyboard popping up).
  if (!messages().length || (!target && window.matchMedia("(pointer: fine)").matches)) input.focus({preventScroll: true});

  const all = messages();
  const last = all[all.length - 1];
  if (last && last.dataset.messageType === "assistant" && last.dataset.status === "generating") {
    // A reply still being generated (the page was reloaded): follow it to its end.
    const reply = newReply(last);
    setBusy(true);
    follow(reply).then((done) => settle(reply, done));
  }
})();
