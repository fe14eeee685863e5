//! Console sessions: random ids in an `HttpOnly`, `SameSite=Strict`
//! cookie, kept in memory only (a restart logs everyone out, which is the
//! safe direction), each with its own CSRF token for the forms. Expire
//! after [`LIFETIME`]; at most [`MAX_SESSIONS`] are kept (the oldest go
//! first), so requests without a cookie cannot grow memory without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "hookrelay_console";

/// How long a session lasts after login (not extended by use: a stolen
/// cookie stops working by itself).
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept at once.
const MAX_SESSIONS: usize = 1024;

/// 32 random bytes as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The hidden field every form of this session carries.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The live sessions by id.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// [`LIFETIME`], but for tests.
    lifetime: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::lasting(LIFETIME)
    }
}

impl Sessions {
    /// No sessions yet; each will last `lifetime`.
    fn lasting(lifetime: Duration) -> Sessions {
        Sessions {
            map: Mutex::default(),
            lifetime,
        }
    }

    /// A new session: its id (for the cookie) and itself.
    pub fn create(&self) -> (String, Session) {
        let (id, session) = (
            random_hex(),
            Session {
                csrf: random_hex(),
                expires: Instant::now() + self.lifetime,
            },
        );
        if let Ok(mut map) = self.map.lock() {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            map.insert(id.clone(), session.clone());
        }
        (id, session)
    }

    /// The live session of the cookie header `cookies`, if any. The id is
    /// looked up by hash, which leaks no more than whether it exists: it is
    /// 256 random bits, not something to guess a byte at a time.
    pub fn find(&self, cookies: Option<&str>) -> Option<(String, Session)> {
        let id = cookies?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.trim())?;
        let map = self.map.lock().ok()?;
        let s = map.get(id)?;
        (s.expires > Instant::now()).then(|| (id.to_owned(), s.clone()))
    }

    /// Ends session `id`.
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

/// The `Set-Cookie` value for session `id` (`Secure` when the admin
/// listener is HTTPS: over plain HTTP the browser would drop it).
pub fn cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn cookie_cleared() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether `presented` is the admin token, in constant time: digests are
/// compared, so not even the token's length shows in the timing.
pub fn token_matches(presented: &[u8], token: &crate::config::Secret) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented), Sha256::digest(token.expose()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_gone_when_removed() {
        let sessions = Sessions::default();
        let (id, s) = sessions.create();
        assert_eq!(id.len(), 64);
        let header = format!("other=1; {COOKIE}={id}; x=y");
        let (found, f) = sessions.find(Some(&header)).unwrap();
        assert_eq!(
            (found.as_str(), f.csrf.as_str()),
            (id.as_str(), s.csrf.as_str())
        );
        assert!(f.csrf_matches(&s.csrf));
        assert!(!f.csrf_matches("nope"));
        assert!(sessions.find(Some(&format!("{COOKIE}=abc"))).is_none());
        assert!(sessions.find(None).is_none());
        sessions.remove(&id);
        assert!(sessions.find(Some(&header)).is_none());
    }

    #[test]
    fn a_session_expires_whether_or_not_it_is_used() {
        let sessions = Sessions::lasting(Duration::ZERO);
        let (id, _) = sessions.create();
        assert!(sessions.find(Some(&format!("{COOKIE}={id}"))).is_none());
        let sessions = Sessions::lasting(Duration::from_secs(60));
        let (id, _) = sessions.create();
        assert!(sessions.find(Some(&format!("{COOKIE}={id}"))).is_some());
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.create();
        }
        assert_eq!(sessions.map.lock().unwrap().len(), MAX_SESSIONS);
    }
}
