//! The user claims a session keeps (what `/auth/me` shows), held as the
//! JSON text of the claims object.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::{Map, Value, value::RawValue};

/// Only `/auth/me` and a refresh read the claims, and neither is on the
/// proxy path, so a session keeps them as their compact JSON text: one
/// allocation of about 100 bytes, where a `Map` costs a B-tree node of some
/// 600 bytes plus two allocations per claim. Serialized, it is the same JSON
/// object as the `Map` it replaces, so stored records read either way.
#[derive(Clone, Default)]
pub struct UserClaims(Option<Box<RawValue>>);

impl UserClaims {
    /// The claims as a map (parsed on each call).
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    /// One claim's value, if present.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.to_map().remove(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl From<Map<String, Value>> for UserClaims {
    fn from(map: Map<String, Value>) -> Self {
        if map.is_empty() {
            return Self(None);
        }
        // Serializing a map of JSON values cannot fail; the text is exact-size.
        Self(serde_json::value::to_raw_value(&map).ok())
    }
}

impl Serialize for UserClaims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => Map::new().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for UserClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        // The text is valid JSON; `to_map` needs it to be an object.
        let Some(inner) = raw.get().trim_start().strip_prefix('{') else {
            return Err(D::Error::custom("claims: not a JSON object"));
        };
        let empty = inner.trim_start().starts_with('}');
        Ok(Self((!empty).then_some(raw)))
    }
}

impl PartialEq for UserClaims {
    fn eq(&self, other: &Self) -> bool {
        // Same text is the common case; otherwise the parsed maps decide
        // (key order or spacing of a record written elsewhere).
        match (&self.0, &other.0) {
            (Some(a), Some(b)) if a.get() == b.get() => true,
            _ => self.to_map() == other.to_map(),
        }
    }
}

impl std::fmt::Debug for UserClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_map().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn serializes_as_the_map_it_holds() {
        let m = map(json!({"name": "Zoë", "email": "z@example.test", "nested": {"n": [1, null]}}));
        let claims = UserClaims::from(m.clone());
        assert_eq!(
            serde_json::to_string(&claims).unwrap(),
            serde_json::to_string(&m).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            Value::Object(m.clone())
        );
        assert_eq!(claims.to_map(), m);
        assert_eq!(claims.get("name"), Some(json!("Zoë")));
        assert_eq!(serde_json::to_string(&UserClaims::default()).unwrap(), "{}");
    }

    #[test]
    fn reads_what_a_map_wrote_and_only_objects() {
        let m = map(json!({"b": 1, "a": "x"}));
        let written = serde_json::to_string(&m).unwrap();
        let claims: UserClaims = serde_json::from_str(&written).unwrap();
        assert_eq!(claims.to_map(), m);
        // Spacing or key order of another writer does not make it differ.
        let spaced: UserClaims = serde_json::from_str(r#"{ "a" : "x", "b" : 1 }"#).unwrap();
        assert_eq!(spaced, claims);
        let empty: UserClaims = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty, UserClaims::default());
        for bad in [r#"["a"]"#, "null", r#""x""#, "7"] {
            assert!(serde_json::from_str::<UserClaims>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_stored_before_claims_were_text_loads_and_writes_back_unchanged() {
        // As the stores wrote it while `claims` was a `serde_json::Map`.
        let stored = concat!(
            r#"{"id":"0f4e6b8a9c2d1e3f5a7b9c0d2e4f6a8b0c1d3e5f7a9b1c2d4e6f8a0b2c3d4e5f","#,
            r#""sub":"alice","sid":"sid-1","#,
            r#""claims":{"email":"alice@example.com","name":"Zoë","nested":{"n":[1,null]}},"#,
            r#""roles":["admin"],"tokens":{"access_token":"at","refresh_token":"rt","#,
            r#""id_token":null,"access_expires_at":1700000300},"csrf_token":"c","#,
            r#""user_agent":null,"created_at":1700000000,"last_seen_at":1700000000,"#,
            r#""expires_at":1700028800,"idle_expires_at":1700001800,"version":3}"#
        );
        let record: crate::session::SessionRecord = serde_json::from_str(stored).unwrap();
        assert_eq!(record.claims.get("name"), Some(json!("Zoë")));
        assert_eq!(record.claims.to_map().len(), 3);
        assert_eq!(serde_json::to_string(&record).unwrap(), stored);
    }
}
