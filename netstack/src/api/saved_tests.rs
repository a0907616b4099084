//! The saved-VM routes against the mock: save (default and given names), list, show,
//! restore into a new paused VM, delete; every error status (bad name 400/422, bad body 400,
//! unknown 404, not paused or name taken 409, refused bytes 422, no memory 503), and that a
//! refused request changes nothing.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Value, json};

use super::super::mock::Mock;
use super::{body, error_of, get, send};
use crate::http::response::Response;

fn post(mock: &mut Mock, path: &str, json_body: &str) -> Response {
    send(mock, "POST", path, Some(json_body))
}

fn saved_names(mock: &mut Mock) -> Vec<String> {
    let list = body(&get(mock, "/api/v1/saved"));
    list["saved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| String::from(s["name"].as_str().unwrap()))
        .collect()
}

/// The mock with web (VM 1, 256 MiB) paused.
fn paused_web() -> Mock {
    let mut mock = Mock::default();
    assert_eq!(post(&mut mock, "/api/v1/vms/web/pause", "").status, 200);
    mock.changes.clear();
    mock
}

#[test]
fn save_list_show_restore_delete() {
    let mut mock = paused_web();
    assert_eq!(body(&get(&mut mock, "/api/v1/saved")), json!({"saved": []}));
    // No body: saved under the VM's name.
    let r = post(&mut mock, "/api/v1/vms/web/save", "");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/api/v1/saved/web"));
    let web = json!({
        "name": "web", "vm": "web", "size_bytes": 256u64 << 18, "memory_mib": 256,
        "vcpus": 1, "backend": "svm", "save_ms": 7
    });
    assert_eq!(body(&r), web);
    // A name of its own, by number; a null name is the default.
    let r = post(
        &mut mock,
        "/api/v1/vms/1/save",
        r#"{"name":"before-upgrade"}"#,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/api/v1/saved/before-upgrade"));
    assert_eq!(body(&r)["name"], "before-upgrade");
    assert_eq!(body(&r)["vm"], "web");
    let r = post(&mut mock, "/api/v1/vms/web/save", r#"{"name":"42"}"#);
    assert_eq!(r.status, 201);
    // The VM stays paused.
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/web"))["state"], "paused");
    // Listed by name; each one on its own.
    assert_eq!(saved_names(&mut mock), ["42", "before-upgrade", "web"]);
    assert_eq!(body(&get(&mut mock, "/api/v1/saved/web")), web);
    assert_eq!(body(&get(&mut mock, "/api/v1/saved/42"))["name"], "42");

    // Restore: a new ad-hoc VM, paused, with an empty console.
    let r = post(&mut mock, "/api/v1/saved/web/restore", "");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/api/v1/vms/4"));
    let vm = body(&r);
    assert_eq!(
        vm,
        json!({
            "name": "4", "number": 4, "configured": false, "source": "saved:web",
            "state": "paused", "stop_reason": null, "memory_mib": 256, "vcpus": 1,
            "uptime_s": 0, "autostart": false, "exits": {}, "backend": "svm",
            "console_bytes": 0, "run_ms": 0, "kernel": null, "firmware": null, "initrd": null,
            "cmdline": null, "disks": [], "nics": []
        })
    );
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/4")), vm);
    let r = post(&mut mock, "/api/v1/vms/4/resume", "");
    assert_eq!(body(&r)["state"], "running");
    // The saved VM stays for another restore.
    let r = post(&mut mock, "/api/v1/saved/web/restore", "");
    assert_eq!(r.header("location"), Some("/api/v1/vms/5"));
    // A restored VM, paused, saves under its number, as the console does.
    let r = post(&mut mock, "/api/v1/vms/5/save", "");
    assert_eq!(r.header("location"), Some("/api/v1/saved/5"));
    assert_eq!(body(&r)["vm"], "vm5");

    // Delete: 204 without a body, then gone.
    let r = send(&mut mock, "DELETE", "/api/v1/saved/web", None);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);
    assert_eq!(get(&mut mock, "/api/v1/saved/web").status, 404);
    assert_eq!(saved_names(&mut mock), ["42", "5", "before-upgrade"]);
    // VMs restored from it stay.
    assert_eq!(body(&get(&mut mock, "/api/v1/vms/4"))["state"], "running");
    assert_eq!(
        mock.changes,
        [
            "save web as web",
            "save web as before-upgrade",
            "save web as 42",
            "restore web as 4",
            "resume 4",
            "restore web as 5",
            "save 5 as 5",
            "delete saved web",
        ]
    );
}

#[test]
fn save_errors_change_nothing() {
    let mut mock = paused_web();
    assert_eq!(post(&mut mock, "/api/v1/vms/web/save", "").status, 201);
    mock.changes.clear();
    for (path, json_body, status, expected) in [
        // Not paused: 409 with the kernel's message.
        (
            "/api/v1/vms/db/save",
            "",
            409,
            "VM db is defined: pause it first ('vm pause db')",
        ),
        (
            "/api/v1/vms/2/save",
            "",
            409,
            "VM 2 is stopped: guest shut down: pause it first ('vm pause 2')",
        ),
        // The name is taken (by default or as given): 409.
        (
            "/api/v1/vms/web/save",
            "",
            409,
            "a saved VM named 'web' exists: delete it with 'saved rm web' or choose another name",
        ),
        (
            "/api/v1/vms/1/save",
            r#"{"name":"web"}"#,
            409,
            "a saved VM named 'web' exists",
        ),
        // Unknown VM: 404; malformed VM key: 400.
        ("/api/v1/vms/nosuch/save", "", 404, "no VM named 'nosuch'"),
        ("/api/v1/vms/77/save", "", 404, "no VM named '77'"),
        (
            "/api/v1/vms/Web/save",
            "",
            400,
            "'Web' is neither a VM number nor a VM name",
        ),
        // Bodies that are not the object: 400.
        (
            "/api/v1/vms/web/save",
            "[]",
            400,
            "expected a JSON object, not an array",
        ),
        ("/api/v1/vms/web/save", "{", 400, "invalid request body"),
        (
            "/api/v1/vms/web/save",
            r#"{"saved":"x"}"#,
            400,
            "unknown field `saved`",
        ),
        (
            "/api/v1/vms/web/save",
            r#"{"name":5}"#,
            400,
            // (serde_json names the type `integer` or `number`, depending on its features.)
            "invalid request body: invalid type: ",
        ),
        // Names that break the rule: 422.
        (
            "/api/v1/vms/web/save",
            r#"{"name":"Bad_Name"}"#,
            422,
            "name: 'Bad_Name' cannot name a saved VM: a name may hold only lowercase letters, \
             digits and '-' (or is a VM number)",
        ),
        (
            "/api/v1/vms/web/save",
            r#"{"name":""}"#,
            422,
            "a name must be 1 to 32 characters long",
        ),
        (
            "/api/v1/vms/web/save",
            r#"{"name":"4294967296"}"#,
            422,
            "'4294967296' cannot name a saved VM: a number must be from 0 to 4294967295",
        ),
        (
            "/api/v1/vms/web/save",
            r#"{"name":"-1"}"#,
            422,
            "must start with a lowercase letter",
        ),
    ] {
        let (got, message) = error_of(&post(&mut mock, path, json_body));
        assert_eq!(got, status, "{path} {json_body}: {message}");
        assert!(message.contains(expected), "{path} {json_body}: {message}");
    }
    // No host memory for the saved bytes: 503.
    mock.free_mib = 32;
    let (status, message) = error_of(&post(&mut mock, "/api/v1/vms/web/save", r#"{"name":"x"}"#));
    assert_eq!(
        (status, message.as_str()),
        (
            503,
            "cannot save VM web: out of host memory for the saved VM"
        )
    );
    mock.free_mib = 400;
    // A running VM: the exact message.
    let r = post(&mut mock, "/api/v1/vms/web/resume", "");
    assert_eq!(r.status, 200);
    mock.changes.clear();
    let (status, message) = error_of(&post(
        &mut mock,
        "/api/v1/vms/web/save",
        r#"{"name":"other"}"#,
    ));
    assert_eq!(
        (status, message.as_str()),
        (409, "VM web is running: pause it first ('vm pause web')")
    );
    assert!(mock.changes.is_empty());
    assert_eq!(saved_names(&mut mock), ["web"]);
}

#[test]
fn restore_errors_create_nothing() {
    let mut mock = paused_web();
    assert_eq!(post(&mut mock, "/api/v1/vms/web/save", "").status, 201);
    mock.changes.clear();
    let vms = mock.vms.len();
    // Unknown: 404; malformed name: 400; a body: 400.
    let (status, message) = error_of(&post(&mut mock, "/api/v1/saved/nosuch/restore", ""));
    assert_eq!(
        (status, message.as_str()),
        (
            404,
            "no saved VM named 'nosuch': GET /api/v1/saved lists them"
        )
    );
    let (status, message) = error_of(&post(&mut mock, "/api/v1/saved/No_Such/restore", ""));
    assert_eq!(status, 400);
    assert_eq!(
        message,
        "'No_Such' cannot name a saved VM: a name may hold only lowercase letters, digits and \
         '-' (or is a VM number)"
    );
    let (status, message) = error_of(&post(&mut mock, "/api/v1/saved/web/restore", "{}"));
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "POST /api/v1/saved/{saved}/restore takes no request body (send Content-Length: 0)"
        )
    );
    // No host memory for its RAM: 503.
    mock.free_mib = 128;
    let (status, message) = error_of(&post(&mut mock, "/api/v1/saved/web/restore", ""));
    assert_eq!(status, 503);
    assert!(
        message.starts_with("cannot restore 'web': guest RAM"),
        "{message}"
    );
    // Bytes the kernel refuses: 422 with its message.
    mock.free_mib = 400;
    mock.saved[0].damaged = true;
    let (status, message) = error_of(&post(&mut mock, "/api/v1/saved/web/restore", ""));
    assert_eq!(status, 422);
    assert!(message.starts_with("cannot restore 'web': "), "{message}");
    assert!(message.contains("damaged"), "{message}");
    assert!(mock.changes.is_empty());
    assert_eq!(mock.vms.len(), vms);
    assert_eq!(get(&mut mock, "/api/v1/vms/4").status, 404);
}

#[test]
fn show_and_delete_errors() {
    let mut mock = paused_web();
    assert_eq!(post(&mut mock, "/api/v1/vms/web/save", "").status, 201);
    mock.changes.clear();
    for method in ["GET", "DELETE"] {
        let (status, message) = error_of(&send(&mut mock, method, "/api/v1/saved/nosuch", None));
        assert_eq!(
            (status, message.as_str()),
            (
                404,
                "no saved VM named 'nosuch': GET /api/v1/saved lists them"
            ),
            "{method}"
        );
        // The same number with leading zeros is another name.
        assert_eq!(
            send(&mut mock, method, "/api/v1/saved/0042", None).status,
            404
        );
        for bad in [
            "Web",
            "web_1",
            "-web",
            "4294967296",
            "%77eb",
            &"a".repeat(40),
        ] {
            let path = format!("/api/v1/saved/{bad}");
            let (status, message) = error_of(&send(&mut mock, method, &path, None));
            assert_eq!(status, 400, "{method} {path}: {message}");
            assert!(message.contains("cannot name a saved VM"), "{message}");
        }
    }
    // The listing takes no parameter; other methods are 405.
    let r = send(&mut mock, "DELETE", "/api/v1/saved", None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let r = send(&mut mock, "PUT", "/api/v1/saved/web", Some("{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, DELETE")));
    assert_eq!(
        get(&mut mock, "/api/v1/saved/web/restore").header("allow"),
        Some("POST")
    );
    assert!(mock.changes.is_empty());
    assert_eq!(saved_names(&mut mock), ["web"]);
    assert_eq!(
        body(&get(&mut mock, "/api/v1/saved/web"))["vm"],
        Value::from("web")
    );
}
