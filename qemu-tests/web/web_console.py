#!/usr/bin/env python3
"""Drives Keel's web console in Debian's headless Chromium (chromium-driver + Selenium).

Run by qemu-tests/tests/web_console.rs against Keel in QEMU with the demo VM running:

    web_console.py URL TOKEN KERNEL_RELEASE ARTIFACT_DIR

Each step prints `STEP name ok (seconds)`; a failing step saves a screenshot and the page's
HTML under ARTIFACT_DIR, prints `FAIL step: reason` and exits 1. At the end it prints
`FIGURES {json}`: first-load size, time to interactive, console echo latency.
"""

import json
import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

URL, TOKEN, RELEASE, ARTIFACTS = sys.argv[1:5]
NEW_VM = "webtest"

os.makedirs(ARTIFACTS, exist_ok=True)
options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--window-size=1280,900", "--ignore-certificate-errors"]:
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
figures = {}


class StepFailed(Exception):
    pass


def run(name, fn):
    start = time.monotonic()
    try:
        fn()
    except Exception as e:  # every failure: screenshot, page, reason
        base = os.path.join(ARTIFACTS, name)
        try:
            driver.save_screenshot(base + ".png")
            with open(base + ".html", "w") as f:
                f.write(driver.page_source)
            with open(base + ".console.txt", "w") as f:
                for entry in driver.get_log("browser"):
                    f.write(json.dumps(entry) + "\n")
        except Exception:
            pass
        detail = str(e) if isinstance(e, StepFailed) else traceback.format_exc()
        print(f"FAIL {name}: {detail.strip()} (screenshot {base}.png)", flush=True)
        driver.quit()
        sys.exit(1)
    print(f"STEP {name} ok ({time.monotonic() - start:.1f} s)", flush=True)


def wait(what, predicate, timeout=30.0):
    # The page redraws the VM table when it changes: an element read mid-redraw is stale.
    waiter = WebDriverWait(driver, timeout, poll_frequency=0.1,
                           ignored_exceptions=[StaleElementReferenceException])
    try:
        return waiter.until(lambda d: predicate())
    except TimeoutException:
        raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def el(id_):
    return driver.find_element(By.ID, id_)


def text(id_):
    return el(id_).text


def row(vm):
    rows = driver.find_elements(By.CSS_SELECTOR, f'#vm-table tbody tr[data-vm="{vm}"]')
    return rows[0] if rows else None


def state(vm):
    r = row(vm)
    return r.find_element(By.CSS_SELECTOR, "td.state").text if r else None


def terminal_text():
    return driver.execute_script(
        "const r = document.querySelector('#terminal .xterm-rows');"
        "return r ? [...r.children].map(c => c.textContent).join('\\n') : '';")


def fetch_in_page(method, path, body=None, headers=None):
    """A fetch from the page's own context (same origin, the page's CSP)."""
    return driver.execute_async_script(
        """const [method, path, body, headers, done] = arguments;
        fetch(path, {method, body, headers, cache: 'no-store'}).then(async r => {
          const h = {}; r.headers.forEach((v, k) => h[k] = v);
          done({status: r.status, headers: h, body: await r.text()});
        }).catch(e => done({status: 0, headers: {}, body: String(e)}));""",
        method, path, body, headers or {})


def load_page():
    driver.get(URL)
    wait("the page's script", lambda: driver.execute_script("return document.body.dataset.ready"))
    figures["time_to_interactive_ms"] = round(driver.execute_script(
        "return Number(document.body.dataset.readyMs)"))
    first = driver.execute_script("""
        const all = [performance.getEntriesByType('navigation')[0],
                     ...performance.getEntriesByType('resource')];
        return all.map(e => [e.name, e.transferSize, e.encodedBodySize, e.decodedBodySize]);""")
    figures["first_load_files"] = len(first)
    figures["first_load_transfer_bytes"] = sum(f[1] for f in first)
    figures["first_load_compressed_body_bytes"] = sum(f[2] for f in first)
    figures["first_load_uncompressed_bytes"] = sum(f[3] for f in first)
    if any(f[2] >= f[3] for f in first if f[3] > 1024):
        raise StepFailed(f"an asset came uncompressed: {first}")


def security_headers():
    r = fetch_in_page("GET", "/")
    h = r["headers"]
    csp = h.get("content-security-policy", "")
    for needle in ["script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"]:
        if needle not in csp:
            raise StepFailed(f"CSP lacks {needle!r}: {csp!r}")
    if "unsafe-inline" in csp.split("script-src")[1].split(";")[0]:
        raise StepFailed(f"CSP allows inline script: {csp!r}")
    if h.get("x-content-type-options") != "nosniff" or h.get("referrer-policy") != "no-referrer":
        raise StepFailed(f"headers: {h}")
    etag = h.get("etag")
    again = fetch_in_page("GET", "/", headers={"If-None-Match": etag})
    if again["status"] != 304:
        raise StepFailed(f"If-None-Match {etag} answered {again['status']}, not 304")
    figures["csp"] = csp


def wrong_token():
    el("token").send_keys("not-the-token")
    el("signin-button").click()
    wait("the wrong-token error", lambda: "Wrong token" in text("signin-error"))
    if driver.execute_script("return sessionStorage.getItem('keel-token')"):
        raise StepFailed("a wrong token was kept")
    if "token" in driver.current_url:
        raise StepFailed(f"token in the URL: {driver.current_url}")


def sign_in():
    el("token").clear()
    el("token").send_keys(TOKEN)
    el("signin-button").click()
    wait("the dashboard", lambda: el("view-dashboard").is_displayed() and "Version" in text("system"))
    if TOKEN in driver.current_url:
        raise StepFailed("token in the URL")


def dashboard():
    facts = text("system")
    for label in ["Hostname", "Version", "Uptime", "Virtualization", "CPUs", "Memory", "Network address"]:
        if label not in facts:
            raise StepFailed(f"the dashboard lacks {label}: {facts!r}")
    # Two polls make a rate: the demo VM's exits per second, and memory in use.
    wait("the exits graph's demo series", lambda: "demo:" in text("legend-exits"), 20)
    wait("the memory graph", lambda: "in use:" in text("legend-mem"))
    driver.save_screenshot(os.path.join(ARTIFACTS, "dashboard.png"))


def demo_running():
    driver.find_element(By.CSS_SELECTOR, '#nav button[data-view="vms"]').click()
    wait("demo running in the VM list", lambda: (state("demo") or "").startswith(("running", "idle")))


def console():
    row("demo").find_element(By.CSS_SELECTOR, 'button[data-action="console"]').click()
    wait("the terminal", lambda: driver.find_elements(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea"))
    wait("the console to connect", lambda: text("console-status").startswith("connected"))
    figures["console_transport"] = text("console-status")
    box = driver.find_element(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea")
    box.send_keys(Keys.ENTER)
    wait("the shell's prompt", lambda: "# " in terminal_text() or "$ " in terminal_text(), 60)
    box.send_keys("uname -r" + Keys.ENTER)
    wait(f"{RELEASE} in the terminal", lambda: terminal_text().count(RELEASE) >= 1
         and terminal_text().rstrip().endswith(("#", "$")), 60)
    # Echo latency: one character typed, until the terminal shows it.
    samples = []
    typed = "echo "
    box.send_keys(typed)
    wait("the echo", lambda: terminal_text().rstrip().endswith("echo"), 20)
    for ch in "keelweb":
        typed += ch
        start = time.monotonic()
        box.send_keys(ch)
        wait(f"the echo of {ch!r}", lambda: terminal_text().rstrip().endswith(typed), 20)
        samples.append((time.monotonic() - start) * 1000)
    box.send_keys(Keys.ENTER)
    wait("the echo command's output", lambda: "\nkeelweb" in terminal_text() or terminal_text().count("keelweb") >= 2, 20)
    samples.sort()
    figures["echo_latency_ms_median"] = round(samples[len(samples) // 2], 1)
    figures["echo_latency_ms_max"] = round(samples[-1], 1)
    # Resize-safe: a narrower window refits the terminal without losing its lines.
    driver.set_window_size(700, 900)
    time.sleep(0.5)
    if RELEASE not in terminal_text() and "keelweb" not in terminal_text():
        raise StepFailed("the terminal lost its lines on resize")
    driver.set_window_size(1280, 900)
    el("console-close").click()


def stop_demo():
    row("demo").find_element(By.CSS_SELECTOR, 'button[data-action="stop"]').click()
    wait("demo stopping or stopped", lambda: (state("demo") or "").startswith(("stopping", "stopped")), 30)
    wait("demo stopped", lambda: (state("demo") or "").startswith("stopped"), 90)


def fill_form(memory):
    fields = {"name": NEW_VM, "memory_mib": str(memory), "vcpus": "1", "kernel": "vmlinuz",
              "initrd": "demo-initramfs.cpio", "cmdline": "console=ttyS0 loglevel=4"}
    for key, value in fields.items():
        box = el("vm-field-" + key)
        box.clear()
        box.send_keys(value)


def create_invalid():
    el("vm-new").click()
    wait("the VM form", lambda: el("vm-form").is_displayed() and driver.find_elements(By.ID, "vm-field-memory_mib"))
    fill_form(7)
    el("vm-save").click()
    wait("the error at memory_mib", lambda: text("vm-error-memory_mib") != "")
    figures["memory_error"] = text("vm-error-memory_mib")
    if row(NEW_VM):
        raise StepFailed("the invalid VM was created")


def create_valid():
    fill_form(128)
    el("vm-save").click()
    wait("the form to close", lambda: not el("vm-form").is_displayed(), 30)
    wait(f"{NEW_VM} running", lambda: (state(NEW_VM) or "").startswith(("running", "idle")), 30)


def stale_etag():
    driver.find_element(By.CSS_SELECTOR, '#nav button[data-view="config"]').click()
    wait("the configuration", lambda: text("config-etag").startswith('"'))
    loaded = el("config-text").get_attribute("value")
    if NEW_VM not in loaded:
        raise StepFailed("the new VM is not in the configuration")
    # Another operator changes it behind the page's back.
    doc = json.loads(loaded)
    for vm in doc["vms"]:
        if vm["name"] == NEW_VM:
            vm["cmdline"] = "console=ttyS0 loglevel=5"
    r = fetch_in_page("PUT", "/api/v1/config", json.dumps(doc), {
        "Authorization": "Bearer " + TOKEN, "Content-Type": "application/json",
        "If-Match": text("config-etag")})
    if r["status"] != 200:
        raise StepFailed(f"the other operator's PUT: {r}")
    el("config-save").click()
    wait("the conflict", lambda: "Conflict" in text("config-error"))
    figures["conflict_message"] = text("config-error")


def events():
    driver.find_element(By.CSS_SELECTOR, '#nav button[data-view="events"]').click()
    def seen():
        rows = [tr.text for tr in driver.find_elements(By.CSS_SELECTOR, "#event-table tbody tr")]
        return (any("vm-stopped" in r and "demo" in r for r in rows)
                and any("vm-started" in r and NEW_VM in r for r in rows)
                and any("config-saved" in r for r in rows))
    wait("demo's stop, the new VM's start and the saved configuration in the event log", seen, 20)


def phone_width():
    driver.set_window_size(390, 844)
    driver.find_element(By.CSS_SELECTOR, '#nav button[data-view="vms"]').click()
    time.sleep(0.3)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    if overflow > 0:
        raise StepFailed(f"the page is {overflow} px wider than a phone")


def no_csp_violations():
    bad = [e["message"] for e in driver.get_log("browser")
           if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]
    if bad:
        raise StepFailed(f"CSP violations: {bad}")


def sign_out():
    el("sign-out").click()
    wait("the sign-in form", lambda: el("view-signin").is_displayed())
    if driver.execute_script("return sessionStorage.getItem('keel-token')"):
        raise StepFailed("the token stayed in sessionStorage")


for name, fn in [("load", load_page), ("security-headers", security_headers),
                 ("wrong-token", wrong_token), ("sign-in", sign_in), ("dashboard", dashboard),
                 ("demo-running", demo_running),
                 ("console", console), ("stop-demo", stop_demo), ("create-invalid", create_invalid),
                 ("create-valid", create_valid), ("stale-etag", stale_etag), ("events", events),
                 ("phone-width", phone_width), ("no-csp-violations", no_csp_violations),
                 ("sign-out", sign_out)]:
    run(name, fn)
driver.quit()
print("FIGURES " + json.dumps(figures), flush=True)
