//! The frame of every console page (head, navigation, sign-out form) and the headers every
//! console answer carries. maud escapes every `(value)` it renders: a user string can never
//! become markup, and there is no raw-HTML path in the console.

use crate::body::{self, Body};
use crate::keys::audit::Actor;
use http::{HeaderValue, Response, StatusCode, header};
use maud::{DOCTYPE, Markup, html};

/// Scripts and styles only from this listener's own files: no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Who is signed in, as each page needs it: their actor and the session's CSRF token.
pub(super) struct Viewer {
    pub actor: Actor,
    pub csrf: String,
}

/// The hidden field every form carries (see `csrf`).
pub(super) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A form's buttons: `submit`, and Cancel back to `cancel`.
pub(super) fn actions(submit: Markup, cancel: &str) -> Markup {
    html! { div.actions { (submit) a href=(cancel) { "Cancel" } } }
}

/// A whole page: `title`, the navigation when someone is signed in, and `content`.
pub(super) fn page(title: &str, viewer: Option<&Viewer>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kbgate" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/console/" { "kbgate" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Sections" {
                            a href="/console/" { "API keys" }
                            a href="/console/audit" { "Audit" }
                            @if super::may(&viewer.actor, super::Endpoint::AdminTokens, http::Method::GET) {
                                a href="/console/tokens" { "Admin tokens" }
                            }
                        }
                        form.signout method="post" action="/console/logout" {
                            (csrf_field(&viewer.csrf))
                            span.who { (viewer.actor.name) " (" (viewer.actor.role) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

/// An HTML answer with the console's headers.
pub(super) fn respond(status: StatusCode, markup: Markup) -> Response<Body> {
    let mut response = Response::new(body::full(markup.into_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(response)
}

/// 303 See Other to `location` (after a form post, or to the sign-in page).
pub(super) fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    secure(response)
}

/// The headers on every console answer. Every page may show key data, so none is cached.
pub(super) fn secure(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    let set = |headers: &mut http::HeaderMap, name, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

/// An error page: the status and the message, as text.
pub(super) fn error_page(
    status: StatusCode,
    message: &str,
    viewer: Option<&Viewer>,
) -> Response<Body> {
    let title = status.canonical_reason().unwrap_or("Error");
    let content = html! {
        p.error role="alert" { (message) }
        p { a href="/console/" { "Back to the API keys" } }
    };
    respond(status, page(title, viewer, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::admin_token::Role;

    #[test]
    fn user_strings_are_text_not_markup() {
        let viewer = Viewer {
            actor: Actor {
                id: "t1".into(),
                name: "<img src=x onerror=alert(1)>".into(),
                role: Role::Admin,
            },
            csrf: "\"><script>".into(),
        };
        let html = page(
            "<script>alert(1)</script>",
            Some(&viewer),
            html! { p { ("a & b") } },
        )
        .into_string();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; · kbgate"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;\""));
        assert!(html.contains("a &amp; b"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img"));
    }

    #[test]
    fn every_answer_has_the_headers() {
        for response in [respond(StatusCode::OK, html! {}), redirect("/console/")] {
            let h = response.headers();
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("frame-ancestors 'none'")
            );
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
        }
    }
}
