//! Who may use the dashboard: a bearer token (programs) or a signed session
//! cookie (browsers), both derived from `RELAY_ADMIN_TOKEN`.
//!
//! The session is stateless, so every replica that shares the token accepts
//! it: `base64(operator \n expiry \n nonce) . base64(HMAC-SHA256)`. The CSRF
//! token is an HMAC of the session's nonce, so it is bound to the session and
//! needs no storage either. Comparisons are constant-time.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::Secret;

pub const SESSION_COOKIE: &str = "orderflow_session";
pub const SESSION_TTL_SECONDS: i64 = 12 * 3600;

type HmacSha256 = Hmac<Sha256>;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub operator: String,
    /// The session's CSRF token; `None` for bearer callers, which need none.
    pub csrf: Option<String>,
}

#[derive(Clone)]
pub struct Keys {
    token: Secret,
    /// Signs sessions; derived so that the token itself never signs anything.
    signing: [u8; 32],
}

impl Keys {
    pub fn new(token: Secret) -> Self {
        let signing: [u8; 32] = Sha256::new()
            .chain_update(b"orderflow-relay-session\0")
            .chain_update(token.expose().as_bytes())
            .finalize()
            .into();
        Self { token, signing }
    }

    /// Whether `candidate` is the admin token.
    pub fn token_matches(&self, candidate: &str) -> bool {
        let a = Sha256::digest(candidate.as_bytes());
        let b = Sha256::digest(self.token.expose().as_bytes());
        a.ct_eq(&b).into()
    }

    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        // A 32-byte key is always valid for HMAC.
        let mut mac = <HmacSha256 as hmac::Mac>::new_from_slice(&self.signing)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for p in parts {
            mac.update(p);
            mac.update(b"\0");
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session cookie value for `operator`, valid until `now + TTL`.
    pub fn issue(&self, operator: &str, now: i64) -> String {
        let nonce: [u8; 16] = rand::random();
        let payload = format!(
            "{operator}\n{}\n{}",
            now + SESSION_TTL_SECONDS,
            B64.encode(nonce)
        );
        let sig = self.mac(&[b"session", payload.as_bytes()]);
        format!("{}.{}", B64.encode(payload), B64.encode(sig))
    }

    /// The identity of a session cookie that is authentic and unexpired.
    pub fn verify(&self, cookie: &str, now: i64) -> Option<Identity> {
        let (payload_b64, sig_b64) = cookie.split_once('.')?;
        let payload = B64.decode(payload_b64).ok()?;
        let sig = B64.decode(sig_b64).ok()?;
        let expected = self.mac(&[b"session", &payload]);
        if !bool::from(expected.ct_eq(&sig)) {
            return None;
        }
        let payload = String::from_utf8(payload).ok()?;
        let mut parts = payload.split('\n');
        let (operator, expiry, nonce) = (parts.next()?, parts.next()?, parts.next()?);
        if expiry.parse::<i64>().ok()? <= now {
            return None;
        }
        Some(Identity {
            operator: operator.to_owned(),
            csrf: Some(B64.encode(self.mac(&[b"csrf", nonce.as_bytes()]))),
        })
    }
}

/// Whether `presented` equals the session's CSRF token.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// Validates an operator name typed at login or sent in `X-Operator`.
pub fn operator_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || " .@_-".contains(c));
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(Secret::new("0123456789abcdef-token"))
    }

    #[test]
    fn a_session_round_trips_and_is_bound_to_the_token_and_time() {
        let k = keys();
        let cookie = k.issue("alice", 1_000);
        let id = k.verify(&cookie, 1_001).unwrap();
        assert_eq!(id.operator, "alice");
        assert!(id.csrf.is_some());
        assert!(
            k.verify(&cookie, 1_000 + SESSION_TTL_SECONDS).is_none(),
            "expired"
        );
        let other = Keys::new(Secret::new("another-token-0123456789"));
        assert!(
            other.verify(&cookie, 1_001).is_none(),
            "signed by another token"
        );
        // A tampered operator breaks the signature.
        let (payload, sig) = cookie.split_once('.').unwrap();
        let forged = String::from_utf8(B64.decode(payload).unwrap())
            .unwrap()
            .replace("alice", "mallory");
        assert!(
            k.verify(&format!("{}.{sig}", B64.encode(forged)), 1_001)
                .is_none()
        );
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        let k = keys();
        let a = k.verify(&k.issue("alice", 0), 1).unwrap().csrf.unwrap();
        let b = k.verify(&k.issue("alice", 0), 1).unwrap().csrf.unwrap();
        assert_ne!(a, b);
        assert!(csrf_matches(&a, &a) && !csrf_matches(&a, &b));
    }

    #[test]
    fn tokens_and_operator_names() {
        let k = keys();
        assert!(k.token_matches("0123456789abcdef-token"));
        assert!(!k.token_matches("0123456789abcdef-toke"));
        assert_eq!(operator_name(" alice@ops "), Some("alice@ops".to_owned()));
        assert_eq!(operator_name(""), None);
        assert_eq!(operator_name("<script>"), None);
        assert_eq!(operator_name(&"x".repeat(65)), None);
    }
}
