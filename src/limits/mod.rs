//! Per-key limits on the request path: the address allowlist, the rate limit (GCRA: one
//! stored time per key) and the quota (a counter per key and calendar period), their
//! decisions on the embedded store (in this process's memory) or on Redis (one atomic script
//! each), and the RateLimit headers that tell a client where it stands.

pub mod settings;

pub use settings::{HeaderStyle, LimitSettings, OnStoreError};
