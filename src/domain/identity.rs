//! Identities: the platform user ids that adapters verify, the people and roles the config
//! maps them to, and the directory that resolves one into the other. Display names are
//! never used for identity; only platform user ids are.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

string_enum! {
    /// The chat platforms opsbot speaks. Closed on purpose: adding one must touch every match.
    #[derive(PartialOrd, Ord, serde::Deserialize)]
    #[serde(try_from = "String")]
    pub enum Platform("platform") {
        Console = "console", Slack = "slack", Discord = "discord", Telegram = "telegram",
    }
}

/// A user as the platform identifies them, written `platform:id` (`slack:U123`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct UserRef {
    pub platform: Platform,
    pub user_id: String,
}

impl UserRef {
    pub fn new(platform: Platform, user_id: impl Into<String>) -> Self {
        Self {
            platform,
            user_id: user_id.into(),
        }
    }
}

impl TryFrom<String> for UserRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.platform, self.user_id)
    }
}

impl FromStr for UserRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (platform, id) = s.split_once(':').ok_or_else(|| {
            format!("identity {s:?} must look like platform:user_id (slack:U123)")
        })?;
        let platform = platform.parse()?;
        if id.is_empty()
            || id.len() > 128
            || id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "identity {s:?}: user id must be 1-128 characters without spaces"
            ));
        }
        Ok(UserRef::new(platform, id))
    }
}

/// A role name from the config (`sre`, `sre-lead`). Lower-case letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Role(String);

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Role {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Role(s.to_owned()))
        } else {
            Err(format!(
                "role {s:?} must be 1-64 characters of a-z, 0-9, '-' or '_'"
            ))
        }
    }
}

/// A person from the config, with the roles they hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub roles: BTreeSet<Role>,
    /// Their own paging service (a `[[paging.services]]` name, e.g. their ntfy topic):
    /// `/page` and escalation reach their phone through it. `None`: chat mentions only.
    pub page: Option<String>,
}

impl Person {
    pub fn has_any_role<'a>(&self, wanted: impl IntoIterator<Item = &'a Role>) -> bool {
        wanted.into_iter().any(|r| self.roles.contains(r))
    }
}

/// Who sent an event, after looking their platform id up in the directory.
#[derive(Clone, Debug)]
pub enum Requester {
    Known { user: UserRef, person: Arc<Person> },
    Unknown { user: UserRef },
}

impl Requester {
    pub fn user(&self) -> &UserRef {
        match self {
            Requester::Known { user, .. } | Requester::Unknown { user } => user,
        }
    }

    pub fn person(&self) -> Option<&Person> {
        match self {
            Requester::Known { person, .. } => Some(person),
            Requester::Unknown { .. } => None,
        }
    }

    /// How records and timelines name them: the person's name, else the platform id.
    pub fn name(&self) -> String {
        self.person()
            .map_or_else(|| self.user().to_string(), |p| p.name.clone())
    }
}

/// Maps verified platform identities to people. Built once from the config.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    by_identity: HashMap<UserRef, Arc<Person>>,
    by_name: HashMap<String, Arc<Person>>,
    /// Each person's identities, to reach them on a platform.
    identities: HashMap<String, Vec<UserRef>>,
}

impl Directory {
    /// Adds a person; fails when one of their identities already belongs to someone else.
    pub fn insert(&mut self, person: Person, identities: &[UserRef]) -> Result<(), String> {
        if self.by_name.contains_key(&person.name) {
            return Err(format!("person {:?} is defined twice", person.name));
        }
        let person = Arc::new(person);
        for id in identities {
            if let Some(other) = self.by_identity.get(id) {
                return Err(format!(
                    "identity {id} is mapped to both {:?} and {:?}",
                    other.name, person.name
                ));
            }
            self.by_identity.insert(id.clone(), person.clone());
        }
        self.identities
            .insert(person.name.clone(), identities.to_vec());
        self.by_name.insert(person.name.clone(), person);
        Ok(())
    }

    pub fn resolve(&self, user: &UserRef) -> Requester {
        match self.by_identity.get(user) {
            Some(person) => Requester::Known {
                user: user.clone(),
                person: person.clone(),
            },
            None => Requester::Unknown { user: user.clone() },
        }
    }

    pub fn person(&self, name: &str) -> Option<&Arc<Person>> {
        self.by_name.get(name)
    }

    /// The person's id on `platform`, to mention them there; `None` when they have none.
    pub fn identity_on(&self, name: &str, platform: Platform) -> Option<&str> {
        self.identities
            .get(name)?
            .iter()
            .find(|u| u.platform == platform)
            .map(|u| u.user_id.as_str())
    }

    /// Everyone in the directory, in no particular order.
    pub fn people(&self) -> impl ExactSizeIterator<Item = &Arc<Person>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_refs_parse_and_print_round_trip() {
        let u: UserRef = "slack:U123".parse().unwrap();
        assert_eq!(u, UserRef::new(Platform::Slack, "U123"));
        assert_eq!(u.to_string(), "slack:U123");
        assert!("U123".parse::<UserRef>().is_err());
        assert!("irc:bob".parse::<UserRef>().is_err());
        assert!("slack:".parse::<UserRef>().is_err());
    }

    #[test]
    fn one_identity_cannot_belong_to_two_people() {
        let mut d = Directory::default();
        let id: UserRef = "console:alice".parse().unwrap();
        let alice = Person {
            page: None,
            name: "alice".into(),
            roles: BTreeSet::new(),
        };
        let mallory = Person {
            page: None,
            name: "mallory".into(),
            roles: BTreeSet::new(),
        };
        d.insert(alice, std::slice::from_ref(&id)).unwrap();
        assert!(d.insert(mallory, &[id]).is_err());
    }

    #[test]
    fn roles_are_validated() {
        assert!("sre-lead".parse::<Role>().is_ok());
        assert!("SRE".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }
}
