// "Choose" asks the API for a checkout and sends the browser there; the form posts itself if this fails to load.
document.querySelectorAll(".choose-form").forEach((form) => {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    const error = document.querySelector(".pricing-error");
    button.disabled = true;
    error.hidden = true;
    try {
      const response = await fetch("/api/billing/checkout/", {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value,
        },
        body: JSON.stringify({ subscription_type_id: Number(form.elements.subscription_type_id.value) }),
      });
      const body = await response.json();
      if (response.status === 201 && body.url) {
        window.location.assign(body.url);
        return;
      }
      error.textContent = body.detail || "The checkout could not start. Try again.";
    } catch {
      error.textContent = "The checkout could not start: check your connection and try again.";
    }
    error.hidden = false;
    button.disabled = false;
  });
});
