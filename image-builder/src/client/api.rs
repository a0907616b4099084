//! [`ApiClient`]: blocking JSON over HTTP to one appliance's `/api/v1`, with the API's
//! refusals turned into [`ClientError::Api`] (status, message and every field path).

use std::error::Error as _;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::pin::{PinStore, PinVerifier};

/// The most of a response body the client reads: the largest API answers (a configuration,
/// a console chunk) are tens of KiB, so this only stops a runaway peer.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Why a request to an appliance failed.
#[derive(Debug)]
pub enum ClientError {
    /// The appliance address is not one the client can use.
    BadUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer: connection refused, name not resolved, timeout.
    Unreachable {
        /// The request's URL.
        url: String,
        /// What the connection attempt ran into.
        reason: String,
    },
    /// The API answered with an error status.
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's `error.message` (or the status line when the body had none).
        message: String,
        /// `path: message` for each problem of a 422 that lists them.
        errors: Vec<String>,
    },
    /// The appliance presented a certificate other than the pinned one.
    CertificateChanged {
        /// The appliance's address.
        url: String,
        /// The pinned fingerprint.
        pinned: String,
        /// The presented certificate's fingerprint.
        presented: String,
        /// Where the pin is: the pin file, or `None` when it is the inventory's `fingerprint`.
        pin_file: Option<PathBuf>,
    },
    /// The pin file could not be read.
    Pins(super::pin::PinError),
    /// An answer that is not what the API sends (not JSON, cut short).
    BadResponse {
        /// The request's URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl { url, reason } => {
                write!(f, "bad appliance URL {url:?}: {reason}")
            }
            ClientError::Unreachable { url, reason } => {
                write!(f, "appliance unreachable at {url}: {reason}")
            }
            ClientError::Api {
                status,
                message,
                errors,
            } => {
                write!(f, "{status} {message}")?;
                for error in errors {
                    write!(f, "\n  {error}")?;
                }
                Ok(())
            }
            ClientError::BadResponse { url, reason } => {
                write!(f, "unexpected answer from {url}: {reason}")
            }
            ClientError::CertificateChanged {
                url,
                pinned,
                presented,
                pin_file,
            } => {
                write!(
                    f,
                    "the appliance at {url} presented a certificate other than the pinned one: \
                     pinned SHA-256 {pinned}, presented SHA-256 {presented}. Check the \
                     fingerprint on the appliance's console (`net`); if its certificate was \
                     replaced on purpose, "
                )?;
                match pin_file {
                    Some(path) => write!(
                        f,
                        "delete the line of {url} from {} and connect again to pin the new one",
                        path.display()
                    ),
                    None => write!(f, "set its `fingerprint` in the inventory to {presented}"),
                }
            }
            ClientError::Pins(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one appliance's API. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct ApiClient {
    base_url: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// For `https://`: the pinning verifier (shared by the WebSocket) and its configuration.
    tls: Option<(Arc<PinVerifier>, Arc<rustls::ClientConfig>)>,
}

impl fmt::Debug for ApiClient {
    // By hand so that the token never lands in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ApiClient {
    /// A client of the appliance at `base_url` (`http[s]://host[:port]`, no path), sending
    /// `token` as a bearer token when given; `timeout` bounds each request's connect and
    /// each of its reads and writes. Over `https://` the certificate is pinned in memory
    /// only (see [`ApiClient::pinned`] to keep pins).
    pub fn new(
        base_url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<ApiClient, ClientError> {
        ApiClient::pinned(base_url, token, timeout, None, None)
    }

    /// [`ApiClient::new`] whose `https://` certificate must have the fingerprint `expected`
    /// when given, else the one pinned for the URL in `store`, else is pinned there on
    /// first use.
    pub fn pinned(
        base_url: &str,
        token: Option<String>,
        timeout: Duration,
        expected: Option<String>,
        store: Option<PinStore>,
    ) -> Result<ApiClient, ClientError> {
        let base_url = check_base_url(base_url)?;
        let mut builder = ureq::AgentBuilder::new();
        let mut tls = None;
        if base_url.starts_with("https://") {
            let verifier =
                Arc::new(PinVerifier::new(&base_url, expected, store).map_err(ClientError::Pins)?);
            let config =
                PinVerifier::client_config(verifier.clone()).map_err(|e| ClientError::BadUrl {
                    url: base_url.clone(),
                    reason: format!("no TLS configuration: {e}"),
                })?;
            builder = builder.tls_config(config.clone());
            tls = Some((verifier, config));
        }
        let agent = builder
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            // The API never redirects; following one would send the token elsewhere.
            .redirects(0)
            .build();
        Ok(ApiClient {
            base_url,
            token,
            agent,
            tls,
        })
    }

    /// The TLS configuration of an `https://` appliance (the console's WebSocket uses it,
    /// so that it checks the same pin).
    pub(crate) fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|(_, config)| config.clone())
    }

    /// A transport failure as [`ClientError::CertificateChanged`] when it was the pin that
    /// refused the handshake.
    pub(crate) fn refused_certificate(&self) -> Option<ClientError> {
        let (verifier, _) = self.tls.as_ref()?;
        let mismatch = verifier.mismatch()?;
        let from_store = verifier
            .store()
            .filter(|store| {
                store.get(&self.base_url).ok().flatten().as_ref() == Some(&mismatch.pinned)
            })
            .map(|store| store.path().to_path_buf());
        Some(ClientError::CertificateChanged {
            url: self.base_url.clone(),
            pinned: mismatch.pinned,
            presented: mismatch.presented,
            pin_file: from_store,
        })
    }

    /// The bearer token, if any (the console's WebSocket sends it on its upgrade).
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The appliance's address, as `http[s]://host[:port]`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET path` (`/api/v1/system`): the JSON body.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.get_with_etag(path).map(|(value, _)| value)
    }

    /// `GET path`: the JSON body and the response's `ETag`.
    pub fn get_with_etag(&self, path: &str) -> Result<(Value, Option<String>), ClientError> {
        let url = self.url(path);
        let response = self.call(self.request("GET", &url).call(), &url)?;
        let etag = response.header("etag").map(str::to_owned);
        let body = read_body(response, &url)?;
        Ok((parse_json(&body, &url)?, etag))
    }

    /// GET `path` as raw bytes (for routes whose answer is not JSON).
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let response = self.call(self.request("GET", &url).call(), &url)?;
        let body = read_body(response, &url)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `method path` with an optional JSON body and `If-Match`: the answer's JSON body
    /// (`Null` when it has none).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let mut request = self.request(method, &url);
        if let Some(tag) = if_match {
            request = request.set("If-Match", tag);
        }
        let result = match body {
            Some(json) => request
                .set("Content-Type", "application/json")
                .send_string(&json.to_string()),
            // An empty body with its length: the API refuses a POST without Content-Length
            // (411), and a GET needs none.
            None if method == "GET" => request.call(),
            None => request.send_bytes(&[]),
        };
        let response = self.call(result, &url)?;
        let body = read_body(response, &url)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        parse_json(&body, &url)
    }

    /// `POST path` with raw bytes as `text/plain` (console input): the answer's JSON.
    pub fn send_bytes(&self, path: &str, bytes: &[u8]) -> Result<Value, ClientError> {
        let url = self.url(path);
        let request = self
            .request("POST", &url)
            .set("Content-Type", "application/octet-stream");
        let response = self.call(request.send_bytes(bytes), &url)?;
        let body = read_body(response, &url)?;
        parse_json(&body, &url)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let request = self
            .agent
            .request(method, url)
            .set("Accept", "application/json");
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// The response of a successful status, or the error the result stands for.
    fn call(
        &self,
        result: Result<ureq::Response, ureq::Error>,
        url: &str,
    ) -> Result<ureq::Response, ClientError> {
        match result {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let body = read_body(response, url).unwrap_or_default();
                Err(api_error(status, &body))
            }
            Err(ureq::Error::Transport(transport)) => Err(self
                .refused_certificate()
                .unwrap_or_else(|| transport_error(&transport, url))),
        }
    }
}

/// A transport failure as the operator needs it: which URL, and why in one line.
fn transport_error(transport: &ureq::Transport, url: &str) -> ClientError {
    let reason = match (transport.message(), transport.source()) {
        (Some(message), Some(source)) => format!("{message}: {source}"),
        (Some(message), None) => message.to_owned(),
        (None, Some(source)) => source.to_string(),
        (None, None) => transport.kind().to_string(),
    };
    match transport.kind() {
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => ClientError::BadUrl {
            url: url.to_owned(),
            reason,
        },
        ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => ClientError::BadResponse {
            url: url.to_owned(),
            reason,
        },
        _ => ClientError::Unreachable {
            url: url.to_owned(),
            reason,
        },
    }
}

/// Checks `url` is `http[s]://host[:port]` with at most a trailing slash, and returns it
/// without that slash.
pub fn check_base_url(url: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        ("http", rest)
    } else {
        return Err(bad("not an https:// URL: give https://HOST[:PORT]"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host: give https://HOST[:PORT]"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "only https://HOST[:PORT] is expected, without a path, query or user",
        ));
    }
    if let Some((host, port)) = authority.rsplit_once(':')
        && !host.ends_with(']')
        && (host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0))
    {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// An error answer as [`ClientError::Api`]: `{"error":{"status","message"},"errors":[…]}`
/// when the body has that shape, else the body's first line.
pub fn api_error(status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                "(no message)".to_owned()
            } else {
                line.chars().take(200).collect()
            }
        });
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .map(|problems| {
            problems
                .iter()
                .map(|p| {
                    let path = p.get("path").and_then(Value::as_str).unwrap_or("");
                    let message = p.get("message").and_then(Value::as_str).unwrap_or("");
                    if path.is_empty() {
                        message.to_owned()
                    } else {
                        format!("{path}: {message}")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ClientError::Api {
        status,
        message,
        errors,
    }
}

fn read_body(response: ureq::Response, url: &str) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| ClientError::Unreachable {
            url: url.to_owned(),
            reason: format!("reading the answer: {e}"),
        })?;
    Ok(body)
}

fn parse_json(body: &[u8], url: &str) -> Result<Value, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::BadResponse {
        url: url.to_owned(),
        reason: format!("not JSON: {e}"),
    })
}

/// Where a command goes: the appliance (by inventory name, when it came from one), its URL
/// and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The inventory name, when `--appliance` named one.
    pub name: Option<String>,
    /// `http[s]://host[:port]`.
    pub url: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The certificate fingerprint the inventory entry gives, if any.
    pub fingerprint: Option<String>,
    /// Where first-use pins are kept (`None`: in memory only).
    pub pins: Option<PinStore>,
}

impl Target {
    /// A client of this target.
    pub fn client(&self, timeout: Duration) -> Result<ApiClient, ClientError> {
        ApiClient::pinned(
            &self.url,
            self.token.clone(),
            timeout,
            self.fingerprint.clone(),
            self.pins.clone(),
        )
    }
}
