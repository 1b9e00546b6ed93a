//! The secret format: `kb_` + 22 random base62 characters (131 bits) + a 6-character base62
//! CRC32 of everything before it. The checksum lets the gateway refuse typos and floods of random
//! keys before any cache or store lookup; only the blake3 hash of a secret is ever kept.

use rand::RngExt;

/// Every secret starts with this, so scanners and people can recognise a kbgate key.
pub const PREFIX: &str = "kb_";
/// 22 base62 characters carry 130.9 bits: above the 128 bits the contract asks for.
const RANDOM_LEN: usize = 22;
/// 62^6 > 2^32, so six base62 characters hold any CRC32.
const CHECKSUM_LEN: usize = 6;
/// Total length of a well-formed secret.
pub const SECRET_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// How many random characters follow the prefix in the display `start`.
const START_RANDOM: usize = 5;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The blake3 hash of a secret: the only form in which a secret is stored or compared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

/// A map hashes eight of the bytes: they are already uniform (a blake3 output), so the other
/// 24 add nothing, and a client cannot aim keys at one bucket through the map's random seed.
/// Hashing all 32 cost ~70 instructions a lookup, on every request (callgrind, benches/load).
impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

impl KeyHash {
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(*blake3::hash(secret.as_bytes()).as_bytes())
    }

    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(hex: &str) -> Option<KeyHash> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| KeyHash(*h.as_bytes()))
    }
}

/// Never print hash bytes by accident either: they identify a key.
impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// A freshly generated secret. Shown once to its owner, then only its hash is kept.
pub struct NewSecret {
    pub secret: String,
    pub hash: KeyHash,
    pub start: String,
}

/// Generates a new random secret with its checksum.
pub fn generate() -> NewSecret {
    generate_prefixed(PREFIX)
}

/// A secret in the same format behind another prefix (admin tokens use `kbadm_`).
pub fn generate_prefixed(prefix: &str) -> NewSecret {
    let mut rng = rand::rng();
    let mut secret = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    secret.push_str(prefix);
    for _ in 0..RANDOM_LEN {
        secret.push(BASE62[rng.random_range(0..62)] as char);
    }
    let checksum = encode_checksum(crc32fast::hash(secret.as_bytes()));
    secret.push_str(std::str::from_utf8(&checksum).unwrap_or_default());
    NewSecret {
        hash: KeyHash::of(&secret),
        start: secret[..prefix.len() + START_RANDOM].to_string(),
        secret,
    }
}

/// True when `candidate` has the prefix, length, alphabet and checksum of a kbgate secret.
/// Costs a CRC32 over 25 bytes: cheap enough to run before any store lookup.
pub fn is_well_formed(candidate: &str) -> bool {
    is_well_formed_prefixed(candidate, PREFIX)
}

/// [`is_well_formed`] for a secret made by [`generate_prefixed`] with `prefix`.
pub fn is_well_formed_prefixed(candidate: &str, prefix: &str) -> bool {
    let bytes = candidate.as_bytes();
    let len = prefix.len() + RANDOM_LEN + CHECKSUM_LEN;
    if bytes.len() != len || !candidate.starts_with(prefix) {
        return false;
    }
    let (body, checksum) = bytes.split_at(len - CHECKSUM_LEN);
    if !bytes[prefix.len()..].iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    encode_checksum(crc32fast::hash(body)) == checksum
}

fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.secret.len(), SECRET_LEN);
        assert!(a.secret.starts_with(PREFIX));
        assert!(is_well_formed(&a.secret));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, KeyHash::of(&a.secret));
        assert!(a.secret.starts_with(&a.start));
        assert_eq!(a.start.len(), PREFIX.len() + START_RANDOM);
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let s = generate().secret;
        let mut bytes = s.clone().into_bytes();
        bytes[5] = if bytes[5] == b'a' { b'b' } else { b'a' };
        assert!(!is_well_formed(std::str::from_utf8(&bytes).unwrap()));
    }

    #[test]
    fn malformed_candidates_are_refused() {
        let s = generate().secret;
        for bad in [
            "",
            "kb_",
            &s[..SECRET_LEN - 1],
            &format!("{s}x"),
            &s.replacen("kb_", "xx_", 1),
            &format!("kb_{}", "!".repeat(SECRET_LEN - 3)),
            "kb_ééééééééééééééé",
        ] {
            assert!(!is_well_formed(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = KeyHash::of("kb_example");
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }
}
