import "./style.css";
import { message } from "./message.js";

function render(text) {
  document.querySelector("#message").textContent = text;
}

render(message);
// Set once per page load: survives a hot update, lost on a full reload.
window.__agentbuildLoads = (window.__agentbuildLoads || 0) + 1;
document.body.dataset.moduleRan = "yes";

if (import.meta.hot) {
  // Swap the message in place when message.js changes (no reload).
  import.meta.hot.accept("./message.js", (mod) => {
    if (mod) render(mod.message);
  });
}
