//! JWT authentication of sessions: HS256 with a shared secret, or RS256/ES256
//! with a public key. A token grants a user, an expiry and optional room
//! patterns for subscribe and publish.

use crate::config::{ConfigError, JwtKey};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("a token is required")]
    Missing,
    /// The token is malformed, badly signed or expired.
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
    rooms: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

/// Room patterns from a claim: exact names, `prefix.*` (any room starting
/// with `prefix.`) and `*` (every room).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Patterns(Vec<String>);

impl Patterns {
    /// Whether `room` matches one of the patterns.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|p| {
            if p == "*" {
                return true;
            }
            match p.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => p == room,
            }
        })
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The user (`sub`).
    pub user: String,
    /// Unix seconds when the token expires.
    pub expires_at: Option<u64>,
    /// Rooms the user may subscribe to; `None` means any.
    pub rooms: Option<Patterns>,
    /// Rooms the user may publish to; `None` means any the namespace allows.
    pub publish: Option<Patterns>,
}

impl Grant {
    /// May this user subscribe to `room`?
    pub fn may_subscribe(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|p| p.allows(room))
    }

    /// May this user publish to `room`?
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.as_ref().is_none_or(|p| p.allows(room))
    }
}

/// Verifies tokens.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Authenticator {
    /// Builds a verifier from the configured key.
    pub fn new(key: &JwtKey) -> Result<Self, ConfigError> {
        let (key, algorithms) = match key {
            JwtKey::Secret(s) => (
                DecodingKey::from_secret(s.as_bytes()),
                vec![Algorithm::HS256],
            ),
            JwtKey::PublicKeyPem(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    (k, vec![Algorithm::RS256])
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    (k, vec![Algorithm::ES256])
                } else {
                    return Err(ConfigError::Invalid {
                        key: "jwt_public_key".into(),
                        reason: "not an RSA or EC public key in PEM format".into(),
                    });
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["sub"]);
        validation.validate_aud = false;
        Ok(Self { key, validation })
    }

    /// Verifies a token.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let c = data.claims;
        Ok(Grant {
            user: c.sub,
            expires_at: c.exp,
            rooms: c.rooms.map(Patterns),
            publish: c.publish.map(Patterns),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_prefixes() {
        let p = Patterns(vec!["chat.*".into(), "news".into()]);
        assert!(p.allows("chat.lobby"));
        assert!(p.allows("news"));
        assert!(!p.allows("chatter"));
        assert!(!p.allows("news.x"));
    }

    #[test]
    fn hs256_tokens_verify() {
        let a = Authenticator::new(&JwtKey::Secret("s3cret".into())).unwrap();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "alice", "exp": exp, "rooms": ["chat.*"]}),
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let g = a.verify(&token).unwrap();
        assert_eq!(g.user, "alice");
        assert!(g.may_subscribe("chat.x") && !g.may_subscribe("admin"));
        assert!(g.may_publish("anything"));
        let bad = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "mallory", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert!(a.verify(&bad).is_err());
        let expired = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "bob", "exp": 1000}),
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(a.verify(&expired).is_err());
    }
}
