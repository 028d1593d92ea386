//! `[[people]]`: who is who, parsed straight into the [`Directory`] the router asks.

use serde::{Deserialize, Deserializer};

use crate::domain::{Directory, Person, Role, UserRef};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonConfig {
    name: String,
    #[serde(default)]
    roles: Vec<Role>,
    /// `console:alice`, `slack:U0123ABCD`, `discord:80351110224678912`, `telegram:123456789`.
    identities: Vec<UserRef>,
    /// Their own paging service, a `[[paging.services]]` name (checked by `Config::validate`).
    page: Option<String>,
}

/// Reads `[[people]]` into a directory; an empty name or an identity claimed twice is an
/// error at that table's line.
pub(super) fn directory<'de, D: Deserializer<'de>>(d: D) -> Result<Directory, D::Error> {
    let mut dir = Directory::default();
    for p in Vec::<PersonConfig>::deserialize(d)? {
        if p.name.is_empty() {
            return Err(serde::de::Error::custom(
                "people: a person has an empty name",
            ));
        }
        let person = Person {
            name: p.name,
            roles: p.roles.into_iter().collect(),
            page: p.page,
        };
        dir.insert(person, &p.identities)
            .map_err(|e| serde::de::Error::custom(format!("people: {e}")))?;
    }
    Ok(dir)
}
