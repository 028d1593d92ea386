//! Rate limits, counted only after parsing and authorization so typos and unauthorized
//! people never burn a team's budget: most specific first (command×person, command×channel,
//! person, channel, command, global). A refused reaction has its own per-person budget. A
//! person over a limit is told once per window; repeats are answered with silence.

use std::time::{Duration, Instant};

use crate::catalog::CommandSpec;
use crate::domain::{InboundEvent, RateQuota, Requester};
use crate::ports::LimitDecision;

use super::authz::{Authorized, Target};
use super::{LIMIT_NOTICE_MIN, Refusal, Router};

impl Router {
    /// Counts the request against every limit that applies, most specific first, so a person
    /// who is over their own limit does not also burn the shared budgets.
    pub(super) async fn check_limits(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        authorized: &Authorized<Target>,
    ) -> Result<Counted, Refusal> {
        let who = who(requester);
        let channel = format!("{}:{}", ev.platform, ev.channel.id);
        let name = authorized.target().name();
        let l = &self.deps.limits;
        let mut keys: Vec<(String, Option<RateQuota>, String)> = Vec::with_capacity(6);
        if let Target::Runbook(spec) = authorized.target() {
            keys.extend(command_keys(spec, &who, &channel));
        }
        keys.push((who.clone(), l.per_user, "commands per person".into()));
        keys.push((
            format!("ch:{channel}"),
            l.per_channel,
            "commands in this channel".into(),
        ));
        keys.push((
            format!("cmd:{name}"),
            l.per_command,
            format!("/{name} for everyone"),
        ));
        keys.push(("global".into(), l.global, "commands for everyone".into()));
        self.count(&who, keys).await
    }

    /// Counts a request against the command file's own limits alone: for `/retry`, a new
    /// request of that command whose general budgets `/retry` itself has already used.
    pub(super) async fn check_command_limits(
        &self,
        ev: &InboundEvent,
        requester: &Requester,
        spec: &CommandSpec,
    ) -> Result<Counted, Refusal> {
        let who = who(requester);
        let channel = format!("{}:{}", ev.platform, ev.channel.id);
        self.count(&who, command_keys(spec, &who, &channel).into())
            .await
    }

    /// Counts `keys` in order, stopping at the first limit reached.
    async fn count(
        &self,
        who: &str,
        keys: Vec<(String, Option<RateQuota>, String)>,
    ) -> Result<Counted, Refusal> {
        let mut counted = Counted(Vec::new());
        for (key, quota, what) in keys {
            let Some(quota) = quota else { continue };
            let decision = self.deps.limiter.check(&key, quota).await.map_err(|e| {
                Refusal::Failed(anyhow::Error::new(e).context("rate limiter check"))
            })?;
            // A credit stands in for the count; a failure gives it back like any other.
            let credited =
                matches!(decision, LimitDecision::Limited { .. }) && self.take_credit(&key);
            counted.0.push((key.clone(), quota));
            if credited {
                continue;
            }
            if let LimitDecision::Limited { retry_after } = decision {
                let retry = retry_after.max(Duration::from_secs(1));
                let notify = self.first_notice(&format!("{who}|{key}"), retry);
                return Err(Refusal::Limited {
                    message: format!(
                        "Slow down: limit for {what} reached ({} per {}). Try again in {}s.",
                        quota.count,
                        human(quota.per),
                        retry.as_secs_f64().ceil() as u64
                    ),
                    notify,
                });
            }
        }
        Ok(counted)
    }

    /// After a counted request: gives its count back when it failed through no fault of the
    /// person's (a store or limiter outage), so it does not cost them their next try.
    pub(super) fn settle<T>(&self, counted: Counted, result: &Result<T, Refusal>) {
        if let Err(Refusal::Failed(_) | Refusal::Unavailable(_)) = result {
            self.give_back(counted);
        }
    }

    /// Gives back what a failed attempt counted: each key gets one credit, spent when the
    /// limiter next refuses that key, and lapsing after the quota's window (when the count
    /// would have refilled anyway).
    fn give_back(&self, counted: Counted) {
        let now = Instant::now();
        let mut credits = self.limit_credits.lock().expect("limit credits poisoned");
        if credits.len() > 10_000 {
            credits.retain(|_, until| until.iter().any(|u| *u > now));
        }
        for (key, quota) in counted.0 {
            credits.entry(key).or_default().push(now + quota.per);
        }
    }

    /// Spends a live credit for `key`, if there is one.
    fn take_credit(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut credits = self.limit_credits.lock().expect("limit credits poisoned");
        let Some(until) = credits.get_mut(key) else {
            return false;
        };
        until.retain(|u| *u > now);
        let spent = until.pop().is_some();
        if until.is_empty() {
            credits.remove(key);
        }
        spent
    }

    /// Counts a refused reaction against the per-person limit (its own budget, so refused
    /// reactions never use up someone's commands); true once it is exhausted. A limiter
    /// failure lets the refusal through: it is audited, nothing runs.
    pub(super) async fn reaction_refusals_exhausted(&self, requester: &Requester) -> bool {
        let Some(quota) = self.deps.limits.per_user else {
            return false;
        };
        let who = who(requester);
        match self
            .deps
            .limiter
            .check(&format!("react:{who}"), quota)
            .await
        {
            Ok(LimitDecision::Limited { .. }) => {
                tracing::debug!(%who, "dropping a refused reaction over the limit");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable for a reaction");
                false
            }
        }
    }

    /// True the first time a person hits a limit within its window, so repeats get no reply.
    fn first_notice(&self, key: &str, retry: Duration) -> bool {
        let now = Instant::now();
        let mut notices = self.limit_notices.lock().expect("limit notices poisoned");
        if notices.len() > 10_000 {
            notices.retain(|_, until| *until > now);
        }
        match notices.get(key) {
            Some(until) if *until > now => false,
            _ => {
                notices.insert(key.to_owned(), now + retry.max(LIMIT_NOTICE_MIN));
                true
            }
        }
    }
}

/// The limit keys one attempt was counted against, with their quotas.
pub(super) struct Counted(Vec<(String, RateQuota)>);

fn human(d: Duration) -> String {
    match d.as_secs() {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{}s", d.as_secs_f64()),
    }
}

/// Whom limits count a request against: the person, or the platform user nobody knows.
fn who(requester: &Requester) -> String {
    match requester.person() {
        Some(p) => format!("person:{}", p.name),
        None => format!("user:{}", requester.user()),
    }
}

/// The command file's own limits for a request by `who` in `channel`.
fn command_keys(
    spec: &CommandSpec,
    who: &str,
    channel: &str,
) -> [(String, Option<RateQuota>, String); 2] {
    let name = &spec.name;
    [
        (
            format!("cmd:{name}:{who}"),
            spec.limits.per_user,
            format!("/{name} per person"),
        ),
        (
            format!("cmd:{name}:ch:{channel}"),
            spec.limits.per_channel,
            format!("/{name} in this channel"),
        ),
    ]
}
