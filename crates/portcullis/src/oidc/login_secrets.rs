//! The three secrets of one login: `state`, `nonce` and the PKCE
//! `code_verifier`. Each is its own type so one cannot be passed where
//! another is due; none prints in `Debug`, and equality is constant time.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::session::random_token;

/// Random bytes in each secret (256 bits), base64url without padding.
const RANDOM_BYTES: usize = 32;

macro_rules! login_secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // `transparent`: serialized as the bare string, so login cookies
        // sealed before this type existed still open.
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random value.
            pub fn random() -> Self {
                Self(random_token(RANDOM_BYTES))
            }

            /// Wrap a value received or kept elsewhere.
            pub fn new(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn as_bytes(&self) -> &[u8] {
                self.0.as_bytes()
            }

            /// Does `other` equal this value? Constant time: an attacker
            /// guessing it learns nothing from how long the answer takes.
            pub fn matches(&self, other: &str) -> bool {
                self.0.as_bytes().ct_eq(other.as_bytes()).into()
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.matches(&other.0)
            }
        }

        impl Eq for $name {}

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

login_secret!(
    /// The `state` parameter: binds the callback to the login the browser started.
    LoginState
);
login_secret!(
    /// The `nonce` the ID token must carry back (OIDC Core 3.1.2.1).
    Nonce
);
login_secret!(
    /// The PKCE `code_verifier` (RFC 7636), sent only with the code exchange.
    PkceVerifier
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let state = LoginState::new("secret-state".into());
        assert_eq!(format!("{state:?}"), "LoginState(..)");
    }

    #[test]
    fn serialized_as_the_bare_string() {
        let nonce = Nonce::new("n-1".into());
        assert_eq!(serde_json::to_string(&nonce).unwrap(), "\"n-1\"");
        let back: Nonce = serde_json::from_str("\"n-1\"").unwrap();
        assert_eq!(back, nonce);
        assert!(!back.matches("n-2"));
    }
}
