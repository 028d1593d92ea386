//! Authorization: decides whether a requester may run a command in a channel, and hands
//! back an [`Authorized`] capability that only this module can create. Code that runs a
//! command takes `Authorized<_>`, so skipping the check does not compile.
//! Default deny: unknown people reach only the built-ins open to everyone; empty role lists
//! grant nobody.

use std::sync::Arc;

use crate::catalog::CommandSpec;
use crate::domain::{ChannelRef, Person, Requester, Role};

use super::builtins::BuiltinSpec;

/// What a parsed command refers to.
#[derive(Clone, Debug)]
pub enum Target {
    Builtin(&'static BuiltinSpec),
    Runbook(Arc<CommandSpec>),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Builtin(b) => b.name,
            Target::Runbook(spec) => &spec.name,
        }
    }
}

/// Who may run a built-in (its row in `builtins::BUILTINS` says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, even someone opsbot does not know.
    Everyone,
    /// Anyone opsbot knows.
    AnyKnown,
    /// Known people with one of the roles the config grants to this list.
    Roles(RoleList),
}

/// The role lists of [`BuiltinAccess`], one per `builtins.*_roles` config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleList {
    Status,
    Audit,
    Alerts,
    Respond,
    /// `/oncall override`.
    OnCall,
    /// `/page`.
    Page,
    /// `/schedule pause|resume`.
    Schedule,
}

/// Roles granted the built-ins that are not open to everyone.
#[derive(Clone, Debug, Default)]
pub struct BuiltinAccess {
    pub status: Vec<Role>,
    pub audit: Vec<Role>,
    /// `/alerts`.
    pub alerts: Vec<Role>,
    /// `/ack`, `/silence`, `/unsilence`, `/resolve`.
    pub respond: Vec<Role>,
    /// `/oncall override`.
    pub oncall: Vec<Role>,
    /// `/page`.
    pub page: Vec<Role>,
    /// `/schedule pause|resume`.
    pub schedule: Vec<Role>,
}

impl BuiltinAccess {
    pub fn roles(&self, list: RoleList) -> &[Role] {
        match list {
            RoleList::Status => &self.status,
            RoleList::Audit => &self.audit,
            RoleList::Alerts => &self.alerts,
            RoleList::Respond => &self.respond,
            RoleList::OnCall => &self.oncall,
            RoleList::Page => &self.page,
            RoleList::Schedule => &self.schedule,
        }
    }
}

/// Proof that `requester` may run `target` where it was asked.
#[derive(Debug)]
pub struct Authorized<T> {
    target: T,
    person: Option<Arc<Person>>,
}

impl<T> Authorized<T> {
    pub fn target(&self) -> &T {
        &self.target
    }

    /// The person, when known (only the built-ins open to everyone authorize unknown users).
    pub fn person(&self) -> Option<&Person> {
        self.person.as_deref()
    }
}

pub fn authorize(
    requester: &Requester,
    target: Target,
    channel: &ChannelRef,
    access: &BuiltinAccess,
) -> Result<Authorized<Target>, String> {
    let person = match (requester, &target) {
        (_, Target::Builtin(b)) if b.access == Access::Everyone => {
            let person = match requester {
                Requester::Known { person, .. } => Some(person.clone()),
                Requester::Unknown { .. } => None,
            };
            return Ok(Authorized { target, person });
        }
        (Requester::Known { person, .. }, _) => person.clone(),
        (Requester::Unknown { user }, _) => {
            return Err(format!(
                "I don't know {user}, so only /help and /whoami are open to you. \
                 Ask an opsbot admin to add {user} to the config."
            ));
        }
    };
    let (needed, channels): (&[Role], &[crate::catalog::ChannelPattern]) = match &target {
        Target::Builtin(b) => match b.access {
            Access::Everyone | Access::AnyKnown => {
                return Ok(Authorized {
                    target,
                    person: Some(person),
                });
            }
            Access::Roles(list) => (access.roles(list), &[]),
        },
        Target::Runbook(spec) => (&spec.roles, &spec.channels),
    };
    if !person.has_any_role(needed) {
        return Err(role_denial(target.name(), needed, &person));
    }
    if !channels.is_empty() && !channels.iter().any(|p| p.matches(&channel.name)) {
        let allowed: Vec<String> = channels
            .iter()
            .map(|c| format!("#{}", c.as_str()))
            .collect();
        return Err(format!(
            "/{} may not run in #{}; ask in {}.",
            target.name(),
            channel.name,
            allowed.join(", ")
        ));
    }
    Ok(Authorized {
        target,
        person: Some(person),
    })
}

/// A further check for a built-in's subcommand that needs more than the built-in itself
/// (`/oncall override`): the person must hold a role of `list`; empty grants nobody.
pub fn authorize_sub(
    authorized: &Authorized<Target>,
    list: RoleList,
    what: &str,
    access: &BuiltinAccess,
) -> Result<(), String> {
    let needed = access.roles(list);
    match authorized.person() {
        Some(person) if person.has_any_role(needed) => Ok(()),
        Some(person) => Err(role_denial(what, needed, person)),
        None => Err(format!("/{what} is open only to people opsbot knows.")),
    }
}

/// Whether `authorize` would allow it, for listing commands in `/help`.
pub fn may_run(
    requester: &Requester,
    target: Target,
    channel: &ChannelRef,
    access: &BuiltinAccess,
) -> bool {
    authorize(requester, target, channel, access).is_ok()
}

fn role_denial(command: &str, needed: &[Role], person: &Person) -> String {
    if needed.is_empty() {
        return format!("/{command} is not granted to any role.");
    }
    let needed: Vec<&str> = needed.iter().map(Role::as_str).collect();
    let have: Vec<&str> = person.roles.iter().map(Role::as_str).collect();
    let have = if have.is_empty() {
        "none".to_owned()
    } else {
        have.join(", ")
    };
    format!(
        "/{command} needs one of the roles {}; you have {have}.",
        needed.join(", ")
    )
}
