//! `GET /api/v1/events` over the mock kernel (whose log follows its changes).

use super::*;
use std::collections::BTreeSet;

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

#[test]
fn metrics_need_a_token_and_expose_the_figures() {
    let mut mock = Mock::default();
    // One router: it keeps the request counters.
    let router = router();
    let ask = |mock: &mut Mock, path: &str, token: Option<&str>| {
        let bytes = raw("GET", path, token, None);
        match exchange(&bytes, &Limits::default(), &mut router.bind(mock)) {
            Exchange::Respond { response, .. } => response,
            Exchange::Incomplete { .. } => panic!("incomplete"),
        }
    };
    let r = ask(&mut mock, "/metrics", None);
    assert_eq!(r.status, 401);
    ask(&mut mock, "/api/v1/vms", Some(TOKEN));
    let r = ask(&mut mock, "/metrics", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(metrics::CONTENT_TYPE));
    let text = String::from_utf8(r.body.clone()).unwrap();
    for needle in [
        "# TYPE keel_vm_state gauge\n",
        "keel_vm_state{vm=\"web\",state=\"running\"} 1\n",
        "keel_vm_state{vm=\"web\",state=\"stopped\"} 0\n",
        "# TYPE keel_vm_exits_total counter\n",
        "keel_http_requests_total{route=\"/api/v1/vms\",status=\"200\"} 1\n",
        "keel_http_requests_total{route=\"/metrics\",status=\"401\"} 1\n",
        "keel_config_generation 1\n",
        "keel_memory_bytes{use=\"heap_used\"}",
        // The mock's CPU 0: 12.345 s up, 6 s halted, 1.5 s in guests.
        "keel_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 6\n",
        "keel_cpu_seconds_total{cpu=\"0\",mode=\"busy\"} 6.345\n",
        "keel_cpu_guest_seconds_total{cpu=\"0\"} 1.5\n",
        "# TYPE keel_vm_run_seconds_total counter\n",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    // Every sample line belongs to the family announced last, each announced once.
    let mut families = BTreeSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
            assert!(families.insert(current.clone()), "{current} twice");
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, current, "{line}");
            assert!(name.starts_with("keel_"));
        }
    }
}
