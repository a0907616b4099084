//! The migration routes against the mock kernel: a start answers 202 with where it goes and
//! shows in the list; a second while one is under way, or a VM that does not run, is 409;
//! bad hosts and ports 422, bad bodies 400, an unknown VM 404; a refused request records
//! nothing.

use alloc::string::String;

use super::super::mock::Mock;
use super::{body, error_of, get, send};

#[test]
fn migration_starts_shows_and_refuses_a_second() {
    let mut mock = Mock::default();
    assert_eq!(
        body(&get(&mut mock, "/api/v1/migrations"))["migrations"],
        serde_json::json!([])
    );
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/web/migrate",
        Some(r#"{"host":"10.77.0.2","port":7071}"#),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), Some("/api/v1/migrations"));
    let started = body(&r);
    assert_eq!(started["vm"], "web");
    assert_eq!(started["peer"], "10.77.0.2:7071");
    assert_eq!(started["direction"], "outgoing");
    assert_eq!(started["phase"], "requested");
    assert_eq!(mock.changes, ["migrate web to 10.77.0.2:7071"]);
    let list = body(&get(&mut mock, "/api/v1/migrations"));
    assert_eq!(list["migrations"][0], started);
    // The port defaults; but one is under way: 409.
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/1/migrate",
        Some(r#"{"host":"10.77.0.3"}"#),
    );
    let (status, message) = error_of(&r);
    assert_eq!(status, 409);
    assert!(message.contains("under way"), "{message}");
    assert_eq!(mock.changes.len(), 1);
}

#[test]
fn migration_requests_that_cannot_go_change_nothing() {
    let mut mock = Mock::default();
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        // VM 2 has stopped, db was never started.
        (
            "/api/v1/vms/2/migrate",
            Some(r#"{"host":"10.0.0.2"}"#),
            409,
            "not running",
        ),
        (
            "/api/v1/vms/db/migrate",
            Some(r#"{"host":"10.0.0.2"}"#),
            409,
            "not running",
        ),
        (
            "/api/v1/vms/nope/migrate",
            Some(r#"{"host":"10.0.0.2"}"#),
            404,
            "nope",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"host.example"}"#),
            422,
            "IPv4",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"10.0.0.256"}"#),
            422,
            "IPv4",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"10.0.0"}"#),
            422,
            "IPv4",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"1.2.3.4.5"}"#),
            422,
            "IPv4",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"10.0.0.2","port":0}"#),
            422,
            "port",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"10.0.0.2","port":70000}"#),
            400,
            "body",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"host":"10.0.0.2","to":1}"#),
            400,
            "to",
        ),
        (
            "/api/v1/vms/web/migrate",
            Some(r#"{"port":7070}"#),
            400,
            "host",
        ),
        ("/api/v1/vms/web/migrate", Some(""), 400, "body"),
        (
            "/api/v1/vms/web%/migrate",
            Some(r#"{"host":"10.0.0.2"}"#),
            400,
            "",
        ),
    ];
    for (path, request, want, needle) in cases {
        let r = send(&mut mock, "POST", path, *request);
        let (status, message) = error_of(&r);
        assert_eq!(status, *want, "{path} {request:?}: {message}");
        assert!(message.contains(needle), "{path} {request:?}: {message}");
    }
    assert!(mock.changes.is_empty(), "{:?}", mock.changes);
    assert!(mock.migrations.is_empty());
}

#[test]
fn host_parsing() {
    use super::super::migrate::parse_host;
    assert_eq!(parse_host("10.77.0.2"), Ok([10, 77, 0, 2]));
    assert_eq!(parse_host("0.0.0.0"), Ok([0, 0, 0, 0]));
    for bad in [
        "",
        "1.2.3",
        "1.2.3.4.",
        "1..3.4",
        "+1.2.3.4",
        "01234.1.1.1",
        "a.b.c.d",
    ] {
        assert!(parse_host(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_log_updates_bounds_and_keeps_those_under_way() {
    use super::super::{MigrationDirection as D, MigrationLog, MigrationPhase as P};
    let mut log = MigrationLog::new();
    let (first, m) = log.add(
        "web",
        D::Outgoing,
        String::from("10.0.0.2:7070"),
        P::Requested,
    );
    assert_eq!(m.phase, P::Requested);
    assert_eq!(log.outgoing_under_way().as_deref(), Some("web"));
    log.update(first, |m| m.phase = P::Running);
    assert_eq!(log.all()[0].phase, P::Running);
    for i in 0..MigrationLog::MAX + 3 {
        let (id, _) = log.add("in", D::Incoming, String::from("10.0.0.1"), P::Running);
        log.fail(id, alloc::format!("cut {i}"), Some(5));
        log.fail(id, String::from("later"), Some(6));
    }
    let list = log.all();
    assert_eq!(list.len(), MigrationLog::MAX);
    // The one under way stayed; the oldest finished ones went; the first reason stays.
    assert_eq!(list[0].vm, "web");
    assert_eq!(list[1].message.as_deref(), Some("cut 4"));
    assert_eq!(list[1].total_ms, Some(5));
    log.update(first, |m| m.phase = P::Done);
    assert_eq!(log.outgoing_under_way(), None);
}
