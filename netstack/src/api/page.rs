//! The web page at `/`: one static HTML document that drives the API from the browser.
//!
//! It asks for the bearer token (kept in the tab's `sessionStorage` only), then shows
//! `GET /api/v1/system` and the VM list from `GET /api/v1/vms`. Everything it shows is
//! inserted as text, never as HTML. Served by the router in [`super`].

/// The page.
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keel</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-top: 1rem; }
td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
#error { color: #b00; }
</style>
</head>
<body>
<h1>Keel</h1>
<form id="auth">
<label>API token <input id="token" type="password" autocomplete="off" size="40"></label>
<button type="submit">Show VMs</button>
</form>
<p id="error"></p>
<p id="system"></p>
<table id="vms" hidden>
<thead><tr><th>#</th><th>name</th><th>source</th><th>memory</th><th>vCPUs</th><th>state</th><th>stop reason</th></tr></thead>
<tbody></tbody>
</table>
<p><a href="/api/v1/openapi.json">API description (OpenAPI)</a></p>
<script>
const $ = (id) => document.getElementById(id);
async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + $("token").value } });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}
async function load() {
  $("error").textContent = "";
  try {
    sessionStorage.setItem("keel-token", $("token").value);
    const sys = await api("/api/v1/system");
    $("system").textContent = "Keel " + sys.version + ", " + sys.cpus + " CPU(s), " +
      sys.virtualization + ", address " + (sys.network.address || "none");
    const list = await api("/api/v1/vms");
    const body = $("vms").querySelector("tbody");
    body.replaceChildren();
    for (const vm of list.vms) {
      const row = body.insertRow();
      for (const v of [vm.number, vm.name, vm.source, vm.memory_mib + " MiB", vm.vcpus, vm.state, vm.stop_reason || ""]) {
        row.insertCell().textContent = String(v);
      }
    }
    $("vms").hidden = false;
  } catch (e) {
    $("error").textContent = e.message;
  }
}
$("auth").addEventListener("submit", (e) => { e.preventDefault(); load(); });
const saved = sessionStorage.getItem("keel-token");
if (saved) { $("token").value = saved; load(); }
</script>
</body>
</html>
"#;
