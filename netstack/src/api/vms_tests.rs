//! The VM routes against the mock: list, create, show, destroy, start, stop, restart,
//! console output and input, ad-hoc runs from modules; every error status (bad name 400,
//! bad body 400/422, unknown 404, wrong state 409, 413, 415, 503), and that a refused request
//! changes nothing.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde_json::{Value, json};

use super::super::mock::{CONSOLE_KEEP, INPUT_ROOM, Mock};
use super::{body, error_of, get, send, send_raw, typed};
use crate::http::response::Response;

fn post(mock: &mut Mock, path: &str, json_body: &str) -> Response {
    send(mock, "POST", path, Some(json_body))
}

fn names(mock: &mut Mock) -> Vec<String> {
    let list = body(&get(mock, "/api/v1/vms"));
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| format!("{} {}", vm["name"], vm["state"]))
        .collect()
}

#[test]
fn list_shows_defined_running_and_ad_hoc_vms() {
    let mut mock = Mock::default();
    let r = get(&mut mock, "/api/v1/vms");
    assert_eq!(r.status, 200);
    assert_eq!(
        body(&r),
        json!({"vms": [
            {
                "name": "web", "number": 1, "configured": true, "source": "store:vmlinuz-6.1",
                "state": "running", "stop_reason": null, "memory_mib": 256, "vcpus": 1,
                "uptime_s": 12, "autostart": true
            },
            {
                "name": "2", "number": 2, "configured": false, "source": "linux.bzImage",
                "state": "stopped", "stop_reason": "guest shut down", "memory_mib": 64,
                "vcpus": 1, "uptime_s": null, "autostart": false
            },
            {
                "name": "db", "number": 3, "configured": true, "source": "store:vmlinuz-6.1",
                "state": "defined", "stop_reason": null, "memory_mib": 512, "vcpus": 1,
                "uptime_s": null, "autostart": false
            }
        ]})
    );
}

#[test]
fn show_by_name_or_number() {
    let mut mock = Mock::default();
    let web = body(&get(&mut mock, "/api/v1/vms/web"));
    assert_eq!(
        web,
        json!({
            "name": "web", "number": 1, "configured": true, "source": "store:vmlinuz-6.1",
            "state": "running", "stop_reason": null, "memory_mib": 256, "vcpus": 1,
            "uptime_s": 12, "autostart": true, "exits": {"hlt": 1, "io": 3}, "backend": "svm",
            "console_bytes": 21, "run_ms": 0, "kernel": "vmlinuz-6.1", "firmware": null,
            "initrd": "initrd.cpio", "cmdline": "console=ttyS0", "disks": [], "nics": []
        })
    );
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/1")), web);
    // Leading zeros are the same number.
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/001")), web);
    let ad_hoc = body(&get(&mut mock, "/api/v1/vms/2"));
    assert_eq!(ad_hoc["kernel"], Value::Null);
    assert_eq!(ad_hoc["cmdline"], Value::Null);
    assert_eq!(ad_hoc["source"], "linux.bzImage");
    let db = body(&get(&mut mock, "/api/v1/vms/db"));
    assert_eq!(
        (&db["state"], &db["backend"], &db["exits"]),
        (&json!("defined"), &Value::Null, &json!({}))
    );
    // An ad-hoc VM has no name but its number.
    let r = get(&mut mock, "/api/v1/vms/nosuch");
    assert_eq!(
        error_of(&r),
        (
            404,
            String::from("no VM named 'nosuch': GET /api/v1/vms lists them")
        )
    );
    assert_eq!(get(&mut mock, "/api/v1/vms/77").status, 404);
    assert!(mock.changes.is_empty());
}

#[test]
fn create_defines_and_persists() {
    let mut mock = Mock::default();
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"cache","kernel":"vmlinuz-6.1","memory_mib":64,"cmdline":"quiet","autostart":true}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/api/v1/vms/cache"));
    let vm = body(&r);
    assert_eq!(
        (&vm["name"], &vm["number"], &vm["state"], &vm["memory_mib"]),
        (&json!("cache"), &json!(4), &json!("defined"), &json!(64))
    );
    assert_eq!(vm["autostart"], true);
    assert_eq!(vm["cmdline"], "quiet");
    assert_eq!(mock.changes, ["create cache"]);
    assert_eq!(mock.generation, 2);
    let saved = mock.config.vms.last().unwrap();
    assert_eq!((saved.name.as_str(), saved.vcpus), ("cache", 1));
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/cache")), vm);
}

#[test]
fn create_with_disks_and_a_firmware() {
    let mut mock = Mock::default();
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"data","kernel":"vmlinuz-6.1","memory_mib":64,"disks":[
            {"file":"data.img","serial":"data-01"},{"partition":"big","readonly":true}]}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let vm = body(&r);
    assert_eq!(
        vm["disks"],
        json!([
            {"file": "data.img", "readonly": false, "serial": "data-01"},
            {"partition": "big", "readonly": true}
        ])
    );
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/data")), vm);
    let saved = mock.config.vms.last().unwrap();
    assert_eq!(saved.disks.len(), 2);
    assert!(saved.disks[1].readonly);
    // The store file is looked for when the VM starts, not when it is defined.
    let r = post(&mut mock, "/api/v1/vms/data/start", "");
    assert_eq!(
        error_of(&r),
        (
            422,
            String::from(
                "VM data: its disk 'data.img' is not in the guest store: put it there (keel \
                 build --disk or --store) or remove the disk from the VM"
            )
        )
    );
    // A firmware instead of a kernel.
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"deb","firmware":"hypervisor-fw","memory_mib":512,"disks":[{"file":"debian.img"}]}"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let vm = body(&r);
    assert_eq!(
        (&vm["kernel"], &vm["firmware"], &vm["source"]),
        (
            &Value::Null,
            &json!("hypervisor-fw"),
            &json!("store:hypervisor-fw")
        )
    );
    assert_eq!(mock.changes, ["create data", "create deb"]);
}

#[test]
fn create_refuses_bad_disks_with_their_paths() {
    let mut mock = Mock::default();
    let before = mock.config.clone();
    let nine: Vec<String> = (0..9)
        .map(|n| format!(r#"{{"file":"d{n}.img"}}"#))
        .collect();
    let too_many = format!(
        r#"{{"name":"a","kernel":"k","memory_mib":64,"disks":[{}]}}"#,
        nine.join(",")
    );
    for (json_body, problems) in [
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"disks":[{"file":"a.img"},{"file":"a.img","readonly":true}]}"#,
            json!([{"path": "disks[1].file", "message": "\"a.img\" is already attached as vms[0].disks[0]"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"disks":[{"file":"a/b"},{"partition":"Big"}]}"#,
            json!([
                {"path": "disks[0].file", "message": "must be a plain file name in the guest store, without '/' or '\\'"},
                {"path": "disks[1].partition", "message": "a partition name may hold only lowercase letters, digits and '-'"}
            ]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"disks":[{"file":"a.img","serial":"012345678901234567890"}]}"#,
            json!([{"path": "disks[0].serial", "message": "must be at most 20 bytes (it has 21)"}]),
        ),
        (
            &too_many,
            json!([{"path": "disks", "message": "at most 8 disks per VM (it lists 9): remove some, or combine them into one larger disk"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"disks":["a.img"]}"#,
            json!([{"path": "disks[0]", "message": "expected an object (a TOML table), found string \"a.img\""}]),
        ),
        (
            r#"{"name":"a","kernel":"k","firmware":"fw","memory_mib":64}"#,
            json!([{"path": "firmware", "message": "must not be set together with kernel: a VM boots either a kernel or a firmware (remove one)"}]),
        ),
    ] {
        let r = post(&mut mock, "/api/v1/vms", json_body);
        let (status, message) = error_of(&r);
        assert_eq!(status, 422, "{json_body}: {message}");
        assert_eq!(body(&r)["errors"], problems, "{json_body}");
    }
    assert!(mock.changes.is_empty());
    assert_eq!(mock.config, before);
}

#[test]
fn create_refuses_bad_definitions_and_changes_nothing() {
    let mut mock = Mock::default();
    let before = mock.config.clone();
    // Not a JSON object: 400.
    for (json_body, expected) in [
        ("", "request body must be a VM definition"),
        ("{", "invalid request body: EOF while parsing"),
        ("[]", "expected a JSON object, not an array"),
        ("null", "expected a JSON object, not null"),
        (r#"{"name":"a"} {}"#, "trailing characters"),
    ] {
        let (status, message) = error_of(&post(&mut mock, "/api/v1/vms", json_body));
        assert_eq!(status, 400, "{json_body}: {message}");
        assert!(message.contains(expected), "{json_body}: {message}");
    }
    // Well-formed but not a valid definition: 422 with every problem, paths inside it.
    for (json_body, problems) in [
        (
            r#"{"name":"a","kernel":"k"}"#,
            json!([{"path": "memory_mib", "message": "required field is missing"}]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":64,"cpus":2}"#,
            json!([{
                "path": "cpus",
                "message": "unknown field; expected one of: name, vcpus, memory_mib, kernel, \
                    firmware, initrd, cmdline, disks, nics, autostart, cpuid, devices"
            }]),
        ),
        (
            r#"{"name":"a","kernel":"k","memory_mib":"64"}"#,
            json!([{"path": "memory_mib", "message": "expected a non-negative integer, found string \"64\""}]),
        ),
        (
            r#"{"name":"Web_1","kernel":"","memory_mib":8}"#,
            json!([
                {"path": "name", "message": "may hold only lowercase letters, digits and '-'"},
                {"path": "memory_mib", "message": "must be between 16 and 65536"},
                {"path": "kernel", "message": "must name a file in the guest store (it is empty)"}
            ]),
        ),
    ] {
        let r = post(&mut mock, "/api/v1/vms", json_body);
        let (status, message) = error_of(&r);
        assert_eq!(status, 422, "{json_body}: {message}");
        assert!(
            message.starts_with("invalid VM definition")
                && message.ends_with("(nothing was changed)"),
            "{message}"
        );
        assert_eq!(body(&r)["errors"], problems, "{json_body}");
    }
    // A name that is taken: 409.
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"db","kernel":"vmlinuz-6.1","memory_mib":64}"#,
    );
    assert_eq!(
        error_of(&r),
        (
            409,
            String::from(
                "a VM named db exists already: GET /api/v1/vms/db shows it (nothing was changed)"
            )
        )
    );
    // No boot disk to save to: 503.
    mock.store = None;
    let r = post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"new","kernel":"vmlinuz-6.1","memory_mib":64}"#,
    );
    assert_eq!(
        error_of(&r),
        (
            503,
            String::from("cannot save the configuration: no boot disk found")
        )
    );
    assert!(mock.changes.is_empty());
    assert_eq!(mock.config, before);
    assert_eq!(mock.vms.len(), 3);
}

#[test]
fn destroy_removes_named_vms_only() {
    let mut mock = Mock::default();
    // By number, while it runs.
    let r = send(&mut mock, "DELETE", "/api/v1/vms/1", None);
    assert_eq!(
        (r.status, body(&r)),
        (200, json!({"name": "web", "generation": 2}))
    );
    assert_eq!(get(&mut mock, "/api/v1/vms/web").status, 404);
    assert!(mock.config.vms.iter().all(|v| v.name != "web"));
    // Gone: 404 the second time.
    let r = send(&mut mock, "DELETE", "/api/v1/vms/web", None);
    assert_eq!(r.status, 404);
    // An ad-hoc VM is not in the configuration: 409.
    let (status, message) = error_of(&send(&mut mock, "DELETE", "/api/v1/vms/2", None));
    assert_eq!(status, 409);
    assert!(message.contains("stop it instead"), "{message}");
    // No disk: 503, and the VM stays.
    mock.store = None;
    let r = send(&mut mock, "DELETE", "/api/v1/vms/db", None);
    assert_eq!(r.status, 503);
    assert_eq!(get(&mut mock, "/api/v1/vms/db").status, 200);
    assert_eq!(mock.changes, ["destroy web"]);
}

#[test]
fn start_stop_restart() {
    let mut mock = Mock::default();
    let r = post(&mut mock, "/api/v1/vms/db/start", "");
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["state"], "running");
    assert_eq!(body(&r)["backend"], "svm");
    // Running already: 409.
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/db/start", ""));
    assert_eq!(
        (status, message.as_str()),
        (409, "VM db is already running")
    );
    // A graceful stop completes later: 202, stopping.
    let r = post(&mut mock, "/api/v1/vms/db/stop", "");
    assert_eq!(
        (r.status, body(&r)["state"].clone()),
        (202, json!("stopping"))
    );
    let r = post(&mut mock, "/api/v1/vms/web/stop", r#"{"timeout_s": 5}"#);
    assert_eq!(r.status, 202);
    // Forced: 200, stopped.
    let r = post(&mut mock, "/api/v1/vms/3/stop", r#"{"force": true}"#);
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["state"], "stopped");
    assert_eq!(body(&r)["stop_reason"], "stopped by the operator");
    assert_eq!(body(&r)["uptime_s"], Value::Null);
    // Not running: 409.
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/db/stop", ""));
    assert_eq!(
        (status, message.as_str()),
        (409, "VM db is not running (stopped)")
    );
    // Restart of a stopped VM starts it at once: 200; of a running one: 202.
    let r = post(&mut mock, "/api/v1/vms/db/restart", "");
    assert_eq!(
        (r.status, body(&r)["state"].clone()),
        (200, json!("running"))
    );
    let r = post(&mut mock, "/api/v1/vms/db/restart", r#"{"force":true}"#);
    assert_eq!(
        (r.status, body(&r)["state"].clone()),
        (202, json!("stopping"))
    );
    // Ad-hoc VMs neither start nor restart from a definition: 409.
    for action in ["start", "restart"] {
        let (status, message) = error_of(&post(&mut mock, &format!("/api/v1/vms/2/{action}"), ""));
        assert_eq!(status, 409, "{action}");
        assert!(message.contains("not in the configuration"), "{message}");
    }
    // A VM that cannot start: 422.
    post(
        &mut mock,
        "/api/v1/vms",
        r#"{"name":"broken","kernel":"missing.bin","memory_mib":64}"#,
    );
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/broken/start", ""));
    assert_eq!(status, 422);
    assert!(message.contains("cannot read its kernel"), "{message}");
    assert_eq!(
        mock.changes,
        [
            "start db",
            "stop db Graceful { timeout_s: 30 }",
            "stop web Graceful { timeout_s: 5 }",
            "stop db Force",
            "start db",
            "restart db Force",
            "create broken",
        ]
    );
}

#[test]
fn pause_and_resume() {
    let mut mock = Mock::default();
    let r = post(&mut mock, "/api/v1/vms/web/pause", "");
    assert_eq!(
        (r.status, body(&r)["state"].clone()),
        (200, json!("paused"))
    );
    assert_eq!(names(&mut mock)[0], "\"web\" \"paused\"");
    // Paused already: 409, and nothing changes.
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/1/pause", ""));
    assert_eq!(
        (status, message.as_str()),
        (409, "VM web is already paused")
    );
    let r = post(&mut mock, "/api/v1/vms/web/resume", "");
    assert_eq!(
        (r.status, body(&r)["state"].clone()),
        (200, json!("running"))
    );
    assert_eq!(mock.changes, ["pause web", "resume web"]);
    mock.changes.clear();
    // Invalid transitions: 409 with the state, and nothing changes.
    for (path, expected) in [
        ("/api/v1/vms/web/resume", "VM web is not paused (running)"),
        ("/api/v1/vms/db/pause", "VM db is not running (defined)"),
        ("/api/v1/vms/db/resume", "VM db is not paused (defined)"),
        ("/api/v1/vms/2/pause", "VM 2 is not running (stopped)"),
        ("/api/v1/vms/2/resume", "VM 2 is not paused (stopped)"),
    ] {
        let (status, message) = error_of(&post(&mut mock, path, ""));
        assert_eq!((status, message.as_str()), (409, expected), "{path}");
    }
    let r = post(&mut mock, "/api/v1/vms/web/stop", "");
    assert_eq!(r.status, 202);
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/web/pause", ""));
    assert_eq!(
        (status, message.as_str()),
        (409, "VM web is not running (stopping)")
    );
    mock.changes.clear();
    // Unknown VMs are 404, malformed keys and bodies 400.
    for action in ["pause", "resume"] {
        let (status, message) = error_of(&post(
            &mut mock,
            &format!("/api/v1/vms/nosuch/{action}"),
            "",
        ));
        assert_eq!((status, message.as_str()), (404, "no VM named 'nosuch'"));
        let (status, message) = error_of(&post(&mut mock, &format!("/api/v1/vms/9/{action}"), ""));
        assert_eq!((status, message.as_str()), (404, "no VM named '9'"));
        let (status, message) =
            error_of(&post(&mut mock, &format!("/api/v1/vms/1/{action}"), "{}"));
        assert_eq!(
            (status, message),
            (
                400,
                format!(
                    "POST /api/v1/vms/{{name}}/{action} takes no request body (send Content-Length: 0)"
                )
            )
        );
        let (status, _) = error_of(&post(&mut mock, &format!("/api/v1/vms/Web/{action}"), ""));
        assert_eq!(status, 400);
    }
    assert!(mock.changes.is_empty());
}

#[test]
fn stop_bodies_are_checked_and_change_nothing() {
    let mut mock = Mock::default();
    for path in ["/api/v1/vms/web/stop", "/api/v1/vms/web/restart"] {
        for (json_body, status, expected) in [
            ("[]", 400, "expected a JSON object, not an array"),
            ("{", 400, "invalid request body"),
            (r#"{"force":"yes"}"#, 400, "invalid type: string \"yes\""),
            (r#"{"now":true}"#, 400, "unknown field `now`"),
            (r#"{"timeout_s":-1}"#, 400, "invalid request body"),
            (
                r#"{"force":true,"timeout_s":5}"#,
                422,
                "force and timeout_s exclude each other",
            ),
            (
                r#"{"timeout_s":0}"#,
                422,
                "timeout_s must be from 1 to 3600",
            ),
            (
                r#"{"timeout_s":3601}"#,
                422,
                "timeout_s must be from 1 to 3600",
            ),
        ] {
            let (got, message) = error_of(&post(&mut mock, path, json_body));
            assert_eq!(got, status, "{path} {json_body}: {message}");
            assert!(message.contains(expected), "{path} {json_body}: {message}");
        }
    }
    // start takes no body.
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/db/start", "{}"));
    assert_eq!(status, 400);
    assert!(message.contains("takes no request body"), "{message}");
    assert!(mock.changes.is_empty());
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/web"))["state"], "running");
}

#[test]
fn bad_names_are_400_before_anything_else() {
    let mut mock = Mock::default();
    let before = names(&mut mock);
    for name in [
        "Web",
        "-1",
        "+1",
        "1.0",
        "%31",
        "0x1",
        "web_1",
        "a b",
        "-web",
        "4294967296",
        "99999999999",
    ] {
        let requests: [(&str, String, Option<&str>); 8] = [
            ("GET", format!("/api/v1/vms/{name}"), None),
            ("DELETE", format!("/api/v1/vms/{name}"), None),
            ("POST", format!("/api/v1/vms/{name}/start"), Some("")),
            ("POST", format!("/api/v1/vms/{name}/stop"), Some("")),
            ("POST", format!("/api/v1/vms/{name}/restart"), Some("")),
            ("GET", format!("/api/v1/vms/{name}/console"), None),
            ("POST", format!("/api/v1/vms/{name}/console"), Some("x")),
            ("GET", format!("/api/v1/vms/{name}/console?since=x"), None),
        ];
        for (method, path, json_body) in requests {
            let r = if method == "POST" && path.ends_with("/console") {
                send_raw(&mut mock, &typed(method, &path, "text/plain", b"x"))
            } else {
                send(&mut mock, method, &path, json_body)
            };
            let (status, message) = error_of(&r);
            assert_eq!(status, 400, "{method} {path}: {message}");
        }
    }
    let (_, message) = error_of(&get(&mut mock, "/api/v1/vms/Web"));
    assert_eq!(
        message,
        "'Web' is neither a VM number nor a VM name (a name may hold only lowercase letters, \
         digits and '-')"
    );
    let (_, message) = error_of(&get(&mut mock, "/api/v1/vms/4294967296"));
    assert_eq!(
        message,
        "VM number must be from 0 to 4294967295, not 4294967296"
    );
    let long = "a".repeat(100);
    let (_, message) = error_of(&get(&mut mock, &format!("/api/v1/vms/{long}")));
    assert!(message.contains("aaa...'"), "{message}");
    assert!(message.contains("1 to 32 characters"), "{message}");
    assert!(mock.changes.is_empty());
    assert_eq!(names(&mut mock), before);
}

#[test]
fn console_output() {
    let mut mock = Mock::default();
    let console =
        |mock: &mut Mock, query: &str| body(&get(mock, &format!("/api/v1/vms/web/console{query}")));
    let all = "Hello from the guest\n";
    let kept = &all[all.len() - CONSOLE_KEEP..];
    let dropped = (all.len() - CONSOLE_KEEP) as u64;
    assert_eq!(
        console(&mut mock, ""),
        json!({"data": kept, "next": 21, "dropped": dropped})
    );
    assert_eq!(
        console(&mut mock, "?since=18"),
        json!({"data": "st\n", "next": 21, "dropped": 0})
    );
    assert_eq!(
        console(&mut mock, "?foo=1&since=21&bar"),
        json!({"data": "", "next": 21, "dropped": 0})
    );
    assert_eq!(
        console(&mut mock, "?since=18446744073709551615"),
        json!({"data": "", "next": 21, "dropped": 0})
    );
    // By number; a VM that never ran has none.
    assert_eq!(
        body(&get(&mut mock, "/api/v1/vms/1/console?since=18")),
        json!({"data": "st\n", "next": 21, "dropped": 0})
    );
    assert_eq!(
        body(&get(&mut mock, "/api/v1/vms/db/console")),
        json!({"data": "", "next": 0, "dropped": 0})
    );
    for query in [
        "since=",
        "since=-1",
        "since=x",
        "since=18446744073709551616",
        "since=1&since=2",
    ] {
        let r = get(&mut mock, &format!("/api/v1/vms/web/console?{query}"));
        assert_eq!(r.status, 400, "{query}");
    }
    assert_eq!(get(&mut mock, "/api/v1/vms/77/console").status, 404);
    assert!(mock.changes.is_empty());
}

#[test]
fn console_input() {
    let mut mock = Mock::default();
    let send_input = |mock: &mut Mock, path: &str, media: &str, bytes: &[u8]| {
        send_raw(mock, &typed("POST", path, media, bytes))
    };
    let r = send_input(&mut mock, "/api/v1/vms/web/console", "text/plain", b"ls\r");
    assert_eq!(
        (r.status, body(&r)),
        (200, json!({"accepted": 3, "dropped": 0}))
    );
    let r = send_input(
        &mut mock,
        "/api/v1/vms/1/console",
        "application/octet-stream",
        &[0x1b, b'[', b'A', 0xff],
    );
    assert_eq!(
        (r.status, body(&r)),
        (200, json!({"accepted": 4, "dropped": 0}))
    );
    // The guest's queue is full after INPUT_ROOM bytes: the rest is dropped.
    let r = send_input(
        &mut mock,
        "/api/v1/vms/web/console",
        "text/plain; charset=utf-8",
        &[b'x'; 20],
    );
    let accepted = (INPUT_ROOM - 7) as u64;
    assert_eq!(
        (r.status, body(&r)),
        (200, json!({"accepted": accepted, "dropped": 20 - accepted}))
    );
    assert_eq!(
        mock.vms[0].input[..7],
        [b'l', b's', b'\r', 0x1b, b'[', b'A', 0xff]
    );
    let changes = mock.changes.len();

    // Refused: not running (409), unknown (404), bad media type (415), empty (400), too
    // long (413).
    let cases: [(&str, &str, Vec<u8>, u16, &str); 6] = [
        (
            "/api/v1/vms/db/console",
            "text/plain",
            b"x".to_vec(),
            409,
            "VM db is not running",
        ),
        (
            "/api/v1/vms/2/console",
            "text/plain",
            b"x".to_vec(),
            409,
            "VM 2 is not running",
        ),
        (
            "/api/v1/vms/nosuch/console",
            "text/plain",
            b"x".to_vec(),
            404,
            "no VM named 'nosuch'",
        ),
        (
            "/api/v1/vms/web/console",
            "application/json",
            b"\"x\"".to_vec(),
            415,
            "send Content-Type text/plain or application/octet-stream, not application/json",
        ),
        (
            "/api/v1/vms/web/console",
            "text/plain",
            Vec::new(),
            400,
            "must hold the bytes",
        ),
        (
            "/api/v1/vms/web/console",
            "text/plain",
            alloc::vec![b'a'; 4097],
            413,
            "console input is at most 4096 bytes per request (this one has 4097)",
        ),
    ];
    for (path, media, bytes, status, expected) in cases {
        let (got, message) = error_of(&send_input(&mut mock, path, media, &bytes));
        assert_eq!(got, status, "{path} {media}: {message}");
        assert!(message.contains(expected), "{message}");
    }
    assert_eq!(mock.changes.len(), changes);
    // Exactly 4096 bytes is allowed; no Content-Type is taken as raw bytes.
    let at_most = alloc::vec![b'a'; 4096];
    let r = send_input(&mut mock, "/api/v1/vms/web/console", "text/plain", &at_most);
    assert_eq!(body(&r)["dropped"], 4096);
    let bare = b"POST /api/v1/vms/web/console HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 1\r\n\r\nq";
    assert_eq!(send_raw(&mut mock, bare).status, 200);
}

#[test]
fn run_module_starts_ad_hoc_vms() {
    let mut mock = Mock::default();
    let r = post(
        &mut mock,
        "/api/v1/modules/hello.bin/run",
        r#"{"mem_mib": 32, "vcpus": 2}"#,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/api/v1/vms/4"));
    let vm = body(&r);
    assert_eq!(
        vm,
        json!({
            "name": "4", "number": 4, "configured": false, "source": "hello.bin",
            "state": "running", "stop_reason": null, "memory_mib": 32, "vcpus": 2,
            "uptime_s": 0,
            "autostart": false, "exits": {"hlt": 1, "io": 3}, "backend": "svm",
            "console_bytes": 0, "run_ms": 0, "kernel": null, "firmware": null, "initrd": null,
            "cmdline": null, "disks": [], "nics": []
        })
    );
    // By index, without a body, or with defaults spelled out.
    let r = send(&mut mock, "POST", "/api/v1/modules/0/run", Some(""));
    assert_eq!((r.status, body(&r)["memory_mib"].clone()), (201, json!(16)));
    assert_eq!(body(&r)["vcpus"], json!(1));
    let r = post(&mut mock, "/api/v1/modules/0/run", r#"{"mem_mib":null}"#);
    assert_eq!(r.status, 201);
    assert_eq!(
        mock.changes,
        ["run hello.bin 32", "run hello.bin 16", "run hello.bin 16"]
    );
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/4")), vm);
    // And it stops by number.
    let r = post(&mut mock, "/api/v1/vms/4/stop", r#"{"force":true}"#);
    assert_eq!(r.status, 200);
}

#[test]
fn run_module_errors_change_nothing() {
    let mut mock = Mock::default();
    for (path, json_body, status, expected) in [
        (
            "/api/v1/modules/0/run",
            "[]",
            400,
            "expected a JSON object, not an array",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"module":"0"}"#,
            400,
            "unknown field `module`",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"vcpus":9}"#,
            422,
            "vcpus must be from 1 to 8",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"vcpus":0}"#,
            422,
            "vcpus must be from 1 to 8",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"mem_mib":-1}"#,
            400,
            "invalid request body",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"mem_mib":"16"}"#,
            400,
            "invalid type: string",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"mem_mib":0}"#,
            422,
            "mem_mib must be an even number from 2 to 65536",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"mem_mib":15}"#,
            422,
            "even number",
        ),
        (
            "/api/v1/modules/nope.bin/run",
            "",
            404,
            "no boot module 'nope.bin'",
        ),
        (
            "/api/v1/modules/0/run",
            r#"{"mem_mib":5000}"#,
            422,
            "5000 MiB is more than the 4096 MiB a VM can have",
        ),
        (
            "/api/v1/modules/linux.bzImage/run",
            "",
            503,
            "not enough free memory for a Linux guest",
        ),
    ] {
        let (got, message) = error_of(&post(&mut mock, path, json_body));
        assert_eq!(got, status, "{path} {json_body}: {message}");
        assert!(message.contains(expected), "{message}");
    }
    assert!(mock.changes.is_empty());
    assert_eq!(mock.vms.len(), 3);
}

#[test]
fn every_vm_route_is_documented_with_its_statuses() {
    // Each status the router gives on a VM route appears in the document (the `conforms`
    // check in `send_raw` would panic on an undocumented one); this lists them to keep the
    // document from growing statuses no test reaches.
    let doc = super::openapi::document();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let mut out: Vec<String> = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        statuses("/api/v1/vms/{name}/stop", "post"),
        [
            "200", "202", "400", "401", "404", "408", "409", "411", "413", "422", "431", "500",
            "default"
        ]
        .map(ToString::to_string)
    );
    assert_eq!(
        statuses("/api/v1/vms/{name}/console", "post"),
        [
            "200", "400", "401", "404", "408", "409", "411", "413", "415", "431", "default"
        ]
        .map(ToString::to_string)
    );
}

#[test]
fn run_module_takes_test_devices() {
    let mut mock = Mock::default();
    let r = post(
        &mut mock,
        "/api/v1/modules/hello.bin/run",
        r#"{"devices": ["debug-exit", "pc-testdev"]}"#,
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        mock.changes,
        ["run hello.bin 16 devices=debug-exit,pc-testdev"]
    );
    let r = post(
        &mut mock,
        "/api/v1/modules/hello.bin/run",
        r#"{"devices": ["pc-testdev", "pc-testdev"]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        body(&r)["error"]["message"],
        "devices lists \"pc-testdev\" twice: list each device once"
    );
    let r = post(
        &mut mock,
        "/api/v1/modules/hello.bin/run",
        r#"{"devices": ["vga"]}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(mock.changes.len(), 1, "refused runs change nothing");
}
