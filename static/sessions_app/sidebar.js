// The chat list beside every chat page: folds away on a phone, renames and deletes in place,
// and the shortcuts that reach it (Ctrl+K searches, Ctrl+Shift+O starts a new chat).
// Without this script the list is a plain list of links and forms.
(function () {
  "use strict";

  document.documentElement.classList.add("js");
  const app = document.getElementById("app");
  const sidebar = document.getElementById("sidebar");
  if (!app || !sidebar) return;
  const search = sidebar.querySelector("input[type=search]");
  const toggles = Array.from(document.querySelectorAll(".sidebar-toggle"));
  const phone = window.matchMedia("(max-width: 48rem)");

  function csrfToken() {
    const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
    if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  // ---- Folding on a phone ----------------------------------------------------------------------

  function setOpen(open) {
    app.classList.toggle("sidebar-open", open);
    for (const toggle of toggles) toggle.setAttribute("aria-expanded", String(open));
  }

  for (const toggle of toggles) {
    toggle.hidden = false;
    toggle.addEventListener("click", () => {
      const open = !app.classList.contains("sidebar-open");
      setOpen(open);
      if (open) (sidebar.querySelector("[aria-current=page]") || sidebar.querySelector("a, input")).focus();
    });
  }

  sidebar.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && phone.matches && app.classList.contains("sidebar-open")) {
      const menu = sidebar.querySelector("details.item-menu[open]");
      if (menu) return;
      setOpen(false);
      if (toggles[0]) toggles[0].focus();
    }
  });

  // ---- The chat's options (model, rename, export, delete) fold away on a phone too ------------

  const optionsToggle = document.querySelector(".options-toggle");
  const options = document.getElementById("chat-actions");
  if (optionsToggle && options) {
    optionsToggle.hidden = false;
    optionsToggle.addEventListener("click", () => {
      const open = !options.classList.contains("open");
      options.classList.toggle("open", open);
      optionsToggle.setAttribute("aria-expanded", String(open));
    });
  }

  // ---- Item menus: one open at a time, closed by Escape or a click elsewhere -------------------

  const menus = Array.from(sidebar.querySelectorAll("details.item-menu"));
  for (const menu of menus) {
    menu.addEventListener("toggle", () => {
      if (menu.open) for (const other of menus) if (other !== menu) other.open = false;
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open) {
        event.stopPropagation();
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
  }
  document.addEventListener("click", (event) => {
    for (const menu of menus) if (menu.open && !menu.contains(event.target)) menu.open = false;
    // A tap beside the open chat list on a phone closes it.
    const onToggle = toggles.some((toggle) => toggle.contains(event.target));
    if (phone.matches && app.classList.contains("sidebar-open") && !sidebar.contains(event.target) && !onToggle) setOpen(false);
  });

  // ---- Rename in place --------------------------------------------------------------------------

  for (const link of sidebar.querySelectorAll(".menu-rename")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const item = link.closest(".chat-item");
      const title = item.querySelector(".session-title");
      const menu = item.querySelector("details.item-menu");
      menu.open = false;
      const input = document.createElement("input");
      input.type = "text";
      input.className = "item-rename-input";
      input.maxLength = 200;
      input.value = link.dataset.title;
      input.setAttribute("aria-label", "New title (Enter saves, Escape cancels)");
      title.hidden = true;
      item.insertBefore(input, title);
      input.focus();
      input.select();
      let done = false;

      function close(newTitle) {
        if (done) return;
        done = true;
        input.remove();
        title.hidden = false;
        if (newTitle) {
          title.lastChild.textContent = newTitle;
          link.dataset.title = newTitle;
          for (const node of item.querySelectorAll("[data-title]")) node.dataset.title = newTitle;
          item.querySelector("summary").setAttribute("aria-label", `Actions for “${newTitle}”`);
          document.dispatchEvent(new CustomEvent("chatsite:renamed", {detail: {id: item.dataset.sessionId, title: newTitle}}));
        }
        title.focus();
      }

      input.addEventListener("keydown", async (key) => {
        if (key.key === "Escape") {
          key.preventDefault();
          key.stopPropagation();
          close(null);
        } else if (key.key === "Enter") {
          key.preventDefault();
          const value = input.value.trim();
          if (!value) return;
          const response = await fetch(`/api/chat-sessions/${item.dataset.sessionId}/update-title/`, {
            method: "POST",
            credentials: "same-origin",
            headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken()},
            body: JSON.stringify({title: value}),
          }).catch(() => null);
          if (response && response.ok) close((await response.json()).title);
          else input.setCustomValidity("Could not rename the chat. Try again."), input.reportValidity();
        }
      });
      input.addEventListener("blur", () => window.setTimeout(() => close(null), 150));
    });
  }

  // ---- Delete after confirming in the page's own dialog ----------------------------------------

  const dialog = document.getElementById("list-delete-dialog");
  if (dialog && typeof dialog.showModal === "function") {
    let opener = null;
    for (const link of sidebar.querySelectorAll(".menu-delete")) {
      link.setAttribute("aria-haspopup", "dialog");
      link.addEventListener("click", (event) => {
        event.preventDefault();
        opener = link.closest(".chat-item").querySelector("summary");
        dialog.querySelector("form").action = link.dataset.action;
        dialog.querySelector(".js-delete-title").textContent = link.dataset.title;
        link.closest("details").open = false;
        dialog.showModal();
      });
    }
    dialog.querySelector("[data-close]").addEventListener("click", () => {
      dialog.close();
      if (opener) opener.focus();
    });
  }

  // ---- Shortcuts ---------------------------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    const ctrl = event.ctrlKey || event.metaKey;
    if (ctrl && !event.shiftKey && !event.altKey && event.key.toLowerCase() === "k" && search) {
      event.preventDefault();
      if (phone.matches) setOpen(true);
      search.focus();
      search.select();
    } else if (ctrl && event.shiftKey && !event.altKey && event.key.toLowerCase() === "o") {
      event.preventDefault();
      const form = document.getElementById("new-chat-form");
      if (form) {
        setOpen(false);
        form.querySelector("select, input").focus();
      } else {
        window.location.assign(document.getElementById("new-chat-link").href);
      }
    }
  });
})();
