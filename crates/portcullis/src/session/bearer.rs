//! The `Authorization: Bearer …` value of a session's access token, built
//! once and kept with the tokens, so a record that the memory store or the
//! local cache hands to request after request does not rebuild (allocate,
//! copy and validate) a header of several hundred bytes each time.

use std::sync::OnceLock;

use http::HeaderValue;

/// A derived value, not part of the record: never serialized, ignored by
/// `==`, and checked against the token on every use, so a copy whose
/// `access_token` was changed afterwards never sends the old one.
#[derive(Clone, Default)]
pub struct BearerHeader(OnceLock<HeaderValue>);

impl BearerHeader {
    /// `Bearer <access_token>`, marked sensitive (hyper never logs it);
    /// `None` for a token that cannot be a header value.
    pub(crate) fn value(&self, access_token: &str) -> Option<HeaderValue> {
        if let Some(v) = self.0.get()
            && v.as_bytes().get(PREFIX.len()..) == Some(access_token.as_bytes())
        {
            return Some(v.clone());
        }
        let v = build(access_token)?;
        // Already set means set for another token (the tokens were changed
        // in place): keep that one, it is checked before every use.
        let _ = self.0.set(v.clone());
        Some(v)
    }
}

const PREFIX: &str = "Bearer ";

fn build(access_token: &str) -> Option<HeaderValue> {
    let mut value = String::with_capacity(PREFIX.len() + access_token.len());
    value.push_str(PREFIX);
    value.push_str(access_token);
    let mut v = HeaderValue::try_from(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl PartialEq for BearerHeader {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for BearerHeader {}

impl std::fmt::Debug for BearerHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerHeader")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_and_always_for_the_current_token() {
        let cache = BearerHeader::default();
        let v = cache.value("tok-1").unwrap();
        assert_eq!(v, "Bearer tok-1");
        assert!(v.is_sensitive());
        // Kept: the same bytes come back.
        let again = cache.value("tok-1").unwrap();
        assert_eq!(again.as_bytes().as_ptr(), v.as_bytes().as_ptr());
        // A copy whose token changed never gets the old header.
        let copy = cache.clone();
        assert_eq!(copy.value("tok-2").unwrap(), "Bearer tok-2");
        assert_eq!(copy.value("tok-1").unwrap(), "Bearer tok-1");
        // A prefix of the cached token is another token.
        assert_eq!(cache.value("tok-").unwrap(), "Bearer tok-");
        assert!(cache.value("bad\ntoken").is_none());
    }
}
