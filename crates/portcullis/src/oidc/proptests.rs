//! Property tests (issue 16 item 8a): no input panics the ID-token and
//! logout-token validation or the JWKS parsing, and nothing but a token
//! signed by the IdP's key with valid claims is ever accepted.

use std::sync::{Arc, LazyLock};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Map, Value, json};

use super::{OidcClient, ProviderMetadata, id_token::Expectations, jwks};
use crate::{config::Config, time::ManualClock};

const ISSUER: &str = "https://idp.example.com";
const CLIENT_ID: &str = "client";
const NOW: i64 = 1_800_000_000;
const KID: &str = "k1";

/// The IdP's P-256 key: PKCS#8 for signing, the JWK for the key set.
static KEY: LazyLock<(Vec<u8>, Value)> = LazyLock::new(|| {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("key");
    let public = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
    });
    (pkcs8.as_ref().to_vec(), jwk)
});

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

static CLIENT: LazyLock<OidcClient> = LazyLock::new(|| {
    let config = Config::from_toml_str(
        &format!(
            r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "{ISSUER}"
client_id = "{CLIENT_ID}"
client_secret = "s"
[session]
store = "memory"
"#
        ),
        Vec::new(),
    )
    .expect("config");
    let metadata: ProviderMetadata = serde_json::from_value(json!({
        "issuer": ISSUER,
        "authorization_endpoint": format!("{ISSUER}/authorize"),
        "token_endpoint": format!("{ISSUER}/token"),
        // Unroutable: an unknown kid's re-fetch fails fast, without a network.
        "jwks_uri": "http://127.0.0.1:9/jwks",
    }))
    .expect("metadata");
    let keys = jwks::parse_jwks(json!({ "keys": [KEY.1.clone()] })).expect("jwks");
    OidcClient::preloaded(&config, Arc::new(ManualClock::new(NOW)), metadata, keys)
});

fn sign(header: Header, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&KEY.0)).expect("sign")
}

fn es256() -> Header {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(KID.into());
    h
}

/// Any JSON value, numbers biased to the edges (`i64::MAX`, negative, floats).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(NOW),
            any::<i64>(),
            (NOW - 1000..NOW + 1000)
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just(ISSUER.to_string()),
            Just(CLIENT_ID.to_string()),
            ".{0,20}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(claim_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Claim names: the ones the validators read, and any other.
fn claim_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "iss",
            "aud",
            "azp",
            "exp",
            "iat",
            "nbf",
            "nonce",
            "sub",
            "sid",
            "jti",
            "events",
            "alg",
            "kid",
            "typ",
            "crv",
            "kty",
            "http://schemas.openid.net/event/backchannel-logout",
        ])
        .prop_map(str::to_string),
        "[a-z]{1,8}",
    ]
}

/// Claims close to valid ones, each member possibly replaced or removed.
fn near_valid_claims() -> impl Strategy<Value = Map<String, Value>> {
    let base = json!({
        "iss": ISSUER, "aud": CLIENT_ID, "sub": "user", "sid": "s1", "jti": "j1",
        "exp": NOW + 300, "iat": NOW, "nonce": "n",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let time_edit = (
        prop::sample::select(vec!["exp", "iat", "nbf"]).prop_map(str::to_string),
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>(),
            NOW - 1000..NOW + 1000
        ]
        .prop_map(|t| Some(json!(t))),
    );
    let edit = prop_oneof![
        (claim_name(), proptest::option::of(json_value())),
        time_edit,
    ];
    proptest::collection::vec(edit, 0..4).prop_map(move |edits| {
        let mut claims = base.as_object().cloned().unwrap_or_default();
        for (name, value) in edits {
            match value {
                Some(v) => claims.insert(name, v),
                None => claims.remove(&name),
            };
        }
        claims
    })
}

fn validate_id(token: &str) -> Result<super::IdTokenClaims, super::OidcError> {
    RUNTIME.block_on(CLIENT.validate_id_token(
        token,
        Expectations {
            nonce: Some(&super::Nonce::new("n".into())),
            sub: None,
        },
    ))
}

fn validate_logout(token: &str) -> Result<super::LogoutToken, super::OidcError> {
    RUNTIME.block_on(CLIENT.validate_logout_token(token))
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_are_never_accepted(token in prop_oneof![".{0,300}", "[A-Za-z0-9_.=-]{0,300}"]) {
        prop_assert!(validate_id(&token).is_err());
        prop_assert!(validate_logout(&token).is_err());
    }

    #[test]
    fn unsigned_jwts_with_random_header_and_claims_are_never_accepted(
        header in json_value(),
        claims in json_value(),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!("{}.{}.{}", b64_json(&header), b64_json(&claims), URL_SAFE_NO_PAD.encode(sig));
        prop_assert!(validate_id(&token).is_err());
        prop_assert!(validate_logout(&token).is_err());
    }

    #[test]
    fn forged_headers_over_real_claims_are_never_accepted(
        header in proptest::collection::btree_map(claim_name(), json_value(), 0..5),
        claims in near_valid_claims(),
    ) {
        let mut header: Map<String, Value> = header.into_iter().collect();
        header.entry("alg").or_insert(json!("ES256"));
        let signed = sign(es256(), &Value::Object(claims));
        let mut parts = signed.split('.');
        let (_, body, sig) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let token = format!("{}.{body}.{sig}", b64_json(&Value::Object(header.clone())));
        // The signature covers the header: any other header fails it.
        if header != serde_json::from_slice::<Map<String, Value>>(
            &URL_SAFE_NO_PAD.decode(signed.split('.').next().unwrap_or("")).unwrap_or_default(),
        ).unwrap_or_default() {
            prop_assert!(validate_id(&token).is_err());
            prop_assert!(validate_logout(&token).is_err());
        }
    }

    #[test]
    fn signed_tokens_with_random_claims_pass_only_with_valid_claims(claims in near_valid_claims()) {
        let token = sign(es256(), &Value::Object(claims.clone()));
        let skewed = |v: Option<&Value>| v.and_then(Value::as_i64);
        if let Ok(id) = validate_id(&token) {
            prop_assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
            prop_assert!(skewed(claims.get("exp")).is_some_and(|e| e >= NOW - 60));
            prop_assert!(skewed(claims.get("iat")).is_some_and(|i| i <= NOW + 60));
            prop_assert_eq!(claims.get("nonce"), Some(&json!("n")));
            prop_assert!(!id.sub.is_empty());
        }
        let mut logout = claims.clone();
        logout.remove("nonce");
        let token = sign(es256(), &Value::Object(logout.clone()));
        if let Ok(t) = validate_logout(&token) {
            prop_assert_eq!(logout.get("iss"), Some(&json!(ISSUER)));
            prop_assert!(!t.jti.is_empty());
            let iat = logout.get("iat").and_then(Value::as_i64).unwrap_or(i64::MIN);
            prop_assert!((NOW - 360..=NOW + 60).contains(&iat), "iat {iat} accepted");
            prop_assert!(t.jti_expires_at >= NOW, "a jti that is forgotten at once is replayable");
            prop_assert!(t.sub.is_some() || t.sid.is_some());
        }
    }

    #[test]
    fn jwks_parsing_never_panics_on_arbitrary_json(raw in json_value(), keys in proptest::collection::vec(
        proptest::collection::btree_map(
            prop::sample::select(vec!["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "key_ops", "k", "x5c"])
                .prop_map(str::to_string),
            prop_oneof![
                prop::sample::select(vec!["EC", "RSA", "OKP", "oct", "P-256", "Ed25519", "ES256", "RS256", "sig", "enc", KID])
                    .prop_map(|s| json!(s)),
                "[A-Za-z0-9_-]{0,90}".prop_map(Value::String),
                json_value(),
            ],
            0..8,
        ),
        0..4,
    ), alg in prop::sample::select(vec![Algorithm::ES256, Algorithm::ES384, Algorithm::RS256, Algorithm::PS512, Algorithm::EdDSA, Algorithm::HS256])) {
        let _ = jwks::parse_jwks(raw);
        let raw = json!({ "keys": keys.into_iter().map(|k| Value::Object(k.into_iter().collect())).collect::<Vec<_>>() });
        if let Ok(set) = jwks::parse_jwks(raw) {
            let cache = jwks::JwksCache::with_keys(reqwest::Client::new(), "http://127.0.0.1:9/jwks".into(), set);
            for kid in [None, Some(KID)] {
                let _ = RUNTIME.block_on(cache.key_for(kid, alg));
            }
        }
    }
}

#[test]
fn the_valid_token_passes() {
    // The properties above are only meaningful if a good token is accepted.
    let claims = json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "user", "exp": NOW + 300, "iat": NOW, "nonce": "n"});
    assert!(validate_id(&sign(es256(), &claims)).is_ok());
    let logout = json!({"iss": ISSUER, "aud": CLIENT_ID, "sid": "s", "jti": "j", "iat": NOW,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} }});
    assert!(validate_logout(&sign(es256(), &logout)).is_ok());
}

/// Found by the properties above: `iat` of i64::MIN wrapped to "fresh" in
/// release builds (a logout token forever replayable), `exp` of i64::MAX
/// panicked in debug builds.
#[test]
fn signed_token_with_extreme_iat_or_exp_is_refused_without_overflow() {
    for t in [i64::MAX, i64::MIN] {
        for name in ["exp", "iat", "nbf"] {
            let mut claims = json!({"iss": ISSUER, "aud": CLIENT_ID, "sub": "user", "sid": "s", "jti": "j",
                "exp": NOW + 300, "iat": NOW, "nonce": "n",
                "events": { "http://schemas.openid.net/event/backchannel-logout": {} }});
            claims[name] = json!(t);
            let id = validate_id(&sign(es256(), &claims));
            if let Some(c) = claims.as_object_mut() {
                c.remove("nonce");
            }
            let logout = validate_logout(&sign(es256(), &claims));
            // ID tokens have no lower bound on `iat` (exp rules); logout tokens must be fresh.
            if name == "iat" {
                assert!(logout.is_err(), "logout token with iat {t} accepted");
            }
            if t == i64::MIN && name == "exp" {
                assert!(id.is_err(), "ID token with exp {t} accepted");
            }
            if let Ok(l) = logout {
                assert!(l.jti_expires_at >= NOW, "{name} {t}: jti forgotten at once");
            }
        }
    }
}
