//! The access token a session holds, kept as the `Authorization` value the
//! proxy sends with it.

use std::fmt;

use http::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

const PREFIX: &str = "Bearer ";

/// An OAuth access token, held once: as `Bearer <token>`, the value the
/// proxy puts in `Authorization`. That value lives in a shared buffer
/// (`Bytes`), so each proxied request sends a clone that is a reference
/// count, and a session that has served requests keeps no second copy of
/// the token. Built (copied and checked) once, when the IdP's answer or a
/// stored record is read. Serialized as the token alone, as a `String` was.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// `Bearer <token>`, marked sensitive (hyper never logs it).
    Header(HeaderValue),
    /// A token that cannot be a header value (a control character in it):
    /// kept, stored and read back like any other, but never sent, so the
    /// upstream answers as it would to a request without a token.
    NotAHeader(Box<str>),
}

impl AccessToken {
    pub fn new(token: &str) -> Self {
        let mut value = String::with_capacity(PREFIX.len() + token.len());
        value.push_str(PREFIX);
        value.push_str(token);
        // Takes the string's buffer as `Bytes`, without a copy.
        match HeaderValue::try_from(value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Self(Repr::Header(v))
            }
            Err(_) => Self(Repr::NotAHeader(token.into())),
        }
    }

    /// The token as the IdP issued it.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `&str` behind the ASCII prefix, so neither fails.
            Repr::Header(v) => v
                .as_bytes()
                .get(PREFIX.len()..)
                .and_then(|token| std::str::from_utf8(token).ok())
                .unwrap_or_default(),
            Repr::NotAHeader(token) => token,
        }
    }

    /// `Bearer <token>` for `Authorization`; `None` for a token that cannot
    /// be a header value.
    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        match &self.0 {
            Repr::Header(v) => Some(v),
            Repr::NotAHeader(_) => None,
        }
    }
}

impl From<&str> for AccessToken {
    fn from(token: &str) -> Self {
        Self::new(token)
    }
}

impl From<String> for AccessToken {
    fn from(token: String) -> Self {
        Self::new(&token)
    }
}

impl Serialize for AccessToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AccessToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Built straight from the parser's text: no `String` in between.
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = AccessToken;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an access token string")
            }
            fn visit_str<E: de::Error>(self, token: &str) -> Result<AccessToken, E> {
                Ok(AccessToken::new(token))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_value_is_the_only_copy_and_a_clone_shares_it() {
        let token = AccessToken::new("tok-1");
        let v = token.authorization().expect("a header value");
        assert_eq!(v, "Bearer tok-1");
        assert!(v.is_sensitive());
        assert_eq!(token.as_str(), "tok-1");
        // The text is read from inside the header value, not kept beside it.
        assert_eq!(
            token.as_str().as_ptr(),
            v.as_bytes()[PREFIX.len()..].as_ptr()
        );
        // What a request sends is the same buffer, not a copy.
        let sent = v.clone();
        assert_eq!(sent.as_bytes().as_ptr(), v.as_bytes().as_ptr());
        let copy = token.clone();
        assert_eq!(copy.as_str().as_ptr(), token.as_str().as_ptr());
        assert_eq!(copy, token);
        assert_ne!(AccessToken::new("tok-"), token);
    }

    #[test]
    fn a_token_that_is_no_header_value_is_kept_but_never_sent() {
        for bad in ["bad\ntoken", "nul\0", "del\x7f"] {
            let token = AccessToken::new(bad);
            assert_eq!(token.as_str(), bad);
            assert!(token.authorization().is_none(), "{bad:?}");
            let json = serde_json::to_string(&token).unwrap();
            assert_eq!(json, serde_json::to_string(bad).unwrap());
            assert_eq!(serde_json::from_str::<AccessToken>(&json).unwrap(), token);
        }
        // What `HeaderValue` takes, this takes: non-ASCII text and tabs.
        for odd in ["zoë-ü", "a\tb", " spaced "] {
            let token = AccessToken::new(odd);
            assert_eq!(token.as_str(), odd);
            assert_eq!(
                token.authorization().expect("a header value").as_bytes(),
                format!("Bearer {odd}").as_bytes()
            );
        }
    }

    #[test]
    fn serializes_as_the_string_it_replaces() {
        for text in ["at-1", "", "q\"uote\\back/slash", "zoë", "tab\tnl\n"] {
            let token = AccessToken::new(text);
            let json = serde_json::to_string(&token).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            let back: AccessToken = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_str(), text);
        }
        assert!(serde_json::from_str::<AccessToken>("7").is_err());
        assert!(serde_json::from_str::<AccessToken>("null").is_err());
        assert_eq!(
            format!("{:?}", AccessToken::new("secret")),
            "AccessToken(..)"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, .. Default::default() })]

        /// Whatever an IdP puts in `access_token`: the text comes back as
        /// it was, stored and read back unchanged, and it is sent only when
        /// it makes a header value hyper will write as is, so a CR, LF or
        /// NUL in it can never split or end the upstream request's head.
        #[test]
        fn any_token_round_trips_and_is_sent_only_as_a_clean_header(
            // Arbitrary text, and text dense in what could split a head.
            token in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[a-z.\\r\\n\\t\\x00\\x7f é]{0,40}",
            ],
        ) {
            let t = AccessToken::new(&token);
            proptest::prop_assert_eq!(t.as_str(), token.as_str());
            let json = serde_json::to_string(&t).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&token).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<AccessToken>(&json).unwrap(), t.clone());
            let clean = token.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            match t.authorization() {
                Some(v) => {
                    proptest::prop_assert!(clean);
                    let sent = format!("Bearer {token}");
                    proptest::prop_assert_eq!(v.as_bytes(), sent.as_bytes());
                    proptest::prop_assert!(v.is_sensitive());
                }
                None => proptest::prop_assert!(!clean),
            }
        }
    }
}
