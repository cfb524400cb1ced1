// The API keys section of /account/: create a key (shown once, with a copy button) and revoke keys.
(function () {
  "use strict";
  const section = document.getElementById("api-keys");
  if (!section) return;
  const url = section.dataset.url;
  const form = document.getElementById("key-create");
  const errorBox = document.getElementById("key-error");
  const created = document.getElementById("key-created");
  const value = document.getElementById("key-value");
  const copy = document.getElementById("key-copy");
  const table = document.getElementById("key-table");
  const empty = document.getElementById("key-empty");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = !text;
  }

  async function call(method, path, body) {
    const response = await fetch(path, {
      method: method,
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((data && data.detail) || "Something went wrong (HTTP " + response.status + "). Try again.");
    }
    return data;
  }

  function cell(row, text, className, label) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (label) td.dataset.label = label;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function addRow(key) {
    const row = document.createElement("tr");
    row.dataset.keyId = key.id;
    cell(row, key.name + (key.store_chats ? " (kept as chats)" : ""), "key-name");
    const prefix = cell(row, "", null, "Key");
    const code = document.createElement("code");
    code.textContent = key.prefix + "…";
    prefix.appendChild(code);
    const when = new Date(key.created_at);
    cell(row, when.toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" }), null, "Created");
    cell(row, "Never", null, "Last used");
    cell(row, "0 msg · 0 tokens · $0.00", "num", "Usage");
    const actions = cell(row, "", "key-actions");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "danger small";
    button.dataset.revoke = key.id;
    button.dataset.name = key.name;
    button.textContent = "Revoke";
    actions.appendChild(button);
    table.tBodies[0].prepend(row);
    table.hidden = false;
    empty.hidden = true;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    if (!name) {
      showError("Give the key a name, so you can tell it apart later.");
      form.elements.name.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    showError("");
    try {
      const key = await call("POST", url, { name: name, store_chats: form.elements.store_chats.checked });
      value.value = key.key;
      created.hidden = false;
      copy.textContent = "Copy";
      addRow(key);
      form.reset();
      value.focus();
      value.select();
    } catch (error) {
      showError(error.message);
    } finally {
      button.disabled = false;
    }
  });

  copy.addEventListener("click", async function () {
    value.select();
    try {
      await navigator.clipboard.writeText(value.value);
    } catch (error) {
      document.execCommand("copy"); // where the clipboard API is refused (plain http)
    }
    copy.textContent = "Copied";
  });

  table.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-revoke]");
    if (!button) return;
    if (!window.confirm("Revoke the key “" + button.dataset.name + "”? Programs using it stop working at once.")) return;
    button.disabled = true;
    showError("");
    try {
      await call("DELETE", url + button.dataset.revoke + "/");
      button.closest("tr").remove();
      if (!table.tBodies[0].rows.length) {
        table.hidden = true;
        empty.hidden = false;
      }
    } catch (error) {
      button.disabled = false;
      showError(error.message);
    }
  });
})();
