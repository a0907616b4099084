//! The snapshot routes against the mock kernel: take (named, default), list, show, restore
//! into a running VM, delete; bad names and bodies (400/422), unknown (404), a taken name
//! (409), no store (503); a refused request changes nothing.

use alloc::string::String;
use alloc::vec::Vec;

use super::super::mock::Mock;
use super::{body, get, send};

#[test]
fn snapshot_list_show_restore_and_delete() {
    let mut mock = Mock::default();
    mock.changes.clear();
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/web/snapshot",
        Some(r#"{"name":"before-upgrade"}"#),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("location"),
        Some("/api/v1/snapshots/before-upgrade")
    );
    let taken = body(&r);
    assert_eq!(taken["vm"], "web");
    assert_eq!(taken["memory_mib"], 256);
    // A default name.
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/1/snapshot",
        Some(r#"{"stop":true}"#),
    );
    assert_eq!(r.status, 201);
    assert!(body(&r)["name"].as_str().unwrap().starts_with("web-"));
    let list = body(&get(&mut mock, "/api/v1/snapshots"));
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(
        body(&get(&mut mock, "/api/v1/snapshots/before-upgrade")),
        taken
    );
    // The same name again: 409.
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/web/snapshot",
        Some(r#"{"name":"before-upgrade"}"#),
    );
    assert_eq!(r.status, 409);
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/snapshots/before-upgrade/restore",
        Some(r#"{"force":true}"#),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let vm = body(&r);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["source"], "snapshot:before-upgrade");
    assert_eq!(
        r.header("location").map(String::from),
        Some(alloc::format!("/api/v1/vms/{}", vm["number"]))
    );
    assert!(
        mock.changes
            .iter()
            .any(|c| c == "restore snapshot before-upgrade force")
    );
    let r = send(
        &mut mock,
        "DELETE",
        "/api/v1/snapshots/before-upgrade",
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&mut mock, "/api/v1/snapshots/before-upgrade").status,
        404
    );
    let r = send(
        &mut mock,
        "DELETE",
        "/api/v1/snapshots/before-upgrade",
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn bad_names_and_bodies_change_nothing() {
    let mut mock = Mock::default();
    let before: Vec<String> = mock.changes.clone();
    for (method, path, json_body, status) in [
        ("GET", "/api/v1/snapshots/-x", None, 400),
        ("DELETE", "/api/v1/snapshots/-x", None, 400),
        (
            "POST",
            "/api/v1/vms/web/snapshot",
            Some(r#"{"name":"-bad"}"#),
            422,
        ),
        (
            "POST",
            "/api/v1/vms/web/snapshot",
            Some(r#"{"stop":"yes"}"#),
            400,
        ),
        (
            "POST",
            "/api/v1/vms/web/snapshot",
            Some(r#"{"nmae":"x"}"#),
            400,
        ),
        ("POST", "/api/v1/vms/nosuch/snapshot", Some(""), 404),
        ("POST", "/api/v1/snapshots/none/restore", Some(""), 404),
        (
            "POST",
            "/api/v1/snapshots/none/restore",
            Some(r#"{"force":1}"#),
            400,
        ),
    ] {
        let r = send(&mut mock, method, path, json_body);
        assert_eq!(
            r.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(mock.changes, before);
    let mut bare = Mock {
        store: None,
        ..Mock::default()
    };
    assert_eq!(get(&mut bare, "/api/v1/snapshots").status, 503);
}
