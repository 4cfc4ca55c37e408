//! Request parameters (query strings and form bodies) as OAuth reads them: a parameter may
//! appear at most once, and one sent without a value counts as absent (RFC 6749 3.1).

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use url::form_urlencoded;

/// Parsed, de-duplicated request parameters.
#[derive(Debug, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` input; `Err` names a repeated parameter.
    pub(crate) fn parse(input: &[u8]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(input) {
            if value.is_empty() {
                continue;
            }
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(format!("parameter `{name}` repeated"));
            }
        }
        Ok(Self(map))
    }

    /// Parses a form body, refusing any other content type.
    pub(crate) fn from_form(headers: &HeaderMap, body: &[u8]) -> Result<Self, String> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err("expected an application/x-www-form-urlencoded body".into());
        }
        Self::parse(body)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Decodes one `application/x-www-form-urlencoded` component ('+' is a space), as the client
/// id and secret in HTTP Basic client authentication are encoded (RFC 6749 2.3.1).
pub(crate) fn form_decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameter_is_refused_and_empty_is_absent() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let p = Params::parse(b"a=&b=x%20y").expect("parse");
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("x y"));
    }

    #[test]
    fn form_decode_handles_plus_and_percent() {
        assert_eq!(form_decode("a+b%3Ac").as_deref(), Some("a b:c"));
        assert_eq!(form_decode("bad%zz"), None);
        assert_eq!(form_decode("trail%4"), None);
    }
}
