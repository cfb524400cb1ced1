// The theme: light, dark or the system's, remembered in this browser. Loaded in <head>, not deferred,
// so the page is drawn in the chosen colours from the start.
(function () {
  "use strict";
  var KEY = "chatsite-theme";
  var CHOICES = ["system", "light", "dark"];
  var LABELS = {system: "System", light: "Light", dark: "Dark"};

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return CHOICES.indexOf(value) >= 0 ? value : "system";
    } catch (error) {
      return "system";
    }
  }

  function apply(choice) {
    if (choice === "system") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", choice);
  }

  apply(stored());
  // Pages style what scripts enhance (a chat list that folds away) only when scripts run.
  document.documentElement.classList.add("js");

  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("[data-theme-toggle]");
    var current = stored();
    function show(choice) {
      Array.prototype.forEach.call(buttons, function (button) {
        button.querySelector("[data-theme-label]").textContent = LABELS[choice];
        button.setAttribute("data-choice", choice);
      });
    }
    Array.prototype.forEach.call(buttons, function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        current = CHOICES[(CHOICES.indexOf(current) + 1) % CHOICES.length];
        try {
          window.localStorage.setItem(KEY, current);
        } catch (error) {
          // Private mode: the choice holds for this page only.
        }
        apply(current);
        show(current);
      });
    });
    show(current);
  });
})();
