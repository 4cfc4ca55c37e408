//! The three demo users; each one's password is its username.

use serde_json::{Value, json};

/// A user the development IdP knows. The password is the username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// Login name, password and `sub` claim.
    pub username: &'static str,
    /// Display name (`name` claim).
    pub name: &'static str,
    /// `email` claim (always verified).
    pub email: &'static str,
    /// `roles` claim.
    pub roles: &'static [&'static str],
}

/// alice (admin, hr), bob (hr) and carol (no roles).
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        username: "alice",
        name: "Alice Example",
        email: "alice@example.com",
        roles: &["admin", "hr"],
    },
    DemoUser {
        username: "bob",
        name: "Bob Example",
        email: "bob@example.com",
        roles: &["hr"],
    },
    DemoUser {
        username: "carol",
        name: "Carol Example",
        email: "carol@example.com",
        roles: &[],
    },
];

impl DemoUser {
    /// The user with this username, if any.
    pub fn find(username: &str) -> Option<&'static DemoUser> {
        DEMO_USERS.iter().find(|u| u.username == username)
    }

    /// The user these credentials belong to. Compares digests so the time taken does not
    /// depend on how much of the password matched.
    pub fn authenticate(username: &str, password: &str) -> Option<&'static DemoUser> {
        let user = Self::find(username)?;
        (super::grants::fingerprint(password) == super::grants::fingerprint(user.username))
            .then_some(user)
    }

    /// The `sub` claim.
    pub fn sub(&self) -> &'static str {
        self.username
    }

    /// The claims `/userinfo` returns (and the ID token carries besides the protocol ones).
    pub fn claims(&self) -> Value {
        json!({
            "sub": self.sub(),
            "name": self.name,
            "email": self.email,
            "email_verified": true,
            "preferred_username": self.username,
            "roles": self.roles,
        })
    }
}
