// Starts Redoc with the nonce its CSS-in-JS styles need under the Content-Security-Policy.
"use strict";

(() => {
  const container = document.getElementById("redoc-container");
  Redoc.init(container.dataset.specUrl, {nonce: document.currentScript.nonce}, container);
})();
