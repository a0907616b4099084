//! The guest-disk routes against the mock: list (partitions and store images), create,
//! show, delete; every error status (bad name 400/422, bad body 400, taken or in use 409,
//! no space 422, unknown 404, no boot disk 503), and that a refused request changes nothing.

use alloc::string::String;
use alloc::vec::Vec;

use serde_json::json;

use super::super::mock::Mock;
use super::super::{DiskKind, DiskUse, StoreFile};
use super::{body, error_of, get, send};
use crate::http::response::Response;

fn post(mock: &mut Mock, json_body: &str) -> Response {
    send(mock, "POST", "/api/v1/disks", Some(json_body))
}

fn delete(mock: &mut Mock, name: &str) -> Response {
    send(
        mock,
        "DELETE",
        &alloc::format!("/api/v1/disks/{name}"),
        None,
    )
}

fn names(mock: &mut Mock) -> Vec<String> {
    let list = body(&get(mock, "/api/v1/disks"));
    list["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| String::from(d["name"].as_str().unwrap()))
        .collect()
}

/// The mock with a store image file.
fn with_image() -> Mock {
    let mut mock = Mock::default();
    mock.store.as_mut().unwrap().push(StoreFile {
        name: String::from("data.img"),
        size: 64 << 20,
    });
    mock
}

#[test]
fn create_list_show_delete() {
    let mut mock = with_image();
    assert_eq!(
        body(&get(&mut mock, "/api/v1/disks")),
        json!({
            "disks": [{"name": "data.img", "kind": "file", "size_bytes": 64u64 << 20, "users": []}],
            "free_mib": 10_240
        })
    );
    let r = post(&mut mock, r#"{"name":"big","size_mib":8192}"#);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/api/v1/disks/big"));
    let big = json!({"name": "big", "kind": "partition", "size_bytes": 8u64 << 30, "users": []});
    assert_eq!(body(&r), big);
    assert_eq!(mock.changes.last().unwrap(), "create disk big 8192");
    assert_eq!(names(&mut mock), ["big", "data.img"]);
    assert_eq!(body(&get(&mut mock, "/api/v1/disks"))["free_mib"], 2048);
    assert_eq!(body(&get(&mut mock, "/api/v1/disks/big")), big);
    assert_eq!(
        body(&get(&mut mock, "/api/v1/disks/data.img"))["kind"],
        "file"
    );

    let r = delete(&mut mock, "big");
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(names(&mut mock), ["data.img"]);
}

#[test]
fn refusals_change_nothing() {
    let mut mock = with_image();
    assert_eq!(
        post(&mut mock, r#"{"name":"big","size_mib":1024}"#).status,
        201
    );
    mock.changes.clear();
    let cases: [(&str, u16, &str); 9] = [
        ("", 400, "JSON object"),
        ("[]", 400, "not an array"),
        (r#"{"name":"x"}"#, 400, "size_mib"),
        (r#"{"name":"x","size_mib":1,"extra":1}"#, 400, "extra"),
        (r#"{"name":"x","size_mib":-1}"#, 400, "invalid"),
        (r#"{"name":"Big","size_mib":1}"#, 422, "name:"),
        (r#"{"name":"x","size_mib":0}"#, 422, "size_mib"),
        (r#"{"name":"big","size_mib":1}"#, 409, "already exists"),
        (
            r#"{"name":"huge","size_mib":99999}"#,
            422,
            "largest free space is 9216 MiB",
        ),
    ];
    for (json_body, status, words) in cases {
        let r = post(&mut mock, json_body);
        let (got, message) = error_of(&r);
        assert_eq!(got, status, "{json_body}: {message}");
        assert!(message.contains(words), "{json_body}: {message}");
    }
    assert_eq!(error_of(&delete(&mut mock, "nope")).0, 404);
    assert_eq!(error_of(&delete(&mut mock, "Nope")).0, 400);
    assert_eq!(error_of(&get(&mut mock, "/api/v1/disks/nope")).0, 404);
    mock.disks[0].users.push(DiskUse {
        vm: String::from("web"),
        readonly: false,
    });
    let (status, message) = error_of(&delete(&mut mock, "big"));
    assert_eq!((status, message.contains("in use by web")), (409, true));
    assert!(mock.changes.is_empty(), "{:?}", mock.changes);
    assert_eq!(mock.disks[0].kind, DiskKind::Partition);

    // No boot disk: 503 everywhere.
    mock.store = None;
    assert_eq!(error_of(&get(&mut mock, "/api/v1/disks")).0, 503);
    assert_eq!(
        error_of(&post(&mut mock, r#"{"name":"x","size_mib":1}"#)).0,
        503
    );
    assert_eq!(error_of(&delete(&mut mock, "big")).0, 503);
}
