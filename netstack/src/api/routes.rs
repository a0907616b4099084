//! The route table: every method and path the router answers, and path matching.
//!
//! [`ROUTES`] is the single list the router dispatches from; the OpenAPI document in
//! [`super::openapi`] is written by hand and a test checks that its paths and methods are
//! exactly these.

/// The prefix of the REST API.
pub const API_PREFIX: &str = "/api/v1";

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /`: the web page.
    Page,
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
    /// `GET /api/v1/vms/{name}/console`.
    Console,
    /// `POST /api/v1/vms/{name}/console`.
    ConsoleInput,
}

/// One route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method token.
    pub method: &'static str,
    /// The path; a `{...}` segment (`{name}`, `{module}`) matches any non-empty segment.
    pub path: &'static str,
    /// Whether it is served without a bearer token.
    pub public: bool,
    /// What it does.
    pub op: Op,
}

const fn route(method: &'static str, path: &'static str, public: bool, op: Op) -> Route {
    Route {
        method,
        path,
        public,
        op,
    }
}

/// Every route.
pub static ROUTES: &[Route] = &[
    route("GET", "/", true, Op::Page),
    route("GET", "/api/v1/health", true, Op::Health),
    route("GET", "/api/v1/openapi.json", true, Op::OpenApi),
    route("GET", "/api/v1/system", false, Op::System),
    route("GET", "/api/v1/modules", false, Op::Modules),
    route("POST", "/api/v1/modules/{module}/run", false, Op::RunModule),
    route("GET", "/api/v1/store", false, Op::Store),
    route("GET", "/api/v1/config", false, Op::GetConfig),
    route("PUT", "/api/v1/config", false, Op::PutConfig),
    route("GET", "/api/v1/vms", false, Op::ListVms),
    route("POST", "/api/v1/vms", false, Op::CreateVm),
    route("GET", "/api/v1/vms/{name}", false, Op::ShowVm),
    route("DELETE", "/api/v1/vms/{name}", false, Op::DestroyVm),
    route("POST", "/api/v1/vms/{name}/start", false, Op::StartVm),
    route("POST", "/api/v1/vms/{name}/stop", false, Op::StopVm),
    route("POST", "/api/v1/vms/{name}/restart", false, Op::RestartVm),
    route("GET", "/api/v1/vms/{name}/console", false, Op::Console),
    route(
        "POST",
        "/api/v1/vms/{name}/console",
        false,
        Op::ConsoleInput,
    ),
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
            assert!(a.path == "/" || under_api(a.path), "{}", a.path);
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
