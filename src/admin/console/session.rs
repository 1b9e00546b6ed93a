//! Console sessions, kept in this process only: a random id (the cookie) maps to the hash of the
//! admin token that signed in (never the token) and the session's CSRF token. A session ends
//! when idle too long, when too old, or at sign out; the token itself is re-checked on every
//! request (see `Admin::actor_of`), so a revoked token ends its sessions at once.

use crate::keys::KeyHash;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session unused this long ends: an unattended browser does not stay signed in.
pub(super) const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign in, however busy: one working day.
pub(super) const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first. A bound so that sign-ins cannot grow memory
/// without limit (each needs a valid admin token, so this is generous).
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone)]
pub(super) struct Session {
    /// The admin token's hash (see `Admin::credential`).
    pub credential: KeyHash,
    /// Sent in a hidden field of every form and checked on every POST.
    pub csrf: String,
    created: Instant,
    seen: Instant,
}

#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 256 random bits, URL-safe base64: a session id or a CSRF token.
pub(super) fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// A new session for `credential`; returns its id.
    pub(super) fn create(&self, credential: KeyHash, now: Instant) -> String {
        let id = random_token();
        let session = Session {
            credential,
            csrf: random_token(),
            created: now,
            seen: now,
        };
        let mut map = crate::lock(&self.map);
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session `id`, marked as seen now; an expired one is removed.
    pub(super) fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = crate::lock(&self.map);
        let session = map.get_mut(id)?;
        if !alive(session, now) {
            map.remove(id);
            return None;
        }
        session.seen = now;
        Some(session.clone())
    }

    /// Signs out: the id no longer opens anything.
    pub(super) fn remove(&self, id: &str) {
        crate::lock(&self.map).remove(id);
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.seen) < IDLE
        && now.saturating_duration_since(session.created) < ABSOLUTE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> KeyHash {
        KeyHash::of("kbadm_example")
    }

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let id = sessions.create(credential(), start);
        let almost_idle = start + IDLE - Duration::from_secs(1);
        assert!(sessions.get(&id, almost_idle).is_some());
        // Seen at almost_idle: the idle clock starts again from there.
        assert!(
            sessions
                .get(&id, almost_idle + IDLE - Duration::from_secs(1))
                .is_some()
        );
        let later = almost_idle + IDLE - Duration::from_secs(1) + IDLE;
        assert!(sessions.get(&id, later).is_none());
        // Removed, not merely refused: an earlier clock does not bring it back.
        assert!(sessions.get(&id, start).is_none());
    }

    #[test]
    fn a_busy_session_still_ends_at_its_absolute_expiry() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let id = sessions.create(credential(), start);
        let mut now = start;
        while now + IDLE / 2 < start + ABSOLUTE {
            now += IDLE / 2;
            assert!(sessions.get(&id, now).is_some());
        }
        assert!(sessions.get(&id, start + ABSOLUTE).is_none());
    }

    #[test]
    fn sign_out_ends_it_and_ids_are_unguessable() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.create(credential(), now);
        let b = sessions.create(credential(), now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits in base64");
        let csrf = sessions.get(&a, now).unwrap().csrf;
        assert_ne!(csrf, sessions.get(&b, now).unwrap().csrf);
        sessions.remove(&a);
        assert!(sessions.get(&a, now).is_none());
        assert!(sessions.get(&b, now).is_some());
        assert!(sessions.get("", now).is_none());
    }
}
