//! `GET /api/v1/events` over the mock kernel (whose log follows its changes).

use super::*;

#[test]
fn events_page_with_since_and_need_a_token() {
    let mut mock = Mock::default();
    let r = send_raw(&mut mock, &raw("GET", "/api/v1/events", None, None));
    assert_eq!(r.status, 401);
    let empty = body(&get(&mut mock, "/api/v1/events"));
    assert_eq!(empty, json!({"next": 1, "events": []}));
    let r = send(
        &mut mock,
        "POST",
        "/api/v1/vms/web/stop",
        Some(r#"{"force":true}"#),
    );
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let r = send(&mut mock, "POST", "/api/v1/vms/web/start", Some(""));
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let all = body(&get(&mut mock, "/api/v1/events"));
    assert_eq!(all["next"], 3);
    assert_eq!(all["events"][0]["kind"], "vm-stopped");
    assert_eq!(all["events"][0]["vm"], "web");
    assert_eq!(all["events"][1]["kind"], "vm-started");
    let later = body(&get(&mut mock, "/api/v1/events?since=2"));
    assert_eq!(later["events"].as_array().unwrap().len(), 1);
    assert_eq!(later["events"][0]["seq"], 2);
    let none = body(&get(&mut mock, "/api/v1/events?since=3"));
    assert_eq!(none, json!({"next": 3, "events": []}));
    for bad in ["since=x", "since=-1", "since=1&since=2"] {
        let r = get(&mut mock, &format!("/api/v1/events?{bad}"));
        assert_eq!(r.status, 400, "{bad}");
    }
}
