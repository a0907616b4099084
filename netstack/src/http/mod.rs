//! HTTP/1.1 (RFC 9110 semantics, RFC 9112 message syntax) for the management API.
//!
//! Only what a small appliance API server needs: request heads with hard limits
//! ([`request`]), bodies with a `Content-Length` (no chunked transfer coding), keep-alive,
//! responses with a `Content-Length` and JSON error bodies ([`response`]), and the server
//! that runs them over smoltcp TCP sockets ([`server`]). What a request means is the
//! [`server::Handler`]'s business: the `/api/v1` router in [`crate::api`].

pub mod request;
pub mod response;
pub mod server;
pub mod websocket;

pub use request::{Limits, Method, RequestError};
pub use response::Response;
pub use server::{Handler, HttpServer, PlainHttp, Request, ServerConfig};
