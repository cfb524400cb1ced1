// "Manage billing" asks the API for the payment provider's customer portal and goes there.
const manage = document.getElementById("manage-billing");
manage?.addEventListener("click", async () => {
  const error = document.querySelector(".billing-error");
  manage.disabled = true;
  error.hidden = true;
  try {
    const token = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/)?.[1] ?? "";
    const response = await fetch("/api/billing/portal/", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": decodeURIComponent(token) },
    });
    const body = await response.json();
    if (response.ok && body.url) {
      window.location.assign(body.url);
      return;
    }
    error.textContent = body.detail || "The billing page could not open. Try again.";
  } catch {
    error.textContent = "The billing page could not open: check your connection and try again.";
  }
  error.hidden = false;
  manage.disabled = false;
});
