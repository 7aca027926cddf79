import { report } from "/static/checks.js";

const checks = [
  report("module", () => "ran"),
  report("get", async () => {
    const response = await fetch("/api/data");
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    return "items " + data.items.join(",") + "; cookies " + data.cookies.join(",");
  }),
  report("post", async () => {
    const response = await fetch("/api/echo", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ hello: "world" }),
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    if (data.echo.hello !== "world") throw new Error("bad echo");
    return "echo " + data.echo.hello + "; own cookie " + data.own_cookie;
  }),
  report(
    "ws",
    () =>
      new Promise((resolve, reject) => {
        const scheme = location.protocol === "https:" ? "wss:" : "ws:";
        const ws = new WebSocket(scheme + "//" + location.host + "/ws");
        ws.onopen = () => ws.send("ping");
        ws.onmessage = (event) => {
          resolve(event.data);
          ws.close();
        };
        ws.onerror = () => reject(new Error("WebSocket error"));
      }),
  ),
  report("storage", () => {
    localStorage.setItem("pyapp", "stored");
    return localStorage.getItem("pyapp");
  }),
  report("cookie", () => {
    document.cookie = "pyapp_client=set-by-script; path=/; SameSite=Lax";
    if (!document.cookie.includes("pyapp_client=set-by-script")) {
      throw new Error("the cookie did not stick");
    }
    return document.cookie;
  }),
];
Promise.all(checks).then(() => {
  document.body.dataset.done = "yes";
});
