//! `limits.headers`, `limits.on_store_error` and `key_defaults:`, as the config gives them.

use crate::keys::limits::KeyDefaults;
use serde::Deserialize;

/// How the limits of a key are shown on its responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    #[default]
    Draft,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, for clients written for them.
    Legacy,
    Off,
}

/// What a limit decision does when the shared store cannot be asked. Authentication is not
/// concerned: it fails closed whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Serve the request (logged and counted as `store_error`): an outage of the counters
    /// does not become an outage of the KB.
    #[default]
    Allow,
    /// Refuse with 503 `store_unavailable`.
    Deny,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub headers: HeaderStyle,
    pub on_store_error: OnStoreError,
    pub defaults: KeyDefaults,
}
