use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn complete(buf: &[u8]) -> (RequestHead, usize) {
    match parse_head(buf, &limits()) {
        Ok(Parsed::Complete { head, head_len }) => (head, head_len),
        other => panic!("expected a complete head, got {other:?}"),
    }
}

fn head(buf: &[u8]) -> RequestHead {
    complete(buf).0
}

fn error(buf: &[u8]) -> RequestError {
    error_with(buf, &limits())
}

fn error_with(buf: &[u8], limits: &Limits) -> RequestError {
    match parse_head(buf, limits) {
        Err(err) => err,
        other => panic!("expected an error, got {other:?}"),
    }
}

const CURL_GET: &[u8] = b"GET /api/v1/vms?state=running&limit=5 HTTP/1.1\r\n\
    Host: 192.168.1.20\r\n\
    User-Agent: curl/7.88.1\r\n\
    Accept: */*\r\n\
    Authorization: Bearer k33l-T0ken_v1.~+/==\r\n\
    \r\n";

#[test]
fn parses_a_curl_get() {
    let (head, len) = complete(CURL_GET);
    assert_eq!(len, CURL_GET.len());
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.path, "/api/v1/vms");
    assert_eq!(head.query.as_deref(), Some("state=running&limit=5"));
    assert_eq!(head.version, 1);
    assert_eq!(
        head.headers,
        [
            ("host".to_string(), "192.168.1.20".to_string()),
            ("user-agent".to_string(), "curl/7.88.1".to_string()),
            ("accept".to_string(), "*/*".to_string()),
            (
                "authorization".to_string(),
                "Bearer k33l-T0ken_v1.~+/==".to_string()
            ),
        ]
    );
    assert_eq!(head.content_length, None);
    assert_eq!(head.body_len(), 0);
    assert!(head.keep_alive);
    assert_eq!(head.bearer_token.as_deref(), Some("k33l-T0ken_v1.~+/=="));
    assert_eq!(head.header("HOST"), Some("192.168.1.20"));
    assert_eq!(head.header("x-missing"), None);
}

#[test]
fn methods() {
    let cases = [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("TRACE", Method::Other("TRACE".into())),
        ("get", Method::Other("get".into())),
    ];
    for (token, method) in cases {
        let req = format!("{token} / HTTP/1.1\r\nHost: k\r\n\r\n");
        let h = head(req.as_bytes());
        assert_eq!(h.method, method);
        assert_eq!(h.method.as_str(), token);
        assert_eq!(h.method.to_string(), token);
    }
    for (token, method) in [
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("PATCH", Method::Patch),
    ] {
        let req = format!("{token} /x HTTP/1.1\r\nHost: k\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head(req.as_bytes()).method, method);
    }
}

#[test]
fn body_follows_the_head() {
    let req = b"PUT /api/v1/config HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\n\
                Content-Length: 13\r\n\r\n{\"a\":[1,2,3]}GET / HTTP/1.1\r\n";
    let (h, len) = complete(req);
    assert_eq!(h.content_length, Some(13));
    assert_eq!(&req[len..len + h.body_len()], b"{\"a\":[1,2,3]}");
}

#[test]
fn request_targets() {
    let target = |t: &str, method: &str| {
        let req = format!("{method} {t} HTTP/1.1\r\nHost: k\r\n\r\n");
        parse_head(req.as_bytes(), &limits()).map(|p| match p {
            Parsed::Complete { head, .. } => (head.path, head.query),
            Parsed::Partial => panic!("partial"),
        })
    };
    let ok = |path: &str, query: Option<&str>| Ok((path.to_string(), query.map(String::from)));
    assert_eq!(target("/", "GET"), ok("/", None));
    assert_eq!(target("/a/b%20c", "GET"), ok("/a/b%20c", None));
    assert_eq!(target("/a?", "GET"), ok("/a", Some("")));
    assert_eq!(target("/a?b?c", "GET"), ok("/a", Some("b?c")));
    assert_eq!(
        target("http://keel.local/api?x=1", "GET"),
        ok("/api", Some("x=1"))
    );
    assert_eq!(target("HTTP://keel.local", "GET"), ok("/", None));
    assert_eq!(target("https://keel:8080?q", "GET"), ok("/", Some("q")));
    assert_eq!(target("*", "OPTIONS"), ok("*", None));
    assert_eq!(target("*", "GET"), Err(RequestError::BadTarget));
    assert_eq!(target("api/v1", "GET"), Err(RequestError::BadTarget));
    assert_eq!(target("keel:80", "CONNECT"), Err(RequestError::BadTarget));
    assert_eq!(target("http:///path", "GET"), Err(RequestError::BadTarget));
    assert_eq!(target("ftp://x/y", "GET"), Err(RequestError::BadTarget));
}

#[test]
fn keep_alive_rules() {
    let ka = |version: &str, connection: Option<&str>| {
        let mut req = format!("GET / HTTP/{version}\r\nHost: k\r\n");
        if let Some(c) = connection {
            req.push_str(&format!("Connection: {c}\r\n"));
        }
        req.push_str("\r\n");
        head(req.as_bytes()).keep_alive
    };
    // HTTP/1.1: persistent unless "close".
    assert!(ka("1.1", None));
    assert!(ka("1.1", Some("keep-alive")));
    assert!(!ka("1.1", Some("close")));
    assert!(!ka("1.1", Some("Close")));
    assert!(!ka("1.1", Some("Upgrade, close")));
    assert!(ka("1.1", Some("closed")));
    // HTTP/1.0: closes unless "keep-alive".
    assert!(!ka("1.0", None));
    assert!(ka("1.0", Some("keep-alive")));
    assert!(ka("1.0", Some("Keep-Alive")));
    assert!(ka("1.0", Some("foo, keep-alive")));
    assert!(!ka("1.0", Some("close")));
    // Two Connection fields combine.
    let req = b"GET / HTTP/1.1\r\nHost: k\r\nConnection: upgrade\r\nConnection: close\r\n\r\n";
    assert!(!head(req).keep_alive);
}

#[test]
fn http_1_0_needs_no_host_but_1_1_does() {
    let h = head(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.version, 0);
    let err = error(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(err, RequestError::MissingHost);
    assert_eq!(err.status(), 400);
    let err = error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
    assert_eq!(err, RequestError::DuplicateHeader { name: "host" });
    assert_eq!(err.to_string(), "more than one host header");
}

#[test]
fn every_split_point_is_partial_then_complete() {
    let requests: [&[u8]; 3] = [
        CURL_GET,
        b"POST /api/v1/vms HTTP/1.1\r\nHost: k\r\nContent-Length: 2\r\n\r\n{}",
        // Bare LF line endings are accepted too.
        b"GET / HTTP/1.0\nConnection: keep-alive\n\n",
    ];
    for req in requests {
        let (full, head_len) = complete(req);
        for split in 0..head_len {
            assert_eq!(
                parse_head(&req[..split], &limits()),
                Ok(Parsed::Partial),
                "split at {split} of {:?}",
                String::from_utf8_lossy(req)
            );
        }
        for end in head_len..=req.len() {
            assert_eq!(complete(&req[..end]), (full.clone(), head_len));
        }
    }
}

#[test]
fn head_too_large() {
    let small = Limits {
        max_head_bytes: 64,
        ..Limits::default()
    };
    // A head that never ends: partial below the limit, 431 at it.
    let mut req = b"GET / HTTP/1.1\r\nHost: k\r\nX-Filler: ".to_vec();
    req.resize(63, b'a');
    assert_eq!(parse_head(&req, &small), Ok(Parsed::Partial));
    req.push(b'a');
    let err = error_with(&req, &small);
    assert_eq!(err, RequestError::HeadTooLarge { max: 64 });
    assert_eq!(err.status(), 431);
    assert_eq!(err.reason(), "Request Header Fields Too Large");
    assert_eq!(err.to_string(), "request head exceeds 64 bytes");
    req.extend_from_slice(&[b'a'; 1000]);
    assert_eq!(
        error_with(&req, &small),
        RequestError::HeadTooLarge { max: 64 }
    );

    // A head of exactly the limit is fine; one byte more is not, even when complete.
    let mut req = b"GET / HTTP/1.1\r\nHost: k\r\nX-Filler: ".to_vec();
    req.resize(60, b'a');
    req.extend_from_slice(b"\r\n\r\n");
    assert_eq!(complete_with(&req, &small).1, 64);
    let mut longer = req[..60].to_vec();
    longer.extend_from_slice(b"a\r\n\r\n");
    assert_eq!(
        error_with(&longer, &small),
        RequestError::HeadTooLarge { max: 64 }
    );

    // The default limit: 8 KiB.
    let mut req = b"GET / HTTP/1.1\r\nHost: k\r\nCookie: ".to_vec();
    req.resize(9000, b'c');
    assert_eq!(error(&req), RequestError::HeadTooLarge { max: 8192 });
}

fn complete_with(buf: &[u8], limits: &Limits) -> (RequestHead, usize) {
    match parse_head(buf, limits) {
        Ok(Parsed::Complete { head, head_len }) => (head, head_len),
        other => panic!("expected a complete head, got {other:?}"),
    }
}

#[test]
fn too_many_headers() {
    let mut req = String::from("GET / HTTP/1.1\r\nHost: k\r\n");
    for i in 1..32 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    let exactly = format!("{req}\r\n");
    assert_eq!(head(exactly.as_bytes()).headers.len(), 32);
    req.push_str("X-One-Too-Many: v\r\n\r\n");
    let err = error(req.as_bytes());
    assert_eq!(err, RequestError::TooManyHeaders { max: 32 });
    assert_eq!(err.status(), 431);
    // Detected before the head is even complete.
    let partial = &req.as_bytes()[..req.len() - 2];
    assert_eq!(error(partial), RequestError::TooManyHeaders { max: 32 });
    // No headers allowed at all.
    let none = Limits {
        max_headers: 0,
        ..Limits::default()
    };
    assert_eq!(
        complete_with(b"GET / HTTP/1.0\r\n\r\n", &none)
            .0
            .headers
            .len(),
        0
    );
    assert_eq!(
        error_with(b"GET / HTTP/1.0\r\nA: b\r\n\r\n", &none),
        RequestError::TooManyHeaders { max: 0 }
    );
}

fn with_length(values: &[&str]) -> Result<Parsed, RequestError> {
    let mut req = String::from("POST /x HTTP/1.1\r\nHost: k\r\n");
    for v in values {
        req.push_str(&format!("Content-Length: {v}\r\n"));
    }
    req.push_str("\r\n");
    parse_head(req.as_bytes(), &limits())
}

fn length_of(values: &[&str]) -> Option<usize> {
    match with_length(values) {
        Ok(Parsed::Complete { head, .. }) => head.content_length,
        other => panic!("{values:?}: {other:?}"),
    }
}

#[test]
fn content_length_values() {
    assert_eq!(length_of(&["0"]), Some(0));
    assert_eq!(length_of(&["42"]), Some(42));
    assert_eq!(length_of(&["0042"]), Some(42));
    assert_eq!(length_of(&["000"]), Some(0));
    assert_eq!(length_of(&["65536"]), Some(65536));
    // Identical repeats are one value (RFC 9110 §8.6).
    assert_eq!(length_of(&["7", "7"]), Some(7));
    assert_eq!(length_of(&["7, 7"]), Some(7));
    assert_eq!(length_of(&["7", "007"]), Some(7));
}

#[test]
fn bad_content_length_is_400() {
    for bad in [
        "", "abc", "-1", "+5", "1.5", "0x10", "5 5", "1e3", ",", "5,", "٣",
    ] {
        let err = with_length(&[bad]).unwrap_err();
        assert_eq!(err, RequestError::InvalidContentLength, "{bad:?}");
        assert_eq!(err.status(), 400);
    }
    for (a, b) in [("5", "6"), ("0", "1")] {
        let err = with_length(&[a, b]).unwrap_err();
        assert_eq!(err, RequestError::ConflictingContentLength);
        assert_eq!(err.status(), 400);
    }
    assert_eq!(
        with_length(&["5, 6"]).unwrap_err(),
        RequestError::ConflictingContentLength
    );
    assert_eq!(
        with_length(&["5", "x"]).unwrap_err(),
        RequestError::InvalidContentLength
    );
}

#[test]
fn body_larger_than_the_limit_is_413() {
    let err = with_length(&["65537"]).unwrap_err();
    assert_eq!(err, RequestError::BodyTooLarge { max: 65536 });
    assert_eq!(err.status(), 413);
    assert_eq!(err.reason(), "Content Too Large");
    assert_eq!(err.to_string(), "request body exceeds 65536 bytes");
    // Beyond any integer: still 413, not a parse failure.
    let huge = "9".repeat(100);
    assert_eq!(
        with_length(&[&huge]).unwrap_err(),
        RequestError::BodyTooLarge { max: 65536 }
    );
    // Same on a GET that declares a body.
    let err = error(b"GET / HTTP/1.1\r\nHost: k\r\nContent-Length: 100000\r\n\r\n");
    assert_eq!(err.status(), 413);
}

#[test]
fn transfer_encoding_is_411() {
    for te in ["chunked", "gzip, chunked", "identity"] {
        let req = format!("POST /x HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: {te}\r\n\r\n");
        let err = error(req.as_bytes());
        assert_eq!(err, RequestError::TransferEncoding);
        assert_eq!(err.status(), 411);
    }
    // With a Content-Length too (a request-smuggling shape): still refused.
    let err = error(
        b"POST /x HTTP/1.1\r\nHost: k\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(err, RequestError::TransferEncoding);
    assert_eq!(
        err.to_string(),
        "Transfer-Encoding is not supported: send the body with Content-Length"
    );
}

#[test]
fn bodies_without_length_are_411() {
    for method in ["POST", "PUT", "PATCH"] {
        let req = format!("{method} /x HTTP/1.1\r\nHost: k\r\n\r\n");
        let err = error(req.as_bytes());
        assert_eq!(err.status(), 411);
        assert_eq!(err.reason(), "Length Required");
        assert_eq!(
            err.to_string(),
            format!("{method} requires a Content-Length header")
        );
    }
    // Methods without a body need no length.
    for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
        let req = format!("{method} /x HTTP/1.1\r\nHost: k\r\n\r\n");
        assert_eq!(head(req.as_bytes()).content_length, None);
    }
}

#[test]
fn bearer_tokens() {
    let token = |auth: &str| {
        let req = format!("GET / HTTP/1.1\r\nHost: k\r\nAuthorization: {auth}\r\n\r\n");
        parse_head(req.as_bytes(), &limits()).map(|p| match p {
            Parsed::Complete { head, .. } => head.bearer_token,
            Parsed::Partial => panic!("partial"),
        })
    };
    assert_eq!(token("Bearer abc"), Ok(Some("abc".into())));
    assert_eq!(token("bearer abc"), Ok(Some("abc".into())));
    assert_eq!(token("BEARER   abc  "), Ok(Some("abc".into())));
    assert_eq!(
        token("Bearer a.b-c_d~e+f/g=="),
        Ok(Some("a.b-c_d~e+f/g==".into()))
    );
    // Another scheme: no token, the router answers 401.
    assert_eq!(token("Basic YWRtaW46YWRtaW4="), Ok(None));
    assert_eq!(token("Bearerabc"), Ok(None));
    // Bearer, but nothing usable.
    for bad in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer ab=c",
        "Bearer ===",
        "Bearer a\"b",
    ] {
        let err = token(bad).unwrap_err();
        assert_eq!(err, RequestError::MalformedBearerToken, "{bad:?}");
        assert_eq!(err.status(), 400);
    }
    let err = error(
        b"GET / HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
    );
    assert_eq!(
        err,
        RequestError::DuplicateHeader {
            name: "authorization"
        }
    );
    // No Authorization at all.
    assert_eq!(
        head(b"GET / HTTP/1.1\r\nHost: k\r\n\r\n").bearer_token,
        None
    );
}

#[test]
fn non_utf8_values_are_refused_only_where_interpreted() {
    for name in [
        "Content-Length",
        "Connection",
        "Host",
        "Authorization",
        "Transfer-Encoding",
    ] {
        let mut req = format!("GET / HTTP/1.1\r\nHost: k\r\n{name}: ").into_bytes();
        if name == "Host" {
            req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        }
        req.extend_from_slice(b"\xff\xfe\r\n\r\n");
        let err = error(&req);
        assert_eq!(
            err,
            RequestError::InvalidHeaderEncoding {
                name: Box::leak(name.to_ascii_lowercase().into_boxed_str())
            }
        );
        assert_eq!(err.status(), 400);
    }
    // Elsewhere the value is kept, lossily.
    let h = head(b"GET / HTTP/1.1\r\nHost: k\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n");
    assert_eq!(h.header("x-name"), Some("caf\u{e9} \u{fffd}"));
}

#[test]
fn header_names_are_lowercased_and_values_trimmed() {
    let h = head(b"GET / HTTP/1.1\r\nHOST:k\r\nX-MiXeD:  \t spaced value \t \r\n\r\n");
    assert_eq!(
        h.headers,
        [
            ("host".to_string(), "k".to_string()),
            ("x-mixed".to_string(), "spaced value".to_string())
        ]
    );
}

#[test]
fn malformed_heads_are_400() {
    let cases: [(&[u8], Syntax); 8] = [
        (b"GET / HTTP/2.0\r\n\r\n", Syntax::Version),
        (b"GET / FTP/1.1\r\n\r\n", Syntax::Version),
        (b"G(T / HTTP/1.1\r\n\r\n", Syntax::RequestLine),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", Syntax::RequestLine),
        (b"GET / HTTP/1.1\r\nHost : k\r\n\r\n", Syntax::HeaderName),
        (b"GET / HTTP/1.1\r\nHo\x01st: k\r\n\r\n", Syntax::HeaderName),
        (
            b"GET / HTTP/1.1\r\nHost: k\x01\r\n\r\n",
            Syntax::HeaderValue,
        ),
        (b"GET / HTTP/1.1\rX\n\r\n", Syntax::LineEnding),
    ];
    for (req, syntax) in cases {
        let err = error(req);
        assert_eq!(
            err,
            RequestError::Malformed(syntax),
            "{:?}",
            String::from_utf8_lossy(req)
        );
        assert_eq!(err.status(), 400);
        assert_eq!(err.reason(), "Bad Request");
    }
    assert_eq!(
        RequestError::Malformed(Syntax::HeaderName).to_string(),
        "malformed header name"
    );
}

#[test]
fn every_error_has_a_status_and_message() {
    let all = [
        (
            RequestError::Malformed(Syntax::Version),
            400,
            "malformed HTTP version",
        ),
        (
            RequestError::BadTarget,
            400,
            "request target must be an absolute path (or * with OPTIONS)",
        ),
        (
            RequestError::HeadTooLarge { max: 1 },
            431,
            "request head exceeds 1 bytes",
        ),
        (
            RequestError::TooManyHeaders { max: 2 },
            431,
            "more than 2 request header fields",
        ),
        (
            RequestError::InvalidContentLength,
            400,
            "invalid Content-Length",
        ),
        (
            RequestError::ConflictingContentLength,
            400,
            "conflicting Content-Length values",
        ),
        (
            RequestError::BodyTooLarge { max: 3 },
            413,
            "request body exceeds 3 bytes",
        ),
        (
            RequestError::LengthRequired { method: "PUT" },
            411,
            "PUT requires a Content-Length header",
        ),
        (
            RequestError::TransferEncoding,
            411,
            "Transfer-Encoding is not supported: send the body with Content-Length",
        ),
        (
            RequestError::InvalidHeaderEncoding { name: "host" },
            400,
            "header host is not valid UTF-8",
        ),
        (
            RequestError::MissingHost,
            400,
            "HTTP/1.1 request without a Host header",
        ),
        (
            RequestError::DuplicateHeader { name: "host" },
            400,
            "more than one host header",
        ),
        (
            RequestError::MalformedBearerToken,
            400,
            "malformed bearer token in the Authorization header",
        ),
    ];
    for (err, status, message) in all {
        assert_eq!(err.status(), status, "{err:?}");
        assert_eq!(err.to_string(), message);
        // Messages go into JSON strings: keep them free of characters that need escaping.
        assert!(!message.contains(['"', '\\']));
    }
}

#[test]
fn leading_empty_lines_are_skipped() {
    // RFC 9112 §2.2: a server should ignore at least one empty line before the request line.
    let (h, len) = complete(b"\r\nGET / HTTP/1.1\r\nHost: k\r\n\r\n");
    assert_eq!((h.path.as_str(), len), ("/", 29));
}

/// A tiny xorshift64 PRNG: reproducible pseudo-random input without external crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that make random input look enough like HTTP to reach the later checks.
const PIECES: [&[u8]; 24] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"OPTIONS ",
    b"/",
    b"/api/v1?",
    b"*",
    b"http://h",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b"\r\n",
    b"\n",
    b"Host: k",
    b"Content-Length: ",
    b"12",
    b"99999999999999999999",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Authorization: Bearer ",
    b"abc==",
    b": ",
    b",",
    b"\xff",
    b"\t",
];

fn random_input(rng: &mut XorShift) -> Vec<u8> {
    let mut out = Vec::new();
    match rng.below(3) {
        // Raw noise.
        0 => {
            let len = rng.below(300);
            out.extend((0..len).map(|_| rng.next() as u8));
        }
        // HTTP-shaped fragments.
        1 => {
            for _ in 0..rng.below(40) {
                out.extend_from_slice(PIECES[rng.below(PIECES.len())]);
            }
        }
        // A valid request with a few bytes changed, cut at a random point.
        _ => {
            out.extend_from_slice(CURL_GET);
            out.extend_from_slice(b"Content-Length: 5\r\n\r\nhello");
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            out.truncate(rng.below(out.len() + 1));
        }
    }
    out
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = XorShift(0x853C_49E6_748F_EA9B);
    let tight = Limits {
        max_head_bytes: 100,
        max_headers: 3,
        max_body_bytes: 10,
    };
    let mut outcomes = [0usize; 3];
    for _ in 0..60_000 {
        let input = random_input(&mut rng);
        for limits in [Limits::default(), tight] {
            match parse_head(&input, &limits) {
                Ok(Parsed::Partial) => {
                    assert!(input.len() < limits.max_head_bytes);
                    outcomes[0] += 1;
                }
                Ok(Parsed::Complete { head, head_len }) => {
                    assert!(head_len <= input.len() && head_len <= limits.max_head_bytes);
                    assert!(head.headers.len() <= limits.max_headers);
                    assert!(head.body_len() <= limits.max_body_bytes);
                    assert!(head.version <= 1);
                    outcomes[1] += 1;
                }
                Err(err) => {
                    assert!([400, 411, 413, 431].contains(&err.status()));
                    assert!(!err.to_string().is_empty());
                    outcomes[2] += 1;
                }
            }
        }
    }
    assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
}
