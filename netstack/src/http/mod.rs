//! HTTP/1.1 (RFC 9110 semantics, RFC 9112 message syntax) for the management API.
//!
//! Only what a small appliance API server needs: request heads with hard limits, bodies with a
//! `Content-Length` (no chunked transfer coding), keep-alive.

pub mod request;
