//! Named VMs over the HTTP API, end to end: `keel.img` with the flat test guests `counter.bin`
//! and `echo.bin` in its guest store, booted writable under SeaBIOS on `-M q35` with
//! virtio-net (`hostfwd` to 127.0.0.1 only).
//!
//! One boot walks the whole lifecycle: define a VM (`POST /api/v1/vms`), list it as
//! `defined`, start it, read its `tick` lines, stop it (forced and graceful), restart it, run
//! a second VM beside it, type into the echo guest's console and read the answer, drop one
//! from the configuration while it runs (kept until it stops), destroy the other. Bad names, states and bodies get their status and change nothing.
//!
//! Saved VMs ride along: the paused counter is saved over HTTP and listed; once it has been
//! destroyed, the saved counter is restored as a new VM, paused with an empty console, and
//! resumed by its number, and its ticks go on from where the save left them; then the saved
//! VM is deleted. Saving a running VM or under a taken name is 409, restoring an unknown
//! saved VM 404.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_qemu_tests::guests::{self, COUNTER, ECHO};
use keel_qemu_tests::http::{self, Response};
use keel_qemu_tests::{Machine, Qemu, appliance_image, artifacts, check};

/// Builds `keel.img` into `dir` with `counter.bin` and `echo.bin` in the guest store.
fn image_with_guests(dir: &Path) -> PathBuf {
    let a = artifacts();
    let set = guests::build_guests().expect("building the test guests");
    let store = dir.join("store");
    std::fs::create_dir(&store).unwrap();
    for name in [COUNTER, ECHO] {
        let path = set.path(name);
        std::fs::copy(&path, store.join(path.file_name().unwrap())).unwrap();
    }
    let image = dir.join("keel.img");
    let config = keel_image::tls_cert::default_config(&a.api_token).to_json_pretty();
    appliance_image(
        Some(&store),
        &config,
        &[],
        &image,
        "the image with the guest store",
    );
    image
}

struct Appliance {
    m: Machine,
    port: u16,
    token: String,
}

impl Appliance {
    fn boot(image: &Path) -> Appliance {
        let a = artifacts();
        let port = http::free_port();
        let mut m = Qemu::seabios(image)
            .machine("q35")
            .defmt_elf(&a.elf)
            .writable_disk()
            .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
            .spawn()
            .unwrap();
        m.expect_banner();
        http::await_api(&mut m, port);
        Appliance {
            m,
            port,
            token: a.api_token.clone(),
        }
    }

    fn send(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        http::request(self.port, method, path, Some(&self.token), body).expect(method)
    }

    fn get(&self, path: &str) -> Response {
        self.send("GET", path, None)
    }

    /// `POST /api/v1/vms/{vm}/console` with `bytes` as `text/plain`.
    fn type_into(&self, vm: &str, bytes: &[u8]) -> Response {
        let mut req = format!(
            "POST /api/v1/vms/{vm}/console HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.token,
            bytes.len()
        )
        .into_bytes();
        req.extend_from_slice(bytes);
        http::raw(self.port, &req).expect("POST console")
    }

    /// Checks `r` has `status` and a body containing every needle.
    fn expect(&self, what: &str, r: &Response, status: u16, needles: &[&str]) {
        check!(
            self.m,
            r.status == status,
            "{what}: got {} (wanted {status}): {}",
            r.status,
            r.body
        );
        for needle in needles {
            check!(
                self.m,
                r.body.contains(needle),
                "{what}: no {needle:?} in {}",
                r.body
            );
        }
    }

    /// Polls `GET path` until its body contains `needle`; returns that body.
    fn wait_for(&self, path: &str, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let r = self.get(path);
            if r.status == 200 && r.body.contains(needle) {
                return r.body;
            }
            check!(
                self.m,
                Instant::now() < deadline,
                "no {needle:?} from GET {path} within {within:?}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const COUNTER_VM: &str =
    r#"{"name":"counter","kernel":"counter.bin","memory_mib":16,"cmdline":"","autostart":false}"#;
const ECHO_VM: &str = r#"{"name":"echo","kernel":"echo.bin","memory_mib":16,"vcpus":2}"#;

#[test]
fn named_vms_over_http_from_create_to_destroy() {
    let tmp = tempfile::tempdir().unwrap();
    let image = image_with_guests(tmp.path());
    let mut app = Appliance::boot(&image);
    let list = app.get("/api/v1/vms");
    app.expect("empty list", &list, 200, &["{\"vms\":[]}"]);

    // Define: 201 with its URL, state `defined`, listed.
    let created = app.send("POST", "/api/v1/vms", Some(COUNTER_VM));
    app.expect(
        "create counter",
        &created,
        201,
        &[
            "\"name\":\"counter\"",
            "\"number\":1",
            "\"state\":\"defined\"",
            "\"kernel\":\"counter.bin\"",
        ],
    );
    check!(
        app.m,
        created.header("location") == Some("/api/v1/vms/counter"),
        "Location: {created:?}"
    );
    let listed = app.get("/api/v1/vms");
    app.expect(
        "list after create",
        &listed,
        200,
        &[
            "\"name\":\"counter\"",
            "\"state\":\"defined\"",
            "\"configured\":true",
        ],
    );

    // Refused requests change nothing.
    let refused: Vec<(&str, Response, u16, &str)> = vec![
        (
            "duplicate",
            app.send("POST", "/api/v1/vms", Some(COUNTER_VM)),
            409,
            "exists already",
        ),
        (
            "invalid definition",
            app.send(
                "POST",
                "/api/v1/vms",
                Some(r#"{"name":"Bad_Name","kernel":"counter.bin","memory_mib":1}"#),
            ),
            422,
            "\"errors\":[{\"path\":\"name\"",
        ),
        (
            "not JSON",
            app.send("POST", "/api/v1/vms", Some("{")),
            400,
            "invalid request body",
        ),
        (
            "bad name",
            app.get("/api/v1/vms/Bad_Name"),
            400,
            "neither a VM number nor a VM name",
        ),
        (
            "unknown name",
            app.get("/api/v1/vms/nosuch"),
            404,
            "no VM named 'nosuch'",
        ),
        (
            "unknown number",
            app.get("/api/v1/vms/42"),
            404,
            "no VM named '42'",
        ),
        (
            "stop a defined VM",
            app.send("POST", "/api/v1/vms/counter/stop", None),
            409,
            "is not running",
        ),
        (
            "pause a defined VM",
            app.send("POST", "/api/v1/vms/counter/pause", None),
            409,
            "cannot pause VM counter: it is not running (defined)",
        ),
        (
            "type into a defined VM",
            app.type_into("counter", b"x"),
            409,
            "is not running",
        ),
        (
            "destroy an unknown VM",
            app.send("DELETE", "/api/v1/vms/nosuch", None),
            404,
            "no VM named",
        ),
        (
            "force and timeout",
            app.send(
                "POST",
                "/api/v1/vms/counter/stop",
                Some(r#"{"force":true,"timeout_s":3}"#),
            ),
            422,
            "exclude each other",
        ),
        (
            "start with a body",
            app.send("POST", "/api/v1/vms/counter/start", Some("{}")),
            400,
            "takes no request body",
        ),
    ];
    for (what, r, status, needle) in &refused {
        app.expect(what, r, *status, &[needle, "\"error\""]);
    }
    let unchanged = app.get("/api/v1/vms");
    check!(
        app.m,
        unchanged.body == listed.body,
        "the list changed:\nbefore {}\nafter  {}",
        listed.body,
        unchanged.body
    );

    // Start; the console shows its ticks.
    let started = app.send("POST", "/api/v1/vms/counter/start", None);
    app.expect("start counter", &started, 200, &["\"state\":\"running\""]);
    let again = app.send("POST", "/api/v1/vms/counter/start", None);
    app.expect("start it again", &again, 409, &["already running"]);
    app.wait_for(
        "/api/v1/vms/counter/console?since=0",
        "tick 3",
        Duration::from_secs(30),
    );

    // Pause: 200, state paused, the console stands still; invalid transitions are 409 and
    // change nothing; resume goes on.
    let paused = app.send("POST", "/api/v1/vms/counter/pause", None);
    app.expect("pause counter", &paused, 200, &["\"state\":\"paused\""]);
    let again = app.send("POST", "/api/v1/vms/counter/pause", None);
    app.expect(
        "pause it again",
        &again,
        409,
        &["cannot pause VM counter: it is already paused", "\"error\""],
    );
    let graceful = app.send("POST", "/api/v1/vms/counter/stop", None);
    app.expect(
        "graceful stop of a paused VM",
        &graceful,
        409,
        &["is paused and cannot answer the power button"],
    );
    let restart = app.send("POST", "/api/v1/vms/counter/restart", None);
    app.expect(
        "restart of a paused VM",
        &restart,
        409,
        &["is paused and cannot answer the power button"],
    );
    let held = app.get("/api/v1/vms/counter/console?since=0");
    std::thread::sleep(Duration::from_secs(2));
    let still = app.get("/api/v1/vms/counter/console?since=0");
    check!(
        app.m,
        held.body == still.body,
        "a paused VM's console grew:\nbefore {}\nafter  {}",
        held.body,
        still.body
    );
    let listed = app.get("/api/v1/vms/counter");
    app.expect(
        "paused in its view",
        &listed,
        200,
        &["\"state\":\"paused\""],
    );

    // Save the paused counter: 201 with the saved VM and its URL; listed; the name is taken
    // now; a bad name is 422.
    let saved = app.send("POST", "/api/v1/vms/counter/save", None);
    app.expect(
        "save counter",
        &saved,
        201,
        &[
            "\"name\":\"counter\"",
            "\"vm\":\"counter\"",
            "\"memory_mib\":16",
            "\"vcpus\":1",
            "\"backend\":\"svm\"",
        ],
    );
    check!(
        app.m,
        saved.header("location") == Some("/api/v1/saved/counter"),
        "Location: {saved:?}"
    );
    let again = app.send("POST", "/api/v1/vms/1/save", Some(r#"{"name":"counter"}"#));
    app.expect(
        "save under a taken name",
        &again,
        409,
        &["a saved VM named 'counter' exists", "\"error\""],
    );
    let bad = app.send(
        "POST",
        "/api/v1/vms/counter/save",
        Some(r#"{"name":"Bad_Name"}"#),
    );
    app.expect(
        "save under a bad name",
        &bad,
        422,
        &["cannot name a saved VM"],
    );
    let list = app.get("/api/v1/saved");
    app.expect(
        "saved list",
        &list,
        200,
        &["{\"saved\":[{\"name\":\"counter\",\"vm\":\"counter\""],
    );
    let one = app.get("/api/v1/saved/counter");
    app.expect("one saved VM", &one, 200, &["\"size_bytes\":"]);
    // The highest tick before the save: the restored counter goes on after it.
    let last_tick = ticks(&held.body).into_iter().max();
    check!(
        app.m,
        last_tick.is_some_and(|t| t >= 3),
        "no tick 3 before the pause: {}",
        held.body
    );
    let resumed = app.send("POST", "/api/v1/vms/counter/resume", None);
    app.expect("resume counter", &resumed, 200, &["\"state\":\"running\""]);
    let again = app.send("POST", "/api/v1/vms/counter/resume", None);
    app.expect(
        "resume a running VM",
        &again,
        409,
        &["cannot resume VM counter: it is not paused"],
    );
    let running = app.send(
        "POST",
        "/api/v1/vms/counter/save",
        Some(r#"{"name":"other"}"#),
    );
    app.expect(
        "save a running VM",
        &running,
        409,
        &["VM counter is running: pause it first ('vm pause counter')"],
    );
    let nosuch = app.send("POST", "/api/v1/vms/nosuch/pause", None);
    app.expect(
        "pause an unknown VM",
        &nosuch,
        404,
        &["no VM named 'nosuch'"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.get("/api/v1/vms/counter/console?since=0").body == still.body {
        check!(
            app.m,
            Instant::now() < deadline,
            "the resumed counter printed nothing in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Forced stop: 200, stopped at once.
    let stopped = app.send(
        "POST",
        "/api/v1/vms/counter/stop",
        Some(r#"{"force":true}"#),
    );
    app.expect(
        "force stop",
        &stopped,
        200,
        &["\"state\":\"stopped\"", "stopped by the operator"],
    );
    let again = app.send("POST", "/api/v1/vms/1/stop", Some(r#"{"force":true}"#));
    app.expect("stop it again", &again, 409, &["is not running"]);

    // Restart of a stopped VM starts it at once; of a running one, once it has stopped.
    let restarted = app.send("POST", "/api/v1/vms/counter/restart", None);
    app.expect(
        "restart stopped",
        &restarted,
        200,
        &["\"state\":\"running\""],
    );
    app.wait_for(
        "/api/v1/vms/counter/console",
        "tick 1",
        Duration::from_secs(30),
    );
    let restarting = app.send(
        "POST",
        "/api/v1/vms/counter/restart",
        Some(r#"{"force":true}"#),
    );
    app.expect("restart running", &restarting, 202, &[]);
    app.wait_for(
        "/api/v1/vms/counter",
        "\"state\":\"running\"",
        Duration::from_secs(30),
    );

    // A second VM beside it; both run at once.
    let echo = app.send("POST", "/api/v1/vms", Some(ECHO_VM));
    app.expect(
        "create echo (2 vCPUs)",
        &echo,
        201,
        &["\"number\":2", "\"vcpus\":2"],
    );
    let started = app.send("POST", "/api/v1/vms/2/start", None);
    app.expect(
        "start echo by number",
        &started,
        200,
        &["\"name\":\"echo\""],
    );
    app.wait_for(
        "/api/v1/vms/echo/console",
        "echo guest: ready",
        Duration::from_secs(30),
    );
    let before = app.get("/api/v1/vms/counter");
    let typed = app.type_into("echo", b"hi\r");
    app.expect(
        "type into echo",
        &typed,
        200,
        &["\"accepted\":3", "\"dropped\":0"],
    );
    app.wait_for("/api/v1/vms/echo/console", "HI", Duration::from_secs(30));
    let list = app.get("/api/v1/vms");
    for name in ["counter", "echo"] {
        let entry = format!("\"name\":\"{name}\"");
        check!(
            app.m,
            list.body.contains(&entry),
            "{entry} not in {}",
            list.body
        );
    }
    check!(
        app.m,
        !list.body.contains("\"stopped\"") && !list.body.contains("\"defined\""),
        "both should run: {}",
        list.body
    );
    let console_bytes = |body: &str| -> u64 {
        let at = body.find("\"console_bytes\":").expect("console_bytes") + 16;
        body[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    // The counter goes on counting beside the echo guest.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = app.get("/api/v1/vms/counter");
        if console_bytes(&after.body) > console_bytes(&before.body) {
            break;
        }
        check!(
            app.m,
            Instant::now() < deadline,
            "the counter stopped counting while echo ran:\n{}\n{}",
            before.body,
            after.body
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A graceful stop of a guest without ACPI: 202, stopping, forced off after the timeout.
    let stopping = app.send(
        "POST",
        "/api/v1/vms/counter/stop",
        Some(r#"{"timeout_s":1}"#),
    );
    app.expect("graceful stop", &stopping, 202, &["\"state\":\"stopping\""]);
    app.wait_for(
        "/api/v1/vms/counter",
        "\"state\":\"stopped\"",
        Duration::from_secs(30),
    );

    // A configuration replaced without `echo` while it runs: it keeps running (nothing stops
    // a guest behind the operator's back), and is forgotten once it stops.
    let config = app.get("/api/v1/config");
    let etag = config
        .header("etag")
        .expect("GET /api/v1/config has an ETag")
        .to_owned();
    let without_echo = regex::Regex::new(r#"(?s),\s*\{[^{}]*"name": "echo"[^{}]*\}"#)
        .unwrap()
        .replace(&config.body, "")
        .into_owned();
    check!(
        app.m,
        without_echo != config.body && without_echo.contains("\"counter\""),
        "could not take echo out of the configuration:\n{}",
        config.body
    );
    let put = format!(
        "PUT /api/v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nIf-Match: {etag}\r\n\
         Content-Length: {}\r\n\r\n{without_echo}",
        app.token,
        without_echo.len()
    );
    let replaced = http::raw(app.port, put.as_bytes()).expect("PUT /api/v1/config");
    app.expect("config without echo", &replaced, 200, &["\"counter\""]);
    app.wait_for("/api/v1/vms", "\"echo\"", Duration::from_secs(10));
    let still = app.get("/api/v1/vms/echo");
    app.expect("echo still runs", &still, 200, &["\"state\":\"running\""]);
    let stopped = app.send("POST", "/api/v1/vms/echo/stop", Some(r#"{"force":true}"#));
    app.expect("stop the undefined echo", &stopped, 200, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/api/v1/vms/echo").status != 404 {
        check!(
            app.m,
            Instant::now() < deadline,
            "echo, stopped and no longer defined, is still listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Destroy the other: gone from the list and from the configuration.
    let destroyed = app.send("DELETE", "/api/v1/vms/counter", None);
    app.expect("destroy", &destroyed, 200, &["\"name\":\"counter\""]);
    let gone = app.get("/api/v1/vms/counter");
    app.expect("destroyed VM", &gone, 404, &[]);
    let list = app.get("/api/v1/vms");
    app.expect("empty again", &list, 200, &["{\"vms\":[]}"]);
    let config = app.get("/api/v1/config");
    app.expect("config", &config, 200, &["\"vms\": []"]);
    // The console agrees (its notices of the HTTP saves may come first).
    app.m.type_line("vm list");
    app.m.expect("no VMs: define one with 'vm create'");

    // The saved counter outlives its VM: restore it as a new VM, paused, with an empty
    // console; resumed by its number, it counts on from where it was saved.
    let unknown = app.send("POST", "/api/v1/saved/nosuch/restore", None);
    app.expect(
        "restore an unknown saved VM",
        &unknown,
        404,
        &["no saved VM named 'nosuch'"],
    );
    let restored = app.send("POST", "/api/v1/saved/counter/restore", None);
    app.expect(
        "restore counter",
        &restored,
        201,
        &[
            "\"state\":\"paused\"",
            "\"source\":\"saved:counter\"",
            "\"configured\":false",
            "\"console_bytes\":0",
        ],
    );
    let location = restored.header("location").unwrap_or_default().to_owned();
    let number = location.strip_prefix("/api/v1/vms/").unwrap_or_default();
    check!(
        app.m,
        !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && restored.body.contains(&format!("\"number\":{number}")),
        "Location of the restored VM: {restored:?}"
    );
    let console = format!("/api/v1/vms/{number}/console?since=0");
    std::thread::sleep(Duration::from_secs(1));
    let empty = app.get(&console);
    app.expect(
        "the restored VM's console, paused",
        &empty,
        200,
        &["\"data\":\"\"", "\"next\":0"],
    );
    let resumed = app.send("POST", &format!("/api/v1/vms/{number}/resume"), None);
    app.expect(
        "resume the restored VM",
        &resumed,
        200,
        &["\"state\":\"running\""],
    );
    let output = app.wait_for(&console, "tick ", Duration::from_secs(30));
    let after = ticks(&output);
    check!(
        app.m,
        after.first().copied() > last_tick,
        "the restored counter did not go on from tick {last_tick:?}: {output}"
    );
    let stopped = app.send(
        "POST",
        &format!("/api/v1/vms/{number}/stop"),
        Some(r#"{"force":true}"#),
    );
    app.expect("stop the restored VM", &stopped, 200, &[]);

    // Delete: 204, then gone.
    let deleted = app.send("DELETE", "/api/v1/saved/counter", None);
    app.expect("delete the saved VM", &deleted, 204, &[]);
    let gone = app.get("/api/v1/saved/counter");
    app.expect(
        "deleted saved VM",
        &gone,
        404,
        &["no saved VM named 'counter'"],
    );
    let gone = app.send("DELETE", "/api/v1/saved/counter", None);
    app.expect("delete it again", &gone, 404, &[]);
    let gone = app.send("POST", "/api/v1/saved/counter/restore", None);
    app.expect("restore the deleted VM", &gone, 404, &[]);
    let list = app.get("/api/v1/saved");
    app.expect("no saved VMs", &list, 200, &["{\"saved\":[]}"]);
    app.m.type_line("saved ls");
    app.m.expect("no saved VMs");
}

/// The tick numbers in a console chunk, in order (`tick 4\ntick 5` is `[4, 5]`).
fn ticks(body: &str) -> Vec<u64> {
    regex::Regex::new(r"tick (\d+)")
        .unwrap()
        .captures_iter(body)
        .filter_map(|c| c[1].parse().ok())
        .collect()
}
