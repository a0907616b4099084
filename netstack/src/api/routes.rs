//! The route table: every method and path the router answers, the statuses each can answer
//! with, and path matching.
//!
//! [`ROUTES`] is the single list the router dispatches from and the OpenAPI document in
//! [`super::openapi`] is built from: its paths, methods, security and the statuses each
//! operation lists ([`Route::statuses`]) all come from here. The router's tests check every
//! answer they get against the statuses its route lists.

/// The prefix of the REST API.
pub const API_PREFIX: &str = "/api/v1";

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /`: the web page.
    Page,
    /// `GET /assets/{asset}`: the web page's scripts, styles and licences.
    Asset,
    /// `GET /api/v1/health`.
    Health,
    /// `GET /api/v1/openapi.json`.
    OpenApi,
    /// `GET /api/v1/system`.
    System,
    /// `GET /api/v1/modules`.
    Modules,
    /// `POST /api/v1/modules/{module}/run`: an ad-hoc VM from a boot module.
    RunModule,
    /// `GET /api/v1/store`.
    Store,
    /// `GET /api/v1/config`.
    GetConfig,
    /// `PUT /api/v1/config`.
    PutConfig,
    /// `GET /api/v1/vms`.
    ListVms,
    /// `POST /api/v1/vms`: define a named VM.
    CreateVm,
    /// `GET /api/v1/vms/{name}`.
    ShowVm,
    /// `DELETE /api/v1/vms/{name}`.
    DestroyVm,
    /// `POST /api/v1/vms/{name}/start`.
    StartVm,
    /// `POST /api/v1/vms/{name}/stop`.
    StopVm,
    /// `POST /api/v1/vms/{name}/restart`.
    RestartVm,
    /// `POST /api/v1/vms/{name}/pause`.
    PauseVm,
    /// `POST /api/v1/vms/{name}/resume`.
    ResumeVm,
    /// `GET /api/v1/vms/{name}/console`.
    Console,
    /// `POST /api/v1/vms/{name}/console`.
    ConsoleInput,
    /// `GET /api/v1/vms/{name}/console/ws`: the console over a WebSocket.
    ConsoleWs,
    /// `POST /api/v1/vms/{name}/save`.
    SaveVm,
    /// `GET /api/v1/saved`.
    ListSaved,
    /// `GET /api/v1/saved/{saved}`.
    ShowSaved,
    /// `POST /api/v1/saved/{saved}/restore`.
    RestoreSaved,
    /// `DELETE /api/v1/saved/{saved}`.
    DeleteSaved,
    /// `GET /api/v1/disks`.
    ListDisks,
    /// `POST /api/v1/disks`: make a guest-disk partition.
    CreateDisk,
    /// `GET /api/v1/disks/{disk}`.
    ShowDisk,
    /// `DELETE /api/v1/disks/{disk}`.
    DeleteDisk,
    /// `GET /api/v1/network`: the guest switches and the internal network.
    Network,
    /// `POST /api/v1/vms/{name}/snapshot`.
    TakeSnapshot,
    /// `GET /api/v1/snapshots`.
    ListSnapshots,
    /// `GET /api/v1/snapshots/{snapshot}`.
    ShowSnapshot,
    /// `POST /api/v1/snapshots/{snapshot}/restore`.
    RestoreSnapshot,
    /// `DELETE /api/v1/snapshots/{snapshot}`.
    DeleteSnapshot,
    /// `POST /api/v1/vms/{name}/migrate`: live migration to another appliance.
    MigrateVm,
    /// `GET /api/v1/migrations`: the migrations since boot.
    Migrations,
    /// `GET /api/v1/events`: the event log.
    Events,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
}

/// One route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method token.
    pub method: &'static str,
    /// The path; a `{...}` segment (`{name}`, `{module}`, `{saved}`) matches any non-empty
    /// segment.
    pub path: &'static str,
    /// Whether it is served without a bearer token.
    pub public: bool,
    /// What it does.
    pub op: Op,
    /// The statuses it answers with when it succeeds.
    pub success: &'static [u16],
    /// The error statuses its handler answers with, beyond those any request can get
    /// ([`SERVER_ERRORS`], [`BODY_ERRORS`] for a method with a body, 401 unless public).
    pub errors: &'static [u16],
}

/// What the HTTP server answers on its own, before any route sees the request: 400 for a
/// malformed head (or a malformed bearer token), 408 for a request not complete in time, 413
/// for a declared body above the limit, 431 for a head above the limit.
pub const SERVER_ERRORS: &[u16] = &[400, 408, 413, 431];

/// What the HTTP server answers on its own to a method that carries a body (POST, PUT,
/// PATCH): 411 without `Content-Length` or with `Transfer-Encoding`.
pub const BODY_ERRORS: &[u16] = &[411];

const fn route(
    method: &'static str,
    path: &'static str,
    public: bool,
    op: Op,
    success: &'static [u16],
    errors: &'static [u16],
) -> Route {
    Route {
        method,
        path,
        public,
        op,
        success,
        errors,
    }
}

impl Route {
    /// Every status this route can answer with, ascending: its successes, its handler's
    /// errors, the server's own ([`SERVER_ERRORS`], and [`BODY_ERRORS`] for POST and PUT),
    /// and 401 unless it is public. The OpenAPI document lists exactly these.
    pub fn statuses(&self) -> alloc::vec::Vec<u16> {
        let body = matches!(self.method, "POST" | "PUT" | "PATCH");
        let mut out: alloc::vec::Vec<u16> = self
            .success
            .iter()
            .chain(self.errors)
            .chain(SERVER_ERRORS)
            .chain(if body { BODY_ERRORS } else { &[] })
            .chain(if self.public { &[][..] } else { &[401] })
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Errors of a route that starts a named VM: 400 for a malformed `{name}` or body, 404 for
/// an unknown VM, 409 when its state forbids it, 422 when its files or the host's memory do
/// not do, 500 when the kernel fails, 503 without virtualization.
const VM_START: &[u16] = &[400, 404, 409, 422, 500, 503];

/// Errors of pause and resume: 400 for a malformed `{name}` or a body, 404, 409 for a VM
/// not in the state the change needs, 500 when the kernel fails.
const VM_PAUSE: &[u16] = &[400, 404, 409, 500];

/// Errors of a save: 400 for a malformed `{name}` or body, 404, 409 when the VM is not
/// paused or the name is taken, 422 for a name that breaks the rule, 500 when the VMM fails,
/// 503 without host memory for the saved bytes.
const VM_SAVE: &[u16] = &[400, 404, 409, 422, 500, 503];

/// Errors of a restore: 400 for a malformed `{saved}` or a body, 404, 422 when the kernel
/// refuses the saved bytes, 500 when the new VM cannot be read back, 503 without
/// virtualization or host memory for its RAM.
const SAVED_RESTORE: &[u16] = &[400, 404, 422, 500, 503];

/// Every route.
pub static ROUTES: &[Route] = &[
    route("GET", "/", true, Op::Page, &[200, 304], &[500]),
    route(
        "GET",
        "/assets/{asset}",
        true,
        Op::Asset,
        &[200, 304],
        &[404, 500],
    ),
    route("GET", "/api/v1/health", true, Op::Health, &[200], &[]),
    route(
        "GET",
        "/api/v1/openapi.json",
        true,
        Op::OpenApi,
        &[200],
        &[],
    ),
    route("GET", "/api/v1/system", false, Op::System, &[200], &[]),
    route("GET", "/api/v1/modules", false, Op::Modules, &[200], &[]),
    route(
        "POST",
        "/api/v1/modules/{module}/run",
        false,
        Op::RunModule,
        &[201],
        &[400, 404, 422, 500, 503],
    ),
    route("GET", "/api/v1/store", false, Op::Store, &[200], &[503]),
    route("GET", "/api/v1/config", false, Op::GetConfig, &[200], &[]),
    route(
        "PUT",
        "/api/v1/config",
        false,
        Op::PutConfig,
        &[200],
        &[400, 412, 422, 428, 500, 503],
    ),
    route("GET", "/api/v1/vms", false, Op::ListVms, &[200], &[]),
    route(
        "POST",
        "/api/v1/vms",
        false,
        Op::CreateVm,
        &[201],
        &[400, 409, 422, 500, 503],
    ),
    route(
        "GET",
        "/api/v1/vms/{name}",
        false,
        Op::ShowVm,
        &[200],
        &[400, 404],
    ),
    route(
        "DELETE",
        "/api/v1/vms/{name}",
        false,
        Op::DestroyVm,
        &[200],
        &[400, 404, 409, 422, 500, 503],
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/start",
        false,
        Op::StartVm,
        &[200],
        VM_START,
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/stop",
        false,
        Op::StopVm,
        &[200, 202],
        &[400, 404, 409, 422, 500],
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/restart",
        false,
        Op::RestartVm,
        &[200, 202],
        VM_START,
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/pause",
        false,
        Op::PauseVm,
        &[200],
        VM_PAUSE,
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/resume",
        false,
        Op::ResumeVm,
        &[200],
        VM_PAUSE,
    ),
    route(
        "GET",
        "/api/v1/vms/{name}/console",
        false,
        Op::Console,
        &[200],
        &[400, 404],
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/console",
        false,
        Op::ConsoleInput,
        &[200],
        &[400, 404, 409, 413, 415],
    ),
    // Public: browsers send the token as the first WebSocket message (401 and 404 only
    // for an upgrade that carries a bearer token).
    route(
        "GET",
        "/api/v1/vms/{name}/console/ws",
        true,
        Op::ConsoleWs,
        &[101],
        &[400, 401, 404, 426],
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/save",
        false,
        Op::SaveVm,
        &[201],
        VM_SAVE,
    ),
    route("GET", "/api/v1/saved", false, Op::ListSaved, &[200], &[]),
    route(
        "GET",
        "/api/v1/saved/{saved}",
        false,
        Op::ShowSaved,
        &[200],
        &[400, 404],
    ),
    route(
        "DELETE",
        "/api/v1/saved/{saved}",
        false,
        Op::DeleteSaved,
        &[204],
        &[400, 404],
    ),
    route(
        "POST",
        "/api/v1/saved/{saved}/restore",
        false,
        Op::RestoreSaved,
        &[201],
        SAVED_RESTORE,
    ),
    route(
        "POST",
        "/api/v1/vms/{name}/snapshot",
        false,
        Op::TakeSnapshot,
        &[201],
        &[400, 404, 409, 422, 500, 503],
    ),
    route(
        "GET",
        "/api/v1/snapshots",
        false,
        Op::ListSnapshots,
        &[200],
        &[500, 503],
    ),
    route(
        "GET",
        "/api/v1/snapshots/{snapshot}",
        false,
        Op::ShowSnapshot,
        &[200],
        &[400, 404, 500, 503],
    ),
    route(
        "DELETE",
        "/api/v1/snapshots/{snapshot}",
        false,
        Op::DeleteSnapshot,
        &[204],
        &[400, 404, 500, 503],
    ),
    route(
        "POST",
        "/api/v1/snapshots/{snapshot}/restore",
        false,
        Op::RestoreSnapshot,
        &[201],
        &[400, 404, 409, 422, 500, 503],
    ),
    route("GET", "/api/v1/disks", false, Op::ListDisks, &[200], &[503]),
    route(
        "POST",
        "/api/v1/disks",
        false,
        Op::CreateDisk,
        &[201],
        &[400, 409, 422, 500, 503],
    ),
    route(
        "GET",
        "/api/v1/disks/{disk}",
        false,
        Op::ShowDisk,
        &[200],
        &[400, 404, 503],
    ),
    route(
        "DELETE",
        "/api/v1/disks/{disk}",
        false,
        Op::DeleteDisk,
        &[204],
        &[400, 404, 409, 500, 503],
    ),
    route("GET", "/api/v1/network", false, Op::Network, &[200], &[]),
    route(
        "POST",
        "/api/v1/vms/{name}/migrate",
        false,
        Op::MigrateVm,
        &[202],
        &[400, 404, 409, 422, 503],
    ),
    route(
        "GET",
        "/api/v1/migrations",
        false,
        Op::Migrations,
        &[200],
        &[],
    ),
    route("GET", "/api/v1/events", false, Op::Events, &[200], &[400]),
    route("GET", "/metrics", false, Op::Metrics, &[200], &[]),
];

/// Whether `path` is under [`API_PREFIX`] (where everything but the public routes needs a
/// token, including paths that do not exist).
pub fn under_api(path: &str) -> bool {
    path.strip_prefix(API_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The routes whose path matches `path` (any method), each with its parameter segment.
pub fn lookup(path: &str) -> impl Iterator<Item = (&'static Route, Option<&str>)> + '_ {
    ROUTES
        .iter()
        .filter_map(move |route| matches(route.path, path).map(|id| (route, id)))
}

/// Matches `path` against `pattern`: `Some(parameter segment, if the pattern has one)` on a
/// match. Patterns have at most one parameter.
fn matches<'p>(pattern: &str, path: &'p str) -> Option<Option<&'p str>> {
    let mut id = None;
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(id),
            (Some(p), Some(segment)) if is_parameter(p) && !segment.is_empty() => {
                id = Some(segment)
            }
            (Some(expected), Some(segment)) if expected == segment => {}
            _ => return None,
        }
    }
}

/// Whether a pattern segment is a parameter (`{name}`).
fn is_parameter(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert_eq!(matches("/", "/"), Some(None));
        assert_eq!(matches("/", ""), None);
        assert_eq!(matches("/api/v1/vms", "/api/v1/vms"), Some(None));
        assert_eq!(matches("/api/v1/vms", "/api/v1/vms/"), None);
        assert_eq!(
            matches("/api/v1/vms/{id}", "/api/v1/vms/7"),
            Some(Some("7"))
        );
        assert_eq!(
            matches("/api/v1/vms/{id}", "/api/v1/vms/x"),
            Some(Some("x"))
        );
        assert_eq!(matches("/api/v1/vms/{id}", "/api/v1/vms/"), None);
        assert_eq!(matches("/api/v1/vms/{id}", "/api/v1/vms/7/"), None);
        assert_eq!(
            matches("/api/v1/vms/{name}/stop", "/api/v1/vms/web/stop"),
            Some(Some("web"))
        );
        assert_eq!(
            matches(
                "/api/v1/modules/{module}/run",
                "/api/v1/modules/hello.bin/run"
            ),
            Some(Some("hello.bin"))
        );
        assert_eq!(
            matches("/api/v1/vms/{name}/stop", "/api/v1/vms//stop"),
            None
        );
        assert_eq!(matches("/api/v1/vms/{}", "/api/v1/vms/{}"), Some(None));
        assert_eq!(matches("/api/v1/vms", "/api/v1/VMS"), None);
    }

    #[test]
    fn api_prefix() {
        assert!(under_api("/api/v1"));
        assert!(under_api("/api/v1/"));
        assert!(under_api("/api/v1/anything"));
        assert!(!under_api("/api/v10"));
        assert!(!under_api("/api"));
        assert!(!under_api("/"));
    }

    #[test]
    fn table_is_consistent() {
        for (i, a) in ROUTES.iter().enumerate() {
            assert!(a.path.starts_with('/'));
            let page = a.path == "/" || a.path.starts_with("/assets/");
            assert!(
                page || a.path == "/metrics" || under_api(a.path),
                "{}",
                a.path
            );
            let parameters = a.path.split('/').filter(|s| is_parameter(s)).count();
            assert!(parameters <= 1, "{}", a.path);
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "duplicate {} {}",
                    a.method,
                    a.path
                );
                // All methods of one path share its auth, so 405 and 401 never depend on
                // the method.
                if a.path == b.path {
                    assert_eq!(a.public, b.public, "{}", a.path);
                }
            }
        }
    }
}
