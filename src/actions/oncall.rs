//! On-call: who is on call now (schedules plus the overrides stored from chat), the
//! `/oncall` answer, overrides, and mentions of a person on the platform a message goes
//! to. A person with no identity there is named in plain text and counted as unreachable.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Directory, MentionOf, Override, Platform, Schedule, human_duration};
use crate::metrics::Metrics;
use crate::ports::{Clock, OutboundMessage, OutboundTarget, Queued, Store, StoreError};

/// A schedule and where its handoffs are announced.
#[derive(Clone, Debug)]
pub struct ScheduleEntry {
    pub schedule: Schedule,
    pub announce: Option<OutboundTarget>,
}

/// Longest override `/oncall override` accepts: longer stand-ins belong in the rotation.
pub const OVERRIDE_MAX: Duration = Duration::from_secs(14 * 24 * 3600);

/// How far back the sweep looks for handoffs to announce: one missed while opsbot was down
/// longer than this is not announced late (`/oncall` still shows who is on call).
const HANDOFF_LOOKBACK: chrono::Duration = chrono::Duration::hours(1);

/// Handoffs `/oncall` lists per schedule.
const NEXT_HANDOFFS: usize = 3;

pub struct OnCall {
    schedules: Vec<ScheduleEntry>,
    directory: Arc<Directory>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// Why an override was refused: every variant is for the person who asked.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("there is no on-call schedule named {0:?}; schedules: {1}")]
    UnknownSchedule(String, String),
    #[error("{0:?} is not in opsbot's directory of people")]
    UnknownPerson(String),
    #[error("an override lasts from 1 minute to {}", human_duration(OVERRIDE_MAX))]
    Duration,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OnCall {
    pub fn new(
        schedules: Vec<ScheduleEntry>,
        directory: Arc<Directory>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            schedules,
            directory,
            store,
            clock,
            metrics,
        }
    }

    pub fn schedules(&self) -> &[ScheduleEntry] {
        &self.schedules
    }

    fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules
            .iter()
            .map(|s| &s.schedule)
            .find(|s| s.name == name)
    }

    /// The primary on-call of `schedule` now, overrides included.
    pub async fn primary(&self, schedule: &str) -> Result<Option<String>, StoreError> {
        self.on_call_now(schedule, None).await
    }

    /// Who is on call on `layer` of `schedule` now (its first layer when `None`), overrides
    /// included; `None` for nobody (outside the layer's hours, no such schedule or layer).
    pub async fn on_call_now(
        &self,
        schedule: &str,
        layer: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let Some(s) = self.schedule(schedule) else {
            return Ok(None);
        };
        let now = self.clock.now();
        let overrides = self.store.overrides_ending_after(now).await?;
        let on = s.on_call(now, &overrides);
        Ok(match layer {
            None => on.into_iter().next(),
            Some(layer) => on.into_iter().find(|o| o.layer == layer),
        }
        .and_then(|o| o.person))
    }

    /// `/oncall`: who is on call on every layer of every schedule, and the next handoffs.
    pub async fn show(&self) -> Result<String, StoreError> {
        if self.schedules.is_empty() {
            return Ok("No on-call schedules are configured ([[oncall.schedules]]).".into());
        }
        let now = self.clock.now();
        let overrides = self.store.overrides_ending_after(now).await?;
        let mut out = String::new();
        for entry in &self.schedules {
            let s = &entry.schedule;
            let _ = writeln!(out, "📟 {} ({})", s.name, s.time_zone);
            for on in s.on_call(now, &overrides) {
                let who = on.person.as_deref().unwrap_or("nobody (outside its hours)");
                let note = if on.overridden { " (override)" } else { "" };
                let _ = writeln!(out, "  {}: {who}{note}", on.layer);
            }
            for h in s.handoffs(now, NEXT_HANDOFFS) {
                let local = h.at.with_timezone(&s.time_zone).format("%a %d %b %H:%M %Z");
                let _ = writeln!(out, "  next: {local} {} {} → {}", h.layer, h.from, h.to);
            }
        }
        Ok(out.trim_end().to_owned())
    }

    /// Stores an override of `schedule`'s primary layer by `person` for `duration` from
    /// now; returns what the channel is told.
    pub async fn add_override(
        &self,
        schedule: &str,
        person: &str,
        duration: Duration,
        by: &str,
        reason: &str,
    ) -> Result<String, OverrideError> {
        let s = self.schedule(schedule).ok_or_else(|| {
            let names: Vec<&str> = self
                .schedules
                .iter()
                .map(|s| s.schedule.name.as_str())
                .collect();
            OverrideError::UnknownSchedule(schedule.to_owned(), names.join(", "))
        })?;
        let person = self
            .directory
            .person(person)
            .ok_or_else(|| OverrideError::UnknownPerson(person.to_owned()))?;
        if duration < Duration::from_secs(60) || duration > OVERRIDE_MAX {
            return Err(OverrideError::Duration);
        }
        let now = self.clock.now();
        let layer = s.layers[0].name.clone();
        let o = Override {
            schedule: s.name.clone(),
            layer: layer.clone(),
            person: person.name.clone(),
            from: now,
            until: now
                + chrono::Duration::from_std(duration).map_err(|_| OverrideError::Duration)?,
        };
        let id = self.store.add_override(&o, by, reason, now).await?;
        let until = o
            .until
            .with_timezone(&s.time_zone)
            .format("%a %d %b %H:%M %Z");
        Ok(format!(
            "Override #{id}: {} is {} on-call {layer} until {until}.",
            o.person, s.name
        ))
    }

    /// Queues an announcement of each handoff of the last hour not yet announced, in the
    /// schedule's channel, mentioning who takes over; each is claimed in the store with its
    /// message, so it is announced once across replicas and restarts. Returns how many.
    pub async fn announce_handoffs(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let mut announced = 0;
        for entry in &self.schedules {
            let Some(to) = &entry.announce else {
                continue;
            };
            let s = &entry.schedule;
            let due = s.handoffs(now - HANDOFF_LOOKBACK, s.layers.len() * 4);
            let overrides = self
                .store
                .overrides_ending_after(now - HANDOFF_LOOKBACK)
                .await?;
            for h in due.iter().filter(|h| h.at <= now) {
                // An override, or the layer's hours, may keep the incoming person off call:
                // then nobody new is on call, and nobody is pinged.
                let on = s.on_call(h.at, &overrides);
                let actual = on.iter().find(|o| o.layer == h.layer);
                if actual.is_none_or(|o| o.overridden || o.person.as_deref() != Some(&*h.to)) {
                    continue;
                }
                let mut message = OutboundMessage::text(format!("📟 {} {}: ", s.name, h.layer));
                // Counted once announced: the sweep builds this again until the claim holds.
                let reached = self.mention_uncounted(&mut message, &h.to, to.platform);
                message.text.push_str(" is on call now");
                if !h.from.is_empty() {
                    let _ = write!(message.text, ", taking over from {}", h.from);
                }
                message.text.push('.');
                let message = message.with_visibility(crate::domain::Visibility::Channel);
                let queued = [Queued::post(to.clone(), message)];
                if self.store.claim_handoff(&s.name, h, now, &queued).await? {
                    announced += 1;
                    if !reached {
                        self.count_unreachable(&h.to, to.platform);
                    }
                }
            }
        }
        Ok(announced)
    }

    /// Appends a mention of `person` for a message to `platform`: a native ping when they
    /// have an identity there, else their name in plain text (and counted).
    pub fn mention(&self, message: &mut OutboundMessage, person: &str, platform: Platform) {
        if !self.mention_uncounted(message, person, platform) {
            self.count_unreachable(person, platform);
        }
    }

    /// [`OnCall::mention`] for a message that may never be sent (a claim not yet won);
    /// false when `person` could not be pinged there, for the caller to count once sent.
    fn mention_uncounted(
        &self,
        message: &mut OutboundMessage,
        person: &str,
        platform: Platform,
    ) -> bool {
        let who = match platform {
            // The console has no pings; a name is all it shows, and all it can.
            Platform::Console => {
                message.push_mention(person, None);
                return true;
            }
            Platform::Slack | Platform::Discord | Platform::Telegram => {
                (self.directory.identity_on(person, platform))
                    .map(|id| MentionOf::User(id.to_owned()))
            }
        };
        let reached = who.is_some();
        message.push_mention(person, who);
        reached
    }

    fn count_unreachable(&self, person: &str, platform: Platform) {
        self.metrics.mention_unreachable(platform);
        tracing::warn!(%person, %platform, "cannot mention: no identity on this platform");
    }
}
