// Chat list: offer only the models that fit the chosen chatbot (text or image).
// Without this script every model is listed and the server refuses a mismatch.
(function () {
  "use strict";
  var form = document.getElementById("new-chat-form");
  if (!form) return;
  var chatbot = form.elements.chatbot;
  var model = form.elements.ai_model;
  if (!chatbot || !model) return;

  function fit() {
    var picked = chatbot.options[chatbot.selectedIndex];
    var kind = picked ? picked.getAttribute("data-type") : null;
    var firstFit = null;
    Array.prototype.forEach.call(model.options, function (option) {
      var fits = !kind || option.getAttribute("data-type") === kind;
      option.hidden = !fits;
      option.disabled = !fits;
      if (fits && firstFit === null) firstFit = option;
    });
    var current = model.options[model.selectedIndex];
    if ((!current || current.disabled) && firstFit) firstFit.selected = true;
    model.setCustomValidity(firstFit ? "" : "No model fits this chatbot yet.");
  }

  chatbot.addEventListener("change", fit);
  fit();
  // Come here to start a chat (Ctrl+Shift+O, or New chat): begin at its first choice.
  if (/[?&]new=1/.test(window.location.search)) chatbot.focus();
})();
