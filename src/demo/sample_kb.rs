//! The sample knowledge base that `kbgate demo` starts behind the gateway.
//!
//! A small in-memory HelpDocs-style API with real behaviour (CRUD, version history, search),
//! so the demo exercises the gateway against something that acts like a real upstream. It
//! insists on its own upstream credential, which only the gateway holds, to show that
//! gateway clients never need to see it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderName, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Largest request body accepted; a bigger one gets 413 instead of being buffered.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every response is a fully buffered JSON document.
type Reply = Response<Full<Bytes>>;

/// Serves the sample KB on `listener` until the returned handle is aborted or the runtime stops.
/// `api_key`: requests must carry `Authorization: Bearer <api_key>` or `?key=<api_key>`, else 401
/// `{"error":{"code":"unauthorized","message":"..."}}`.
pub fn spawn(listener: TcpListener, api_key: String) -> JoinHandle<()> {
    let app = Arc::new(App {
        api_key,
        store: Mutex::new(Store::seeded()),
    });
    tokio::spawn(accept_loop(listener, app))
}

/// Connections live in a `JoinSet` owned by this task, so aborting the handle returned by
/// [`spawn`] also closes every open connection instead of leaving them running.
async fn accept_loop(listener: TcpListener, app: Arc<App>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(serve_connection(stream, Arc::clone(&app)));
            }
            // Usually transient (e.g. out of file descriptors): back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Serves one connection as HTTP/1.1 or h2c, whichever the client speaks.
async fn serve_connection(stream: TcpStream, app: Arc<App>) {
    let service = service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    // A failed connection (client went away, protocol error) affects nobody else.
    let _ = Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Shared server state: the upstream credential and the data.
struct App {
    api_key: String,
    store: Mutex<Store>,
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        if !self.is_authorized(&req) {
            return SampleError::unauthorized().into_reply();
        }
        let path = req.uri().path().to_owned();
        let result = match SampleResource::parse(&path) {
            Some(resource) => self.dispatch(resource, req).await,
            None => Err(SampleError::not_found(format!(
                "no route for {} {path}",
                req.method()
            ))),
        };
        match result {
            Ok((status, body)) => json_reply(status, &body),
            Err(err) => err.into_reply(),
        }
    }

    /// Accepts the key from the `Authorization: Bearer` header or the `key` query parameter.
    fn is_authorized(&self, req: &Request<Incoming>) -> bool {
        let bearer = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        let query_key = req.uri().query().and_then(|q| query_param(q, "key"));
        bearer.is_some_and(|token| self.key_matches(token))
            || query_key.is_some_and(|key| self.key_matches(&key))
    }

    fn key_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && constant_time_eq(presented.as_bytes(), self.api_key.as_bytes())
    }

    /// A poisoned lock only means another request panicked; the data is still usable.
    fn store(&self) -> MutexGuard<'_, Store> {
        crate::lock(&self.store)
    }

    async fn dispatch(&self, resource: SampleResource<'_>, req: Request<Incoming>) -> Outcome {
        let method = req.method().clone();
        let query = req.uri().query().unwrap_or_default().to_owned();
        match (resource, &method) {
            (SampleResource::Articles, &Method::GET) => {
                let category = query_param(&query, "category_id").filter(|c| !c.is_empty());
                let articles = self.store().list_articles(category.as_deref());
                ok(json!({ "articles": articles }))
            }
            (SampleResource::Articles, &Method::POST) => {
                let input = read_json(req).await?;
                let article = self.store().create_article(input)?;
                Ok((StatusCode::CREATED, json!({ "article": article })))
            }
            (SampleResource::Article(id), &Method::GET) => {
                let article = self.store().article(id)?;
                ok(json!({ "article": article }))
            }
            (SampleResource::Article(id), &Method::PATCH) => {
                let input = read_json(req).await?;
                let article = self.store().update_article(id, input)?;
                ok(json!({ "article": article }))
            }
            (SampleResource::Article(id), &Method::DELETE) => {
                self.store().delete_article(id)?;
                ok(json!({ "deleted": id }))
            }
            (SampleResource::ArticleVersions(id), &Method::GET) => {
                let versions = self.store().article(id)?.versions;
                ok(json!({ "versions": versions }))
            }
            (SampleResource::Categories, &Method::GET) => {
                let categories = self.store().categories.clone();
                ok(json!({ "categories": categories }))
            }
            (SampleResource::Categories, &Method::POST) => {
                let input = read_json(req).await?;
                let category = self.store().create_category(input)?;
                Ok((StatusCode::CREATED, json!({ "category": category })))
            }
            (SampleResource::Category(id), &Method::GET) => {
                let category = self.store().category(id)?;
                ok(json!({ "category": category }))
            }
            (SampleResource::Category(id), &Method::PATCH) => {
                let input = read_json(req).await?;
                let category = self.store().update_category(id, input)?;
                ok(json!({ "category": category }))
            }
            (SampleResource::Category(id), &Method::DELETE) => {
                self.store().delete_category(id)?;
                ok(json!({ "deleted": id }))
            }
            (SampleResource::Search, &Method::GET) => {
                let needle = query_param(&query, "query").unwrap_or_default();
                let needle = needle.trim();
                if needle.is_empty() {
                    return Err(SampleError::invalid("the `query` parameter is required"));
                }
                let articles = self.store().search(needle);
                ok(json!({ "articles": articles }))
            }
            (SampleResource::Account, &Method::GET) => ok(json!({
                "account": { "account_id": "demo", "name": "Demo Knowledge Base" }
            })),
            (SampleResource::Groups, &Method::GET) => ok(json!({
                "groups": [{ "group_id": "g1", "name": "Support" }]
            })),
            (resource, _) => Err(SampleError::method_not_allowed(&method, resource.allowed())),
        }
    }
}

/// What a handler produces: a status and JSON body, or an error rendered as JSON.
type Outcome = Result<(StatusCode, Value), SampleError>;

fn ok(body: Value) -> Outcome {
    Ok((StatusCode::OK, body))
}

/// The resources the sample KB serves, parsed from a path; anything else is a 404.
#[derive(Clone, Copy)]
enum SampleResource<'a> {
    Articles,
    Article(&'a str),
    ArticleVersions(&'a str),
    Categories,
    Category(&'a str),
    Search,
    Account,
    Groups,
}

impl<'a> SampleResource<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let resource = match segments.as_slice() {
            ["", "v1", "article"] => SampleResource::Articles,
            ["", "v1", "article", id] => SampleResource::Article(id),
            ["", "v1", "article", id, "versions"] => SampleResource::ArticleVersions(id),
            ["", "v1", "category"] => SampleResource::Categories,
            ["", "v1", "category", id] => SampleResource::Category(id),
            ["", "v1", "search"] => SampleResource::Search,
            ["", "v1", "account"] => SampleResource::Account,
            ["", "v1", "group"] => SampleResource::Groups,
            _ => return None,
        };
        Some(resource)
    }

    /// Value of the `Allow` header sent with a 405 for this resource.
    fn allowed(self) -> &'static str {
        match self {
            SampleResource::Articles | SampleResource::Categories => "GET, POST",
            SampleResource::Article(_) | SampleResource::Category(_) => "GET, PATCH, DELETE",
            SampleResource::ArticleVersions(_)
            | SampleResource::Search
            | SampleResource::Account
            | SampleResource::Groups => "GET",
        }
    }
}

/// The sample KB's error answer: `{"error":{"code":...,"message":...}}` plus an optional header.
struct SampleError {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, &'static str)>,
}

impl SampleError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SampleError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn unauthorized() -> Self {
        SampleError {
            header: Some((WWW_AUTHENTICATE, "Bearer")),
            ..SampleError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer <key> or ?key=<key>)",
            )
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        SampleError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn method_not_allowed(method: &Method, allowed: &'static str) -> Self {
        SampleError {
            header: Some((ALLOW, allowed)),
            ..SampleError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; allowed: {allowed}"),
            )
        }
    }

    /// A well-formed request whose content breaks a rule (missing title, unknown category...).
    fn invalid(message: impl Into<String>) -> Self {
        SampleError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn into_reply(self) -> Reply {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut reply = json_reply(self.status, &body);
        if let Some((name, value)) = self.header {
            reply
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        reply
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// Reads at most [`MAX_BODY_BYTES`] of the body and parses it as JSON.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, SampleError> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(SampleError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(err) => {
            return Err(SampleError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("could not read request body: {err}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        SampleError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON for this endpoint: {err}"),
        )
    })
}

/// Extracts the token from an `Authorization` value; the scheme is case-insensitive.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// First value of `name` in a query string, percent-decoded with `+` as a space.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key) == name).then(|| decode_component(value))
    })
}

/// `+` becomes a space before percent-decoding, so an encoded `%2B` stays a plus sign.
fn decode_component(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Clone, Serialize)]
struct Article {
    article_id: String,
    title: String,
    body: String,
    category_id: Option<String>,
    is_published: bool,
    created_at: String,
    updated_at: String,
    /// Previous states, oldest first; served only by the versions endpoint.
    #[serde(skip)]
    versions: Vec<Version>,
}

#[derive(Clone, Serialize)]
struct Version {
    version: usize,
    title: String,
    body: String,
    updated_at: String,
}

#[derive(Clone, Serialize)]
struct Category {
    category_id: String,
    title: String,
    description: String,
    created_at: String,
    updated_at: String,
}

/// Body of POST and PATCH on articles; absent fields are left unchanged by PATCH.
#[derive(Deserialize)]
struct ArticleInput {
    title: Option<String>,
    body: Option<String>,
    category_id: Option<String>,
    is_published: Option<bool>,
}

/// Body of POST and PATCH on categories; absent fields are left unchanged by PATCH.
#[derive(Deserialize)]
struct CategoryInput {
    title: Option<String>,
    description: Option<String>,
}

/// All data, in creation order. Ids are never reused, even after a delete.
struct Store {
    articles: Vec<Article>,
    categories: Vec<Category>,
    last_article: u32,
    last_category: u32,
}

impl Store {
    fn seeded() -> Self {
        let mut store = Store {
            articles: Vec::new(),
            categories: Vec::new(),
            last_article: 0,
            last_category: 0,
        };
        let created = "2025-01-06T09:00:00Z";
        store.seed_category(
            "Getting Started",
            "Set up your account and find your way around.",
            created,
        );
        store.seed_category("Billing", "Plans, invoices and payment methods.", created);
        store.seed_article(
            "Reset your password",
            "Forgot your password? Click \"Forgot password\" on the sign-in page and enter \
             your email address. We will send you a reset link that stays valid for 30 minutes.",
            "c1",
            created,
        );
        store.seed_article(
            "Create an API key",
            "Open Settings > API keys and click \"New key\". Give the key a name and choose \
             its scopes. The key is shown only once, so store it somewhere safe.",
            "c1",
            created,
        );
        store.seed_article(
            "Update billing details",
            "Go to Billing > Payment method to change the card on file or the billing \
             address. Changes apply from your next invoice.",
            "c2",
            created,
        );
        store.seed_article(
            "Export your data",
            "Download every article as a ZIP archive of Markdown files from Settings > \
             Export. Large exports are emailed to you once they are ready.",
            "c1",
            created,
        );
        store
    }

    fn seed_category(&mut self, title: &str, description: &str, at: &str) {
        self.last_category += 1;
        self.categories.push(Category {
            category_id: format!("c{}", self.last_category),
            title: title.to_owned(),
            description: description.to_owned(),
            created_at: at.to_owned(),
            updated_at: at.to_owned(),
        });
    }

    fn seed_article(&mut self, title: &str, body: &str, category_id: &str, at: &str) {
        self.last_article += 1;
        self.articles.push(Article {
            article_id: format!("a{}", self.last_article),
            title: title.to_owned(),
            body: body.to_owned(),
            category_id: Some(category_id.to_owned()),
            is_published: true,
            created_at: at.to_owned(),
            updated_at: at.to_owned(),
            versions: Vec::new(),
        });
    }

    fn list_articles(&self, category_id: Option<&str>) -> Vec<Article> {
        self.articles
            .iter()
            .filter(|a| category_id.is_none_or(|c| a.category_id.as_deref() == Some(c)))
            .cloned()
            .collect()
    }

    /// Case-insensitive substring match on title or body.
    fn search(&self, needle: &str) -> Vec<Article> {
        let needle = needle.to_lowercase();
        self.articles
            .iter()
            .filter(|a| {
                a.title.to_lowercase().contains(&needle) || a.body.to_lowercase().contains(&needle)
            })
            .cloned()
            .collect()
    }

    fn article_index(&self, id: &str) -> Result<usize, SampleError> {
        self.articles
            .iter()
            .position(|a| a.article_id == id)
            .ok_or_else(|| SampleError::not_found(format!("no article with id {id:?}")))
    }

    fn article(&self, id: &str) -> Result<Article, SampleError> {
        Ok(self.articles[self.article_index(id)?].clone())
    }

    fn create_article(&mut self, input: ArticleInput) -> Result<Article, SampleError> {
        let title = require_title(input.title)?;
        if let Some(category_id) = &input.category_id {
            self.category_index(category_id)
                .map_err(|_| unknown_category(category_id))?;
        }
        self.last_article += 1;
        let now = now();
        let article = Article {
            article_id: format!("a{}", self.last_article),
            title,
            body: input.body.unwrap_or_default(),
            category_id: input.category_id,
            is_published: input.is_published.unwrap_or(false),
            created_at: now.clone(),
            updated_at: now,
            versions: Vec::new(),
        };
        self.articles.push(article.clone());
        Ok(article)
    }

    /// Applies the given fields; if anything actually changed, the previous title, body and
    /// timestamp are kept as a new version so edits can be reviewed later.
    fn update_article(&mut self, id: &str, input: ArticleInput) -> Result<Article, SampleError> {
        let index = self.article_index(id)?;
        if let Some(title) = &input.title {
            check_title(title)?;
        }
        if let Some(category_id) = &input.category_id {
            self.category_index(category_id)
                .map_err(|_| unknown_category(category_id))?;
        }
        let article = &mut self.articles[index];
        let previous = Version {
            version: article.versions.len() + 1,
            title: article.title.clone(),
            body: article.body.clone(),
            updated_at: article.updated_at.clone(),
        };
        let mut changed = replace_if_different(&mut article.title, input.title);
        changed |= replace_if_different(&mut article.body, input.body);
        changed |= replace_if_different(&mut article.category_id, input.category_id.map(Some));
        changed |= replace_if_different(&mut article.is_published, input.is_published);
        if changed {
            article.versions.push(previous);
            article.updated_at = now();
        }
        Ok(article.clone())
    }

    fn delete_article(&mut self, id: &str) -> Result<(), SampleError> {
        let index = self.article_index(id)?;
        self.articles.remove(index);
        Ok(())
    }

    fn category_index(&self, id: &str) -> Result<usize, SampleError> {
        self.categories
            .iter()
            .position(|c| c.category_id == id)
            .ok_or_else(|| SampleError::not_found(format!("no category with id {id:?}")))
    }

    fn category(&self, id: &str) -> Result<Category, SampleError> {
        Ok(self.categories[self.category_index(id)?].clone())
    }

    fn create_category(&mut self, input: CategoryInput) -> Result<Category, SampleError> {
        let title = require_title(input.title)?;
        self.last_category += 1;
        let now = now();
        let category = Category {
            category_id: format!("c{}", self.last_category),
            title,
            description: input.description.unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now,
        };
        self.categories.push(category.clone());
        Ok(category)
    }

    fn update_category(&mut self, id: &str, input: CategoryInput) -> Result<Category, SampleError> {
        let index = self.category_index(id)?;
        if let Some(title) = &input.title {
            check_title(title)?;
        }
        let category = &mut self.categories[index];
        let mut changed = replace_if_different(&mut category.title, input.title);
        changed |= replace_if_different(&mut category.description, input.description);
        if changed {
            category.updated_at = now();
        }
        Ok(category.clone())
    }

    /// Articles in a deleted category become uncategorized rather than pointing at nothing.
    fn delete_category(&mut self, id: &str) -> Result<(), SampleError> {
        let index = self.category_index(id)?;
        self.categories.remove(index);
        for article in &mut self.articles {
            if article.category_id.as_deref() == Some(id) {
                article.category_id = None;
            }
        }
        Ok(())
    }
}

/// Sets `field` to `new` when given and different; returns whether it changed.
fn replace_if_different<T: PartialEq>(field: &mut T, new: Option<T>) -> bool {
    match new {
        Some(value) if *field != value => {
            *field = value;
            true
        }
        _ => false,
    }
}

fn require_title(title: Option<String>) -> Result<String, SampleError> {
    let title = title.ok_or_else(|| SampleError::invalid("`title` is required"))?;
    check_title(&title)?;
    Ok(title)
}

fn check_title(title: &str) -> Result<(), SampleError> {
    if title.trim().is_empty() {
        return Err(SampleError::invalid("`title` must not be empty"));
    }
    Ok(())
}

/// An article may only point at a category that exists; that is a 400, not a 404.
fn unknown_category(id: &str) -> SampleError {
    SampleError::invalid(format!("no category with id {id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "upstream-test-key";

    /// A running sample KB plus a client that sends the right credential.
    struct Kb {
        base: String,
        addr: std::net::SocketAddr,
        client: reqwest::Client,
        handle: JoinHandle<()>,
    }

    impl Kb {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            Kb {
                base: format!("http://{addr}"),
                addr,
                client: reqwest::Client::new(),
                handle: spawn(listener, KEY.to_owned()),
            }
        }

        async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut request = self
                .client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(KEY);
            if let Some(body) = body {
                request = request.json(&body);
            }
            read(request.send().await.unwrap()).await
        }

        async fn get(&self, path: &str) -> (u16, Value) {
            self.call(Method::GET, path, None).await
        }
    }

    impl Drop for Kb {
        fn drop(&mut self) {
            self.handle.abort();
        }
    }

    /// Status and JSON body; also checks that every response is labelled as JSON.
    async fn read(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/json"
        );
        (status, response.json().await.unwrap())
    }

    fn titles(articles: &Value) -> Vec<&str> {
        articles
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["title"].as_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn credential_is_required() {
        let kb = Kb::start().await;
        let url = format!("{}/v1/account", kb.base);

        let (status, body) = read(kb.client.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(body["error"]["message"].is_string());

        let wrong_header = kb.client.get(&url).bearer_auth("nope").send().await;
        assert_eq!(read(wrong_header.unwrap()).await.0, 401);
        let wrong_query = kb.client.get(format!("{url}?key=nope")).send().await;
        assert_eq!(read(wrong_query.unwrap()).await.0, 401);
        let empty_query = kb.client.get(format!("{url}?key=")).send().await;
        assert_eq!(read(empty_query.unwrap()).await.0, 401);
        let unknown_route = kb.client.get(format!("{}/nowhere", kb.base)).send().await;
        assert_eq!(read(unknown_route.unwrap()).await.0, 401);

        let (status, body) = read(kb.client.get(&url).bearer_auth(KEY).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(body["account"]["account_id"], "demo");
        assert_eq!(body["account"]["name"], "Demo Knowledge Base");

        let by_query = kb.client.get(format!("{url}?key={KEY}")).send().await;
        assert_eq!(read(by_query.unwrap()).await.0, 200);
        let lowercase_scheme = kb
            .client
            .get(&url)
            .header(AUTHORIZATION, format!("bearer {KEY}"))
            .send()
            .await;
        assert_eq!(read(lowercase_scheme.unwrap()).await.0, 200);
    }

    #[tokio::test]
    async fn article_lifecycle_records_versions() {
        let kb = Kb::start().await;

        let (status, body) = kb.get("/v1/article").await;
        assert_eq!(status, 200);
        assert_eq!(body["articles"].as_array().unwrap().len(), 4);
        assert_eq!(body["articles"][0]["article_id"], "a1");
        assert_eq!(body["articles"][0]["title"], "Reset your password");

        let (status, body) = kb.get("/v1/article/a2").await;
        assert_eq!(status, 200);
        assert_eq!(body["article"]["title"], "Create an API key");

        let new = json!({
            "title": "Invite your team",
            "body": "Send invitations from Settings > Team.",
            "category_id": "c1",
            "is_published": true
        });
        let (status, body) = kb.call(Method::POST, "/v1/article", Some(new)).await;
        assert_eq!(status, 201);
        let article = &body["article"];
        assert_eq!(article["article_id"], "a5");
        assert_eq!(article["title"], "Invite your team");
        assert_eq!(article["category_id"], "c1");
        assert_eq!(article["is_published"], true);
        let created_at = article["created_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
        assert!(created_at.ends_with('Z'));
        assert!(article.get("versions").is_none());

        let (status, body) = kb.get("/v1/article/a5/versions").await;
        assert_eq!(status, 200);
        assert_eq!(body["versions"], json!([]));

        let patch = json!({ "title": "Invite your teammates" });
        let (status, body) = kb.call(Method::PATCH, "/v1/article/a5", Some(patch)).await;
        assert_eq!(status, 200);
        assert_eq!(body["article"]["title"], "Invite your teammates");
        assert_eq!(
            body["article"]["body"],
            "Send invitations from Settings > Team."
        );

        let patch = json!({ "body": "Open Settings > Team and click Invite." });
        kb.call(Method::PATCH, "/v1/article/a5", Some(patch)).await;
        // A PATCH that changes nothing does not add a version.
        let patch = json!({ "is_published": true });
        kb.call(Method::PATCH, "/v1/article/a5", Some(patch)).await;

        let (_, body) = kb.get("/v1/article/a5/versions").await;
        let versions = body["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0]["version"], 1);
        assert_eq!(versions[0]["title"], "Invite your team");
        assert_eq!(versions[0]["updated_at"], created_at);
        assert_eq!(versions[1]["version"], 2);
        assert_eq!(versions[1]["title"], "Invite your teammates");
        assert_eq!(
            versions[1]["body"],
            "Send invitations from Settings > Team."
        );

        let (status, body) = kb.call(Method::DELETE, "/v1/article/a5", None).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({ "deleted": "a5" }));
        assert_eq!(kb.get("/v1/article/a5").await.0, 404);
        assert_eq!(kb.get("/v1/article/a5/versions").await.0, 404);

        // Ids are not reused after a delete.
        let (_, body) = kb
            .call(
                Method::POST,
                "/v1/article",
                Some(json!({ "title": "Next" })),
            )
            .await;
        assert_eq!(body["article"]["article_id"], "a6");
        assert_eq!(body["article"]["body"], "");
        assert_eq!(body["article"]["category_id"], Value::Null);
        assert_eq!(body["article"]["is_published"], false);
    }

    #[tokio::test]
    async fn article_validation() {
        let kb = Kb::start().await;
        for bad in [
            json!({}),
            json!({ "title": "" }),
            json!({ "title": "   " }),
            json!({ "title": "x", "category_id": "c99" }),
        ] {
            let (status, body) = kb.call(Method::POST, "/v1/article", Some(bad)).await;
            assert_eq!(status, 400);
            assert_eq!(body["error"]["code"], "invalid_request");
        }
        let (status, body) = kb
            .call(Method::POST, "/v1/article", Some(json!({ "title": 5 })))
            .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_json");

        let patch = Some(json!({ "title": "" }));
        assert_eq!(kb.call(Method::PATCH, "/v1/article/a1", patch).await.0, 400);
        let (_, body) = kb.get("/v1/article/a1/versions").await;
        assert_eq!(body["versions"], json!([]));
    }

    #[tokio::test]
    async fn category_crud_and_filter() {
        let kb = Kb::start().await;

        let (status, body) = kb.get("/v1/category").await;
        assert_eq!(status, 200);
        assert_eq!(titles(&body["categories"]), ["Getting Started", "Billing"]);

        let (status, body) = kb.get("/v1/article?category_id=c2").await;
        assert_eq!(status, 200);
        assert_eq!(titles(&body["articles"]), ["Update billing details"]);

        let new = json!({ "title": "Integrations", "description": "Connect other tools." });
        let (status, body) = kb.call(Method::POST, "/v1/category", Some(new)).await;
        assert_eq!(status, 201);
        assert_eq!(body["category"]["category_id"], "c3");
        assert_eq!(body["category"]["description"], "Connect other tools.");

        let (status, body) = kb.get("/v1/category/c3").await;
        assert_eq!(status, 200);
        assert_eq!(body["category"]["title"], "Integrations");

        let patch = json!({ "description": "Slack, Zapier and more." });
        let (status, body) = kb.call(Method::PATCH, "/v1/category/c3", Some(patch)).await;
        assert_eq!(status, 200);
        assert_eq!(body["category"]["title"], "Integrations");
        assert_eq!(body["category"]["description"], "Slack, Zapier and more.");

        let moved = json!({ "category_id": "c3" });
        kb.call(Method::PATCH, "/v1/article/a2", Some(moved)).await;
        let (_, body) = kb.get("/v1/article?category_id=c3").await;
        assert_eq!(titles(&body["articles"]), ["Create an API key"]);

        let (status, body) = kb.call(Method::DELETE, "/v1/category/c3", None).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({ "deleted": "c3" }));
        assert_eq!(kb.get("/v1/category/c3").await.0, 404);
        let (_, body) = kb.get("/v1/article/a2").await;
        assert_eq!(body["article"]["category_id"], Value::Null);

        let (status, _) = kb
            .call(Method::POST, "/v1/category", Some(json!({ "title": "" })))
            .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn search_matches_title_and_body_case_insensitively() {
        let kb = Kb::start().await;

        let (status, body) = kb.get("/v1/search?query=password").await;
        assert_eq!(status, 200);
        assert_eq!(titles(&body["articles"]), ["Reset your password"]);

        let (_, body) = kb.get("/v1/search?query=PassWord").await;
        assert_eq!(titles(&body["articles"]), ["Reset your password"]);

        // Only in a body.
        let (_, body) = kb.get("/v1/search?query=invoice").await;
        assert_eq!(titles(&body["articles"]), ["Update billing details"]);

        // `+` and percent-encoding both decode to a space.
        let (_, body) = kb.get("/v1/search?query=api+KEY").await;
        assert_eq!(titles(&body["articles"]), ["Create an API key"]);
        let (_, body) = kb.get("/v1/search?query=zip%20archive").await;
        assert_eq!(titles(&body["articles"]), ["Export your data"]);

        let (_, body) = kb.get("/v1/search?query=kubernetes").await;
        assert_eq!(body["articles"], json!([]));

        for bad in ["/v1/search", "/v1/search?query=", "/v1/search?query=+"] {
            let (status, body) = kb.get(bad).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(body["error"]["code"], "invalid_request");
        }
    }

    #[tokio::test]
    async fn unknown_ids_are_404() {
        let kb = Kb::start().await;
        let patch = || Some(json!({ "title": "x" }));
        for (method, path, body) in [
            (Method::GET, "/v1/article/a99", None),
            (Method::PATCH, "/v1/article/a99", patch()),
            (Method::DELETE, "/v1/article/a99", None),
            (Method::GET, "/v1/article/a99/versions", None),
            (Method::GET, "/v1/category/c99", None),
            (Method::PATCH, "/v1/category/c99", patch()),
            (Method::DELETE, "/v1/category/c99", None),
        ] {
            let (status, body) = kb.call(method.clone(), path, body).await;
            assert_eq!(status, 404, "{method} {path}");
            assert_eq!(body["error"]["code"], "not_found");
        }
    }

    #[tokio::test]
    async fn bad_json_is_400() {
        let kb = Kb::start().await;
        for (method, path) in [
            (Method::POST, "/v1/article"),
            (Method::PATCH, "/v1/article/a1"),
            (Method::POST, "/v1/category"),
        ] {
            let response = kb
                .client
                .request(method, format!("{}{path}", kb.base))
                .bearer_auth(KEY)
                .header(CONTENT_TYPE, "application/json")
                .body("{\"title\": ")
                .send()
                .await
                .unwrap();
            let (status, body) = read(response).await;
            assert_eq!(status, 400, "{path}");
            assert_eq!(body["error"]["code"], "invalid_json");
        }
        let (status, _) = kb.call(Method::POST, "/v1/article", Some(json!([1]))).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let kb = Kb::start().await;
        let response = kb
            .client
            .post(format!("{}/v1/article", kb.base))
            .bearer_auth(KEY)
            .body(vec![b' '; MAX_BODY_BYTES + 10])
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn unknown_route_and_wrong_method() {
        let kb = Kb::start().await;
        for path in [
            "/",
            "/v1",
            "/v1/articles",
            "/v2/article",
            "/v1/article/a1/extra",
        ] {
            let (status, body) = kb.get(path).await;
            assert_eq!(status, 404, "{path}");
            assert_eq!(body["error"]["code"], "not_found");
        }

        let response = kb
            .client
            .put(format!("{}/v1/article/a1", kb.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers().get(ALLOW).unwrap(), "GET, PATCH, DELETE");
        let (status, body) = read(response).await;
        assert_eq!(status, 405);
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert_eq!(kb.call(Method::DELETE, "/v1/search", None).await.0, 405);
        assert_eq!(kb.call(Method::POST, "/v1/account", None).await.0, 405);
    }

    #[tokio::test]
    async fn account_and_groups() {
        let kb = Kb::start().await;
        let (status, body) = kb.get("/v1/group").await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "groups": [{ "group_id": "g1", "name": "Support" }] })
        );
        let (status, body) = kb.get("/v1/account/").await;
        assert_eq!(status, 200);
        assert_eq!(body["account"]["account_id"], "demo");
    }

    #[tokio::test]
    async fn serves_h2c() {
        let kb = Kb::start().await;
        let stream = TcpStream::connect(kb.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!("{}/v1/search?query=password", kb.base))
            .header(AUTHORIZATION, format!("Bearer {KEY}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(titles(&body["articles"]), ["Reset your password"]);
    }

    #[tokio::test]
    async fn abort_stops_serving() {
        let kb = Kb::start().await;
        assert_eq!(kb.get("/v1/account").await.0, 200);
        kb.handle.abort();
        // The listener is dropped with the task; wait for that, bounded.
        let refused = async {
            while TcpStream::connect(kb.addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("listener still accepting after abort");
    }
}
