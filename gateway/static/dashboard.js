/*
 * The link to the farm's dashboard (Grafana) in the top bar, shown only when the gateway has one
 * configured: GET /page-config answers {dashboard_url} (DASHBOARD_URL; null when unset). Public, no key.
 */
"use strict";

(async () => {
  let config;
  try {
    const response = await fetch("/page-config", { headers: { accept: "application/json" } });
    if (!response.ok) return;
    config = await response.json();
  } catch { return; } // an older gateway, or none: no link
  let url;
  try { url = new URL(config.dashboard_url || "", window.location.href); } catch { return; }
  if (!config.dashboard_url || !["http:", "https:"].includes(url.protocol)) return;
  const link = document.querySelector("#dashboard-link");
  link.href = url.href;
  link.hidden = false;
})();
