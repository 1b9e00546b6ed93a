//! Sign in with an admin token (any role) and sign out. The token travels once, in a POST body;
//! the session keeps only its hash, and the cookie only a random id.

use super::form::Form;
use super::layout::{self, redirect, respond};
use super::{COOKIE, Signed, csrf};
use crate::admin::Admin;
use crate::body::Body;
use crate::server::ConnInfo;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use maud::html;
use std::time::Instant;

/// The session id from the request's cookies.
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The cookie's attributes: only the console's pages get it, no script reads it, no other
/// site's request carries it, and over TLS it is never sent in the clear.
fn set_cookie(response: &mut Response<Body>, value: &str, extra: &str, conn: &ConnInfo) {
    let secure = if conn.tls { "; Secure" } else { "" };
    let text = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}{extra}");
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// `response`, telling the browser to drop the session cookie.
pub(super) fn forget(mut response: Response<Body>, conn: &ConnInfo) -> Response<Body> {
    set_cookie(&mut response, "", "; Max-Age=0", conn);
    response
}

/// The sign-in form, with `message` (why the last try was refused) above it.
pub(super) fn page(status: StatusCode, message: Option<&str>) -> Response<Body> {
    let content = html! {
        @if let Some(message) = message { p.error role="alert" { (message) } }
        form.card method="post" action="/console/login" {
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            p.help { "The config's admin token or one from Admin tokens (kbadm_…). It is sent once; the session keeps only its hash." }
            button type="submit" { "Sign in" }
        }
    };
    respond(status, layout::page("Sign in", None, content))
}

impl Admin {
    pub(super) async fn sign_in(&self, request: Request<Body>, conn: &ConnInfo) -> Response<Body> {
        if !csrf::same_origin(request.headers()) {
            return page(
                StatusCode::FORBIDDEN,
                Some("A cross-site sign-in is refused."),
            );
        }
        let body = match super::super::read_body(request).await {
            Ok(body) => body,
            Err(error) => return page(error.status, Some(&error.message)),
        };
        let form = Form::parse(&body);
        let token = form.get("token").unwrap_or_default().trim();
        let refused = || {
            page(
                StatusCode::UNAUTHORIZED,
                Some("That admin token is not valid."),
            )
        };
        let Some(credential) = self.credential(token) else {
            return refused();
        };
        let actor = match self.actor_of(&credential).await {
            Ok(actor) => actor,
            Err(error) if error.status == StatusCode::UNAUTHORIZED => return refused(),
            Err(error) => return page(error.status, Some(&error.message)),
        };
        let session = self.console.sessions.create(credential, Instant::now());
        tracing::info!(target: "kbgate::admin", actor = %actor.id, "console sign in");
        let mut response = redirect("/console/");
        set_cookie(&mut response, &session, "", conn);
        response
    }

    /// Ends the session on the server and drops the cookie.
    pub(super) fn sign_out(&self, signed: &Signed) -> Response<Body> {
        self.console.sessions.remove(&signed.session);
        let mut response = redirect("/console/login");
        // The cookie's attributes need no TLS flag to be dropped.
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "kbgate_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        response
    }
}
