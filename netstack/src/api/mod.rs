//! The REST API, `/api/v1`: routing, bearer-token auth and JSON over the [`Management`]
//! trait.
//!
//! [`Router`] turns a [`Request`] from the HTTP server into a call on the kernel's
//! [`Management`] implementation and its answer into a JSON [`Response`]; it knows nothing of
//! sockets. [`Router::bind`] pairs it with the kernel's state as the server's
//! [`Handler`]. The routes are the table in [`routes`]; [`openapi`] describes them for
//! clients; [`page`] is the web page at `/`.
//!
//! Order of checks, so that the answers do not leak what exists to clients without a token:
//!
//! 1. No route has this path: 404, after the token check when under `/api/v1`.
//! 2. The path is not public (all but `/`, `/api/v1/health`, `/api/v1/openapi.json`):
//!    a missing or wrong `Authorization: Bearer` token gets 401 with `WWW-Authenticate`.
//! 3. No route for this method: 405 with `Allow`.
//! 4. Path and query parameters (a VM `{name}` or a `{saved}` that is neither a number nor a
//!    valid name is 400), then the body: 400 with a precise message (422 for a well-formed body with
//!    unusable values, 413/415 for console input too long or of another media type).
//! 5. Preconditions (`PUT /api/v1/config`): 428 without `If-Match`, 412 when it is stale
//!    (see [`config`]); `POST /api/v1/vms`: 409 when the name is taken.
//! 6. The kernel's [`ApiError`]s: 404, 409, 422, 503, 500.
//!
//! VMs are at `/api/v1/vms/{name}`, where `{name}` is a configured VM's name or any VM's
//! number, as on the console; [`vms`] has the VM routes. Saved VMs are at
//! `/api/v1/saved/{saved}` ([`saved`]), guest disks at `/api/v1/disks/{disk}` ([`disks`]), the
//! guest networks' switches at `/api/v1/network`.
//!
//! Every error carries `{"error":{"status":N,"message":"..."}}`, every response
//! `Cache-Control: no-store` but the page's (see [`page`]).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::http::response::{JSON, Response};
use crate::http::server::{Handler, Request};

pub mod config;
pub mod console_ws;
pub mod disks;
pub mod events;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod saved;
pub mod snapshots;
mod types;
pub mod vms;

#[cfg(any(test, feature = "mock"))]
pub mod mock;
#[cfg(test)]
mod tests;

pub use disks::{CreateDisk, DiskKind, DiskList, DiskManagement, DiskUse, GuestDisk};
pub use events::{Event, EventKind, EventList};
pub use migrate::{
    MigrateRequest, Migration, MigrationDirection, MigrationList, MigrationLog,
    MigrationManagement, MigrationPhase,
};
pub use routes::{API_PREFIX, Op, ROUTES, Route};
pub use snapshots::{
    Snapshot, SnapshotDiskView, SnapshotList, SnapshotManagement, SnapshotRequest,
    SnapshotRestoreRequest,
};
pub use types::{
    ApiError, ConsoleChunk, ConsoleInput, DEFAULT_STOP_TIMEOUT_S, Destroyed, HardwareInfo, Health,
    HealthStatus, HostCpuInfo, HostDiskInfo, HostDiskRole, HostNicState, HostNicView,
    InternalNetworkView, LeaseView, MAX_CONSOLE_INPUT, MAX_STOP_TIMEOUT_S, MacEntryView,
    Management, MemoryByUse, MemoryInfo, ModuleInfo, ModuleList, NetworkInfo, NetworkView, NicView,
    PortKindView, RunModule, SaveRequest, SavedVm, SavedVmList, StopMode, StopRequest, StoreFile,
    StoreList, SwitchPortView, SwitchView, SystemInfo, VmDetail, VmKey, VmList, VmMemory,
    VmMemoryByUse, VmState, VmSummary, saved_name,
};

/// The `/api/v1` router. Holds the accepted bearer tokens and the OpenAPI document.
#[derive(Clone)]
pub struct Router {
    tokens: Vec<String>,
    openapi: String,
    /// Answers by route and status, for `GET /metrics`.
    requests: metrics::RequestCounters,
}

impl core::fmt::Debug for Router {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the tokens.
        f.debug_struct("Router")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router accepting any of `tokens` (empty ones are ignored; with none, every
    /// protected route answers 401).
    pub fn new<I, S>(tokens: I) -> Router
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut router = Router {
            tokens: Vec::new(),
            openapi: openapi::document().to_string(),
            requests: metrics::RequestCounters::default(),
        };
        router.set_tokens(tokens);
        router
    }

    /// Replaces the accepted tokens (after a configuration change).
    pub fn set_tokens<I, S>(&mut self, tokens: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tokens = tokens
            .into_iter()
            .map(Into::into)
            .filter(|t: &String| !t.is_empty())
            .collect();
    }

    /// This router over `mgmt`, as the HTTP server's [`Handler`].
    pub fn bind<'a, M: Management + ?Sized>(&'a self, mgmt: &'a mut M) -> Api<'a, M> {
        Api { router: self, mgmt }
    }

    /// The response to `req`.
    pub fn handle<M: Management + ?Sized>(&self, mgmt: &mut M, req: &Request<'_>) -> Response {
        let response = self.route(mgmt, req).unwrap_or_else(|error| error);
        // The page's assets carry their own (`no-cache` with an ETag).
        let response = if response.header("Cache-Control").is_some() {
            response
        } else {
            response.with_header("Cache-Control", "no-store")
        };
        let route = routes::lookup(req.path)
            .find(|(r, _)| r.method == req.method.as_str())
            .map_or("other", |(r, _)| r.path);
        self.requests.count(route, response.status);
        response
    }

    fn route<M: Management + ?Sized>(
        &self,
        mgmt: &mut M,
        req: &Request<'_>,
    ) -> Result<Response, Response> {
        let candidates: Vec<_> = routes::lookup(req.path).collect();
        if candidates.is_empty() {
            if routes::under_api(req.path) {
                self.authorize(req)?;
            }
            let message = format!("no resource at {}", clip(req.path, 120));
            return Err(Response::error(404, &message));
        }
        if !candidates.iter().all(|(route, _)| route.public) {
            self.authorize(req)?;
        }
        let method = req.method.as_str();
        let Some(&(route, id)) = candidates.iter().find(|(r, _)| r.method == method) else {
            let allow = candidates
                .iter()
                .map(|(r, _)| r.method)
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "method {} not allowed on {}: use {allow}",
                clip(method, 20),
                clip(req.path, 120)
            );
            return Err(Response::error(405, &message).with_header("Allow", &allow));
        };
        self.dispatch(route.op, id, mgmt, req)
    }

    fn dispatch<M: Management + ?Sized>(
        &self,
        op: Op,
        param: Option<&str>,
        mgmt: &mut M,
        req: &Request<'_>,
    ) -> Result<Response, Response> {
        // The table puts a parameter in exactly the paths of the ops that use one.
        let param = || param.ok_or_else(|| Response::error(500, "route without its parameter"));
        let key = || {
            let segment = param()?;
            VmKey::parse(segment).map_err(|message| Response::error(400, &message))
        };
        let saved = || {
            let segment = param()?;
            saved_name(segment).map_err(|message| Response::error(400, &message))
        };
        let partition = || disks::partition_name(param()?);
        let snapshot = || {
            let segment = param()?;
            snapshots::snapshot_name(segment).map_err(|message| Response::error(400, &message))
        };
        Ok(match op {
            Op::Page | Op::Asset => page::serve(req),
            Op::Health => Response::json(
                200,
                &Health {
                    status: HealthStatus::Ok,
                },
            ),
            Op::OpenApi => Response::new(200)
                .with_header("Content-Type", JSON)
                .with_body(self.openapi.clone().into_bytes()),
            Op::System => Response::json(200, &mgmt.system()),
            Op::Modules => Response::json(
                200,
                &ModuleList {
                    modules: mgmt.modules(),
                },
            ),
            Op::RunModule => vms::run_module(mgmt, param()?, req)?,
            Op::Store => Response::json(
                200,
                &StoreList {
                    files: mgmt.store().map_err(api_error)?,
                },
            ),
            Op::GetConfig => config::get(mgmt),
            Op::PutConfig => config::put(mgmt, req)?,
            Op::ListVms => Response::json(200, &VmList { vms: mgmt.vms() }),
            Op::CreateVm => vms::create(mgmt, req)?,
            Op::ShowVm => vms::show(mgmt, &key()?)?,
            Op::DestroyVm => vms::destroy(mgmt, &key()?)?,
            Op::StartVm => vms::start(mgmt, &key()?, req)?,
            Op::StopVm => vms::stop(mgmt, &key()?, req)?,
            Op::RestartVm => vms::restart(mgmt, &key()?, req)?,
            Op::PauseVm => vms::pause(mgmt, &key()?, req)?,
            Op::ResumeVm => vms::resume(mgmt, &key()?, req)?,
            Op::Console => vms::console(mgmt, &key()?, since(req)?)?,
            Op::ConsoleInput => vms::console_input(mgmt, &key()?, req)?,
            Op::ConsoleWs => console_ws::upgrade(self, mgmt, param()?, req)?,
            Op::SaveVm => saved::save(mgmt, &key()?, req)?,
            Op::ListSaved => Response::json(
                200,
                &SavedVmList {
                    saved: mgmt.saved_vms(),
                },
            ),
            Op::ShowSaved => saved::show(mgmt, saved()?)?,
            Op::RestoreSaved => saved::restore(mgmt, saved()?, req)?,
            Op::DeleteSaved => saved::delete(mgmt, saved()?)?,
            Op::ListDisks => disks::list(mgmt)?,
            Op::CreateDisk => disks::create(mgmt, req)?,
            Op::ShowDisk => disks::show(mgmt, param()?)?,
            Op::DeleteDisk => disks::delete(mgmt, partition()?)?,
            Op::Network => Response::json(200, &mgmt.network()),
            Op::TakeSnapshot => snapshots::take(mgmt, &key()?, req)?,
            Op::ListSnapshots => snapshots::list(mgmt)?,
            Op::ShowSnapshot => snapshots::show(mgmt, snapshot()?)?,
            Op::RestoreSnapshot => snapshots::restore(mgmt, snapshot()?, req)?,
            Op::DeleteSnapshot => snapshots::delete(mgmt, snapshot()?)?,
            Op::MigrateVm => migrate::start(mgmt, &key()?, req)?,
            Op::Migrations => migrate::list(mgmt),
            Op::Events => events::list(mgmt, req)?,
            Op::Metrics => metrics::get(mgmt, &self.requests),
        })
    }

    /// Whether `token` is one of the accepted tokens (compared as [`authorize`] does).
    ///
    /// [`authorize`]: Self::authorize
    pub fn token_ok(&self, token: &str) -> bool {
        self.tokens.iter().fold(false, |ok, accepted| {
            ok | ct_eq(accepted.as_bytes(), token.as_bytes())
        })
    }

    /// Checks the bearer token against every accepted token, in time that depends only on
    /// the lengths.
    fn authorize(&self, req: &Request<'_>) -> Result<(), Response> {
        let Some(token) = req.bearer_token else {
            return Err(Response::error(
                401,
                "missing bearer token: send Authorization: Bearer <token>",
            )
            .with_header("WWW-Authenticate", "Bearer realm=\"keel\""));
        };
        if self.token_ok(token) {
            Ok(())
        } else {
            Err(Response::error(401, "invalid bearer token").with_header(
                "WWW-Authenticate",
                "Bearer realm=\"keel\", error=\"invalid_token\"",
            ))
        }
    }
}

/// [`Router`] bound to the kernel's [`Management`]: the HTTP server's handler.
pub struct Api<'a, M: ?Sized> {
    router: &'a Router,
    mgmt: &'a mut M,
}

impl<M: Management + ?Sized> Handler for Api<'_, M> {
    fn handle(&mut self, req: &Request<'_>) -> Response {
        self.router.handle(self.mgmt, req)
    }

    fn websocket(&mut self, session: &mut crate::http::websocket::Session) {
        // The only WebSocket route is the console.
        console_ws::serve(self.router, self.mgmt, session);
    }
}

/// Equal bytes, compared in time that depends only on the longer length.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    core::hint::black_box(diff) == 0
}

/// The `since` query parameter: a byte offset, 0 when absent.
fn since(req: &Request<'_>) -> Result<u64, Response> {
    let mut values = req.query_params("since");
    let value = values.next();
    if values.next().is_some() {
        return Err(Response::error(
            400,
            "query parameter since given more than once",
        ));
    }
    match value {
        None => Ok(0),
        Some(v) if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse().map_err(|_| since_error())
        }
        Some(_) => Err(since_error()),
    }
}

fn since_error() -> Response {
    Response::error(
        400,
        "query parameter since must be a byte offset from 0 to 18446744073709551615",
    )
}

pub(crate) fn api_error(err: ApiError) -> Response {
    Response::error(err.status(), err.message())
}

/// At most `max` bytes of `s`, cut at a character boundary, `...` when cut.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return String::from(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
