//! Where the gateway looks for a client's key (`keys.sources` in the config).

use std::borrow::Cow;

/// Where the gateway looks for a client's key (`keys.sources`). The order does not matter:
/// every source is read, and two different keys are ambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySources {
    /// `Authorization: Bearer <key>`.
    pub authorization: bool,
    /// `X-Api-Key: <key>`.
    pub x_api_key: bool,
    /// `?<name>=<key>`: that parameter is taken out of the forwarded query. None: the query is
    /// never read for a key and reaches the KB as the client sent it.
    pub query: Option<Cow<'static, str>>,
}

impl KeySources {
    /// `[authorization, x-api-key, query:key]`.
    pub const DEFAULT: KeySources = KeySources {
        authorization: true,
        x_api_key: true,
        query: Some(Cow::Borrowed("key")),
    };
}

impl Default for KeySources {
    fn default() -> Self {
        KeySources::DEFAULT
    }
}
