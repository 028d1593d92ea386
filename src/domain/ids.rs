//! The numbers people type to name what opsbot stored (`/approve 12`, `/ack 7`,
//! `/postmortem 3`) and the store keys rows by. Each has its own type, so a request's number
//! cannot be passed where an alert's or an incident's is meant.

macro_rules! numbered_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl From<i64> for $name {
            fn from(n: i64) -> Self {
                Self(n)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

numbered_id!(
    /// A runbook request's number.
    RunId
);
numbered_id!(
    /// An alert's number.
    AlertId
);
numbered_id!(
    /// An incident's number.
    IncidentId
);
