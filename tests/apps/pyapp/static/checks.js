// Imported by app.js: module scripts load from the app's own origin.
export function report(id, run) {
  const el = document.getElementById(id);
  return Promise.resolve()
    .then(run)
    .then(
      (detail) => {
        el.dataset.state = "ok";
        el.textContent = String(detail);
      },
      (err) => {
        el.dataset.state = "error: " + (err && err.name ? err.name : "Error");
        el.textContent = String(err && err.message ? err.message : err);
      },
    );
}
