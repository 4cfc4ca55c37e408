//! Reading roles (from the configured dotted claim path) and the user claims
//! `/auth/me` shows.

use serde_json::{Map, Value};

/// Claims copied into the session and shown by `/auth/me`.
const USER_CLAIMS: &[&str] = &[
    "sub",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "email",
    "email_verified",
    "picture",
    "locale",
];

/// The user-facing subset of `claims`.
pub fn user_claims(claims: &Map<String, Value>) -> Map<String, Value> {
    USER_CLAIMS
        .iter()
        .filter_map(|k| claims.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// Roles at a dotted path such as `realm_access.roles` or
/// `resource_access.portal.roles`. A key containing dots itself (e.g. a URL
/// claim name like `https://example.com/roles`) is tried whole first.
/// Accepts an array of strings or a single string (space separated).
pub fn roles_from_claims(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let value = claims.get(path).or_else(|| lookup(claims, path));
    let mut roles: Vec<String> = match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    roles.sort();
    roles.dedup();
    roles
}

fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn roles_at_nested_and_flat_paths() {
        let c = map(json!({
            "realm_access": {"roles": ["admin", "hr", "admin"]},
            "resource_access": {"portal": {"roles": ["viewer"]}},
            "groups": "a b",
            "https://example.com/roles": ["x"],
        }));
        assert_eq!(roles_from_claims(&c, "realm_access.roles"), ["admin", "hr"]);
        assert_eq!(
            roles_from_claims(&c, "resource_access.portal.roles"),
            ["viewer"]
        );
        assert_eq!(roles_from_claims(&c, "groups"), ["a", "b"]);
        assert_eq!(roles_from_claims(&c, "https://example.com/roles"), ["x"]);
        assert!(roles_from_claims(&c, "missing.path").is_empty());
    }

    /// What an IdP sends once the last role is removed: no roles, whether
    /// the nested object is empty or the list is.
    #[test]
    fn absent_or_empty_dotted_claim_is_no_roles() {
        for c in [
            json!({"realm_access": {}}),
            json!({"realm_access": {"roles": []}}),
            json!({"realm_access": null}),
            json!({}),
        ] {
            assert!(
                roles_from_claims(&map(c.clone()), "realm_access.roles").is_empty(),
                "{c}"
            );
        }
    }

    #[test]
    fn user_claims_drop_everything_else() {
        let c = map(json!({"sub": "u", "email": "e", "nonce": "n", "roles": ["r"]}));
        let u = user_claims(&c);
        assert_eq!(u.len(), 2);
        assert!(u.contains_key("email") && !u.contains_key("nonce"));
    }
}
