//! The console: Settings > API in a browser, served by the admin listener at `/console/`.
//! Server-rendered HTML (maud), one small script (the copy button, the scope toggle), SVG
//! charts drawn here. It is another client of the same parts the admin API uses: the key
//! service for every change (audited with the signed-in actor), the API's list and audit
//! parsers, and the API's role table ([`Endpoint::role`]) for what each control needs.
//!
//! # Layout
//! - `session` the session map (idle and absolute expiry) · `csrf` origin and token checks ·
//!   `form` form bodies · `layout` the page frame, headers, escaping
//! - `sign_in` sign in and out · `keys_list` the key list and create · `key_detail` one key,
//!   its chart, hints and audit trail · `key_forms` edit, rotate, enable/disable, delete ·
//!   `trail` the audit view · `tokens` admin tokens: list, create, revoke · `chart` the SVG
//!   pictures

mod chart;
mod csrf;
mod form;
mod key_bits;
mod key_detail;
mod key_forms;
mod keys_list;
mod layout;
mod session;
mod sign_in;
mod tokens;
mod trail;

use super::{Admin, ApiError, Endpoint, access};
use crate::body::{self, Body};
use crate::keys::audit::{Actor, Context};
use crate::server::ConnInfo;
use form::Form;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use layout::{Viewer, error_page, redirect};
use std::time::Instant;

/// The session cookie's name.
const COOKIE: &str = "kbgate_console";
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's state: its sessions and the permissions offered in Edit.
pub(super) struct Console {
    sessions: session::Sessions,
    /// The permissions the route table uses, in order: the checkboxes of Edit.
    permissions: Vec<String>,
}

impl Console {
    /// `permissions`: those the route table uses (duplicates dropped, order kept).
    pub(super) fn new(permissions: impl IntoIterator<Item = String>) -> Console {
        let mut unique: Vec<String> = Vec::new();
        for permission in permissions {
            if !unique.contains(&permission) {
                unique.push(permission);
            }
        }
        Console {
            sessions: session::Sessions::default(),
            permissions: unique,
        }
    }
}

/// Is `path` the console's (`/` leads there)?
pub(super) fn owns(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// May `actor` do here what `method` on `endpoint` does in the API? The console shows a
/// control only when this holds, and checks it again when the form comes back.
fn may(actor: &Actor, endpoint: Endpoint, method: Method) -> bool {
    actor.role >= endpoint.role(&method)
}

/// Someone signed in: who (for the pages and the audit entries) and their session.
struct Signed {
    viewer: Viewer,
    ctx: Context,
    session: String,
}

impl Signed {
    /// A 200 page titled `title` showing `content`, with this viewer's navigation.
    fn page(&self, title: &str, content: maud::Markup) -> Response<Body> {
        layout::respond(
            StatusCode::OK,
            layout::page(title, Some(&self.viewer), content),
        )
    }

    /// 403 `insufficient_role`, as the API answers, unless the actor may.
    fn require(&self, endpoint: Endpoint, method: Method) -> Result<(), ApiError> {
        access::require(&self.viewer.actor, endpoint.role(&method))
    }
}

impl Admin {
    /// Answers a console request; errors become pages, a missing session the sign-in page.
    pub(super) async fn console(&self, request: Request<Body>, conn: &ConnInfo) -> Response<Body> {
        let path = request.uri().path().to_string();
        if path == "/" || path == "/console" {
            return redirect("/console/");
        }
        let rest = path
            .strip_prefix("/console/")
            .unwrap_or_default()
            .to_string();
        let segments: Vec<&str> = rest.split('/').collect();
        let method = request.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["static", "console.css"]) => return asset(CSS, "text/css"),
            (&Method::GET, ["static", "console.js"]) => return asset(JS, "text/javascript"),
            (&Method::GET, ["login"]) => return sign_in::page(StatusCode::OK, None),
            (&Method::POST, ["login"]) => return self.sign_in(request, conn).await,
            _ => {}
        }
        if !matches!(method, Method::GET | Method::POST) {
            return error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "The console answers GET and POST only.",
                None,
            );
        }
        if method == Method::POST && !csrf::same_origin(request.headers()) {
            return error_page(
                StatusCode::FORBIDDEN,
                "A cross-site form post is refused.",
                None,
            );
        }
        let signed = match self.signed_in(request.headers(), conn).await {
            Ok(signed) => signed,
            Err(error) if error.status == StatusCode::UNAUTHORIZED => {
                return sign_in::forget(redirect("/console/login"), conn);
            }
            Err(error) => return error_page(error.status, &error.message, None),
        };
        let query = request.uri().query().map(str::to_string);
        let result = match method {
            Method::GET => self.console_get(&signed, &segments, query.as_deref()).await,
            _ => self.console_post(&signed, &segments, request).await,
        };
        result
            .unwrap_or_else(|error| error_page(error.status, &error.message, Some(&signed.viewer)))
    }

    async fn console_get(
        &self,
        signed: &Signed,
        segments: &[&str],
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let query = Form::parse(query.unwrap_or_default().as_bytes());
        match segments {
            [""] => self.keys_list(signed, &query).await,
            ["keys", id] => self.key_detail(signed, id, &query).await,
            ["keys", id, "edit"] => self.edit_page(signed, id).await,
            ["keys", id, "rotate"] => self.rotate_page(signed, id).await,
            ["keys", id, "delete"] => self.delete_page(signed, id).await,
            ["audit"] => self.audit_view(signed, &query).await,
            ["tokens"] => self.tokens_view(signed).await,
            ["tokens", id, "delete"] => self.revoke_page(signed, id).await,
            _ => Err(not_found()),
        }
    }

    /// A form post: its CSRF token must be the session's before anything else is read.
    async fn console_post(
        &self,
        signed: &Signed,
        segments: &[&str],
        request: Request<Body>,
    ) -> Result<Response<Body>, ApiError> {
        let form = &Form::parse(&super::read_body(request).await?);
        if !csrf::token_matches(&signed.viewer.csrf, form.get("csrf")) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "The form's CSRF token is missing or wrong: reload the page and try again.",
            ));
        }
        match segments {
            ["logout"] => Ok(self.sign_out(signed)),
            ["keys"] => self.create_key(signed).await,
            ["keys", id, "edit"] => self.edit_key(signed, id, form).await,
            ["keys", id, "rotate"] => self.rotate_key(signed, id, form).await,
            ["keys", id, "delete"] => self.delete_key(signed, id).await,
            ["keys", id, "enable"] => self.enable_key(signed, id, true, form).await,
            ["keys", id, "disable"] => self.enable_key(signed, id, false, form).await,
            ["tokens"] => self.create_token_form(signed, form).await,
            ["tokens", id, "delete"] => self.revoke_token_form(signed, id).await,
            _ => Err(not_found()),
        }
    }

    /// The session's actor, with its token checked again now, as the API checks its bearer.
    async fn signed_in(&self, headers: &HeaderMap, conn: &ConnInfo) -> Result<Signed, ApiError> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Sign in.");
        let session_id = sign_in::cookie(headers).ok_or_else(unauthorized)?;
        let session = self
            .console
            .sessions
            .get(&session_id, Instant::now())
            .ok_or_else(unauthorized)?;
        let actor = match self.actor_of(&session.credential).await {
            Ok(actor) => actor,
            Err(error) => {
                if error.status == StatusCode::UNAUTHORIZED {
                    self.console.sessions.remove(&session_id);
                }
                return Err(error);
            }
        };
        Ok(Signed {
            ctx: access::context(actor.clone(), headers, conn),
            viewer: Viewer {
                actor,
                csrf: session.csrf,
            },
            session: session_id,
        })
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "There is no such page.")
}

/// A file of the console's own, compiled into the binary.
fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = layout::secure(Response::new(body::full(text)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
