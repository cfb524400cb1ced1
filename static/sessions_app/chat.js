// The conversation page: streams replies, edits, regenerates, renames and deletes in place.
// Without this script every form on the page still works as a plain HTML form.
//
// Safety rule: text typed by people (messages, titles, chatbot names) is only ever inserted
// with textContent; the only HTML inserted is the server's nh3-sanitized `content_html`.
(function () {
  "use strict";

  const root = document.getElementById("chat");
  if (!root || !window.fetch || !window.TextDecoder || !("body" in Response.prototype)) return;

  const api = `/api/chat-sessions/${root.dataset.sessionId}/`;
  const botName = root.dataset.botName;
  const accountUrl = root.dataset.accountUrl;
  const list = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const input = composer.querySelector("textarea");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const regenerateForm = document.getElementById("regenerate-form");
  const regenerateButton = document.getElementById("regenerate-button");
  const alerts = document.getElementById("chat-alerts");
  const statusRegion = document.getElementById("chat-status");
  const heading = root.querySelector(".chat-header h1");
  const STATUS_LABELS = {generating: "Generating", partial: "Partial", stopped: "Stopped", failed: "Failed"};
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

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  }

  function keepBottom(wasNearBottom) {
    if (wasNearBottom) window.scrollTo(0, document.documentElement.scrollHeight);
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

  // ---- Messages ------------------------------------------------------------------------------

  function messages() {
    return Array.from(list.querySelectorAll(".message[data-message-type]"));
  }

  function activeMessages() {
    return messages().filter((li) => li.dataset.disabled !== "true");
  }

  function tag(li, className, text) {
    const meta = li.querySelector(".message-meta");
    let span = meta.querySelector(`.${className}`);
    if (!span) {
      span = el("span", {className: `tag ${className}`});
      const edit = meta.querySelector(".edit-button, .edit-link");
      meta.insertBefore(span, edit);
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

  function markDisabled(li) {
    if (!li || li.dataset.disabled === "true") return;
    li.dataset.disabled = "true";
    li.classList.add("message-disabled");
    li.setAttribute("aria-disabled", "true");
    tag(li, "tag-replaced", "replaced");
    const edit = li.querySelector(".edit-button, .edit-link");
    if (edit) edit.remove();
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
    const body = el("div", {className: "message-body plain"});
    li.append(meta, body);
    const empty = document.getElementById("messages-empty");
    if (empty) empty.remove();
    list.append(li);
    if (li.dataset.status !== "complete") setStatus(li, li.dataset.status);
    return li;
  }

  function addUserMessage(data) {
    const wasNearBottom = nearBottom();
    const li = newMessage("user", data);
    li.querySelector(".message-body").textContent = data.content;
    li.querySelector(".message-meta").append(editButton(li));
    keepBottom(wasNearBottom);
    return li;
  }

  // A reply being shown: its element (made when its first event arrives), and how far it has come
  // in characters as the server counts them (the events' ids), to resume from after a lost connection.
  function newReply(li) {
    return {li: li || null, id: li ? li.dataset.messageId : "", offset: li ? Number(li.dataset.offset || 0) : 0, error: null, text: null};
  }

  function attachReply(reply) {
    if (reply.li) return;
    const wasNearBottom = nearBottom();
    reply.li = newMessage("assistant", {status: "generating"});
    keepBottom(wasNearBottom);
  }

  function appendDelta(reply, content) {
    attachReply(reply);
    const body = reply.li.querySelector(".message-body");
    if (!reply.text) {
      reply.text = document.createTextNode("");
      body.append(reply.text);
    }
    const wasNearBottom = nearBottom();
    reply.text.appendData(content);
    keepBottom(wasNearBottom);
  }

  function finishReply(reply, data) {
    attachReply(reply);
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
    reply.text = null;
    enhanceCode(body);
    keepBottom(wasNearBottom);
  }

  function failReply(reply, error) {
    attachReply(reply);
    if (error.partial) return;
    setStatus(reply.li, "failed");
    const body = reply.li.querySelector(".message-body");
    if (!body.textContent.trim()) body.hidden = true;
    reply.li.append(el("p", {className: "message-error", textContent: error.detail}));
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
    settle(reply, done);
  }

  function settle(reply, done) {
    if (reply.error) {
      failReply(reply, reply.error);
      showError(alerts, reply.error, {retry: true});
      announce("The reply failed.");
    } else if (!done) {
      showError(alerts, {detail: "The connection was lost before the reply finished. Reload the page to see it."});
    } else {
      if (done.title && done.title !== heading.textContent) setTitle(done.title);
      announce(done.status === "stopped" ? "Reply stopped." : "Reply finished.");
    }
    setBusy(false);
  }

  // ---- Errors --------------------------------------------------------------------------------

  function clearErrors(container) {
    container.replaceChildren();
  }

  // What went wrong and what to do about it, inside `container`.
  function showError(container, error, options) {
    const box = el("div", {className: "error-box"});
    box.setAttribute("role", "alert");
    if (error.code === "quota_exceeded") {
      const limit = String(error.limit || "usage limit").replace(/_/g, " ");
      const counts = error.limit_value !== undefined ? ` (${error.used} of ${error.limit_value})` : "";
      box.append(el("p", {}, el("strong", {textContent: `You have reached your limit: ${limit}${counts}.`})));
      const resets = error.resets_at ? new Date(error.resets_at) : null;
      const when = resets && !Number.isNaN(resets.getTime())
        ? el("time", {className: "resets-at", dateTime: error.resets_at, textContent: resetFormat.format(resets)})
        : "later";
      box.append(el("p", {}, "It resets at ", when, ". ",
        el("a", {href: accountUrl, textContent: "See your limits on your account page"}), "."));
    } else {
      box.append(el("p", {}, el("strong", {textContent: error.detail})));
      if (error.code === "unverified" || error.code === "no_subscription") {
        box.append(el("p", {}, el("a", {href: accountUrl, textContent: "Open your account page"}), "."));
      }
    }
    if (options && options.retry) {
      box.append(el("p", {textContent: "Your message is kept in the chat: press Retry to ask again."}));
      const retry = el("button", {type: "button", className: "secondary", textContent: "Retry"});
      retry.addEventListener("click", () => regenerate());
      box.append(el("p", {className: "error-actions"}, retry));
    }
    container.replaceChildren(box);
    return box;
  }

  // ---- Busy state ----------------------------------------------------------------------------

  function setBusy(on) {
    busy = on;
    sendButton.disabled = on;
    stopButton.hidden = !on;
    stopButton.disabled = false;
    composer.setAttribute("aria-busy", on ? "true" : "false");
    regenerateButton.disabled = on;
    regenerateButton.hidden = !activeMessages().length;
    for (const button of list.querySelectorAll(".edit-button")) button.disabled = on;
    for (const retry of alerts.querySelectorAll(".error-actions button")) retry.disabled = on;
  }

  // ---- Send ----------------------------------------------------------------------------------

  // POST that answers with a stream; on a network error or a refusal, say why, end busy, return null.
  async function streamStart(path, body) {
    let response;
    try {
      response = await request("POST", `${api}${path}`, body);
    } catch (error) {
      setBusy(false);
      showError(alerts, OFFLINE);
      return null;
    }
    if (!response.ok) {
      setBusy(false);
      showError(alerts, await errorOf(response));
      return null;
    }
    return response;
  }

  async function send() {
    if (busy) return;
    const text = input.value;
    if (!text.trim()) {
      showError(alerts, {detail: "Write a message first."});
      input.focus();
      return;
    }
    clearErrors(alerts);
    setBusy(true);
    // Refused before anything was saved: the typed text stays in the box.
    const response = await streamStart("send/", {message: text, stream: true});
    if (!response) return;
    input.value = "";
    grow(input);
    announce("Message sent. Generating the reply.");
    const reply = newReply();
    await runReply(response, reply, {
      userMessage(data) {
        addUserMessage(data);
        attachReply(reply);
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
  input.addEventListener("input", () => grow(input));

  // ---- Stop ----------------------------------------------------------------------------------

  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    try {
      const response = await request("POST", `${api}stop/`);
      if (!response.ok) showError(alerts, await errorOf(response));
    } catch (error) {
      showError(alerts, OFFLINE);
    }
    // The reply's stream then ends by itself, with the partial text and status "stopped".
  });

  // ---- Regenerate ----------------------------------------------------------------------------

  async function regenerate() {
    if (busy) return;
    clearErrors(alerts);
    setBusy(true);
    const response = await streamStart("regenerate/", {stream: true});
    if (!response) return;
    const active = activeMessages();
    const last = active[active.length - 1];
    if (last && last.dataset.messageType === "assistant") markDisabled(last);
    announce("Generating a new reply.");
    const reply = newReply();
    attachReply(reply);
    await runReply(response, reply);
  }

  regenerateForm.addEventListener("submit", (event) => {
    event.preventDefault();
    regenerate();
  });

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
    const area = el("textarea", {id: areaId, value: body.innerText, maxLength: input.maxLength, rows: 3});
    const errors = el("div", {className: "edit-errors"});
    const save = el("button", {type: "submit", textContent: "Save"});
    const cancel = el("button", {type: "button", className: "secondary", textContent: "Cancel"});
    const form = el("form", {className: "edit-form"},
      el("label", {htmlFor: areaId, textContent: "Edit message"}),
      area,
      el("p", {className: "muted", textContent: "Saving replaces everything after this message with a new reply."}),
      errors,
      el("div", {className: "button-row"}, save, cancel));
    body.hidden = true;
    button.hidden = true;
    li.append(form);
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

  async function saveEdit(li, text, editor) {
    if (busy) return;
    if (!text.trim()) {
      showError(editor.errors, {detail: "The message is empty."});
      return;
    }
    clearErrors(alerts);
    clearErrors(editor.errors);
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
      showError(editor.errors, response ? await errorOf(response) : OFFLINE);
      return;
    }
    // The edit is saved: show it, and grey out everything it replaces at once.
    editor.close();
    li.querySelector(".message-body").textContent = text;
    tag(li, "tag-edited", "edited");
    const all = messages();
    for (const later of all.slice(all.indexOf(li) + 1)) markDisabled(later);
    announce("Message edited. Generating a new reply.");
    const reply = newReply();
    attachReply(reply);
    await runReply(response, reply, {
      edited(data) {
        for (const id of data.disabled_message_ids || []) {
          markDisabled(list.querySelector(`[data-message-id="${CSS.escape(id)}"]`));
        }
      },
    });
  }

  // ---- Code blocks ---------------------------------------------------------------------------

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
      const wrapper = el("div", {className: "code-block"});
      pre.replaceWith(wrapper);
      const button = el("button", {type: "button", className: "copy-button", textContent: "Copy"});
      button.addEventListener("click", async () => {
        const copied = await copyText(pre.textContent);
        button.textContent = copied ? "Copied" : "Copy failed";
        announce(copied ? "Code copied." : "Could not copy: select the code and copy it by hand.");
        window.setTimeout(() => { button.textContent = "Copy"; }, 2000);
      });
      wrapper.append(button, pre);
    }
  }

  // ---- Rename --------------------------------------------------------------------------------

  function setTitle(title) {
    heading.textContent = title;
    document.title = `${title} · chatsite`;
    for (const span of root.querySelectorAll(".js-title")) span.textContent = title;
    const field = document.querySelector("#rename-form input[name=title]");
    if (field) field.value = title;
  }

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

  for (const link of list.querySelectorAll(".edit-link")) link.replaceWith(editButton(link.closest(".message")));
  for (const body of list.querySelectorAll(".message-body.markdown")) enhanceCode(body);
  localTimes(list);
  setUpRename();
  setUpDelete();
  input.setAttribute("enterkeyhint", "send");
  input.rows = 1;
  grow(input);

  const active = activeMessages();
  const last = active[active.length - 1];
  if (last && last.dataset.messageType === "assistant" && last.dataset.status === "generating") {
    // A reply still being generated (the page was reloaded): follow it to its end.
    const reply = newReply(last);
    const body = last.querySelector(".message-body");
    reply.text = document.createTextNode("");
    body.append(reply.text);
    setBusy(true);
    follow(reply).then((done) => settle(reply, done));
  } else if (last && last.dataset.status === "failed" && !alerts.children.length) {
    const problem = last.querySelector(".message-error");
    showError(alerts, {detail: problem ? problem.textContent : "The last reply failed."}, {retry: true});
  }
})();
