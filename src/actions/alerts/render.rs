//! Alert group text: one line per alert (values clipped, outside text shown verbatim but
//! never as markup), summaries for large groups, and the ack buttons.

use super::*;

/// Labels every alert in the group shares; routing decides on them.
pub fn common_labels(alerts: &[Alert]) -> BTreeMap<String, String> {
    let mut iter = alerts.iter();
    let Some(first) = iter.next() else {
        return BTreeMap::new();
    };
    let mut common = first.incoming.labels.clone();
    for a in iter {
        common.retain(|k, v| a.incoming.labels.get(k) == Some(v));
    }
    common
}

/// Longest label or annotation value shown in chat; the store keeps the whole value.
pub const VALUE_MAX: usize = 200;

/// Longest line about one alert (or one kind of alert) in chat.
pub const LINE_MAX: usize = 300;

/// Kinds of alert (name, severity, status) counted one per line under "…and N more".
const SUMMARY_KINDS: usize = 10;

/// An outside value (label, annotation, group key) as chat shows it.
pub fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    clip(value, VALUE_MAX)
}

/// Appends `line` on a line of its own, clipped to [`LINE_MAX`].
pub fn push_line(out: &mut String, line: &str) {
    out.push('\n');
    out.push_str(&clip(line, LINE_MAX));
}

/// An alert's number, severity, name, instance and summary: how chat names it.
pub fn alert_head(a: &Alert) -> String {
    let icon = match (a.incoming.status, a.is_critical()) {
        (AlertStatus::Resolved, _) => "✅",
        (AlertStatus::Firing, true) => "🔴",
        (AlertStatus::Firing, false) => "🟠",
    };
    let mut out = format!(
        "{icon} #{} [{}] {}",
        a.id,
        shown(a.severity()),
        shown(a.incoming.alertname())
    );
    if let Some(i) = a.incoming.labels.get("instance") {
        let _ = write!(out, " {}", shown(i));
    }
    if !a.summary().is_empty() {
        let _ = write!(out, ": {}", shown(a.summary()));
    }
    out
}

/// One alert in full, on a line of its own: [`alert_head`], who acked it, whether it is
/// silenced, and its runbook and source addresses. Those come with the alert like its labels,
/// so they are shown to copy, never as links (every adapter renders addresses as code).
fn write_alert_line(out: &mut String, a: &Alert, silenced: bool) {
    let mut state = String::new();
    if let Some(by) = &a.acked_by {
        let _ = write!(state, " (acked by {})", shown(by));
    }
    if silenced && a.incoming.status == AlertStatus::Firing {
        state.push_str(" (silenced)");
    }
    // The head is cut, never the state after it: an ack or a silence that did not show would
    // leave the text unchanged, so the message would never be edited (its Ack button staying).
    let room = LINE_MAX.saturating_sub(state.chars().count());
    let mut line = format!("{}{state}", clip(&alert_head(a), room));
    if let Some(url) = a.incoming.annotations.get("runbook_url") {
        let _ = write!(line, " · runbook: {}", shown(url));
    }
    if let Some(url) = &a.incoming.generator_url {
        let _ = write!(line, " · source: {}", shown(url));
    }
    push_line(out, &line);
}

/// The alerts beyond those listed, counted by name, severity and status (the most common
/// kinds one per line, the others together).
fn summarise(out: &mut String, rest: &[&Alert]) {
    let mut counts: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for a in rest {
        *counts
            .entry((
                a.incoming.alertname(),
                a.severity(),
                a.incoming.status.as_str(),
            ))
            .or_default() += 1;
    }
    let mut kinds: Vec<_> = counts.into_iter().collect();
    // Most common first; ties keep the name order.
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let _ = write!(out, "\n…and {} more:", rest.len());
    for ((name, severity, status), n) in kinds.iter().take(SUMMARY_KINDS) {
        let line = format!("  {n} × {} [{}] {status}", shown(name), shown(severity));
        push_line(out, &line);
    }
    if kinds.len() > SUMMARY_KINDS {
        let others: usize = kinds[SUMMARY_KINDS..].iter().map(|(_, n)| n).sum();
        let _ = write!(
            out,
            "\n  {others} of {} other kinds",
            kinds.len() - SUMMARY_KINDS
        );
    }
}

/// One message for a whole group: a headline with counts, the first `max_listed` alerts in
/// full (firing first), and the rest summarised by alert name and severity.
pub fn render_group(
    group_key: &str,
    alerts: &[Alert],
    silenced: &HashSet<AlertId>,
    max_listed: usize,
) -> String {
    let firing = alerts
        .iter()
        .filter(|a| a.incoming.status == AlertStatus::Firing)
        .count();
    let resolved = alerts.len() - firing;
    let name = common_labels(alerts)
        .get("alertname")
        .map_or_else(|| "alerts".into(), |n| shown(n).into_owned());
    let headline = if firing == 0 {
        format!("✅ RESOLVED · {name}: all {resolved} resolved")
    } else {
        format!("🔥 FIRING {firing} · resolved {resolved} · {name}")
    };
    let mut out = headline;
    let sorted = listing_order(alerts);
    for a in sorted.iter().take(max_listed) {
        write_alert_line(&mut out, a, silenced.contains(&a.id));
    }
    if sorted.len() > max_listed {
        summarise(&mut out, &sorted[max_listed..]);
    }
    // The key stays the group's identity; people read its labels.
    let group = group_key_labels(group_key).unwrap_or_else(|| group_key.to_owned());
    let _ = write!(
        out,
        "\nGroup {}. /ack ID to acknowledge, /silence MATCHERS DURATION to silence.",
        shown(&group)
    );
    out
}

/// The order alerts are listed in a group message: firing before resolved, critical first.
fn listing_order(alerts: &[Alert]) -> Vec<&Alert> {
    let mut sorted: Vec<&Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| {
        (
            a.incoming.status != AlertStatus::Firing,
            !a.is_critical(),
            a.id,
        )
    });
    sorted
}

/// At most this many Ack buttons under a group message: one row on every platform (Discord
/// allows five per row). Other alerts are acknowledged by typing `/ack ID`.
const MAX_ACK_BUTTONS: usize = 5;

/// One "Ack" button per listed alert that still needs someone: firing, unacknowledged, not
/// silenced. Only alerts listed in full get one, so the buttons change only when the text
/// does, and the stored text stays enough to tell whether a message is up to date.
pub fn ack_actions(
    alerts: &[Alert],
    silenced: &HashSet<AlertId>,
    max_listed: usize,
) -> Vec<ChatAction> {
    listing_order(alerts)
        .into_iter()
        .take(max_listed)
        .filter(|a| {
            a.incoming.status == AlertStatus::Firing
                && a.acked_by.is_none()
                && !silenced.contains(&a.id)
        })
        .take(MAX_ACK_BUTTONS)
        .map(|a| ack_action(a.id))
        .collect()
}

pub fn ack_action(alert_id: AlertId) -> ChatAction {
    ChatAction {
        label: format!("Ack #{alert_id}"),
        command: format!("/ack {alert_id}"),
        danger: false,
    }
}

/// The default place alerts go when no route matches and none is configured.
pub fn console_target(channel: &str) -> OutboundTarget {
    OutboundTarget {
        platform: Platform::Console,
        channel_id: channel.to_owned(),
        thread: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AlertSource;

    fn alert(id: i64, status: AlertStatus, severity: &str) -> Alert {
        let at = chrono::DateTime::UNIX_EPOCH;
        Alert {
            id: AlertId(id),
            incoming: IncomingAlert {
                source: AlertSource::Webhook,
                fingerprint: format!("f{id}"),
                group_key: "g".into(),
                status,
                labels: [("severity".to_owned(), severity.to_owned())].into(),
                annotations: BTreeMap::new(),
                starts_at: at,
                ends_at: None,
                generator_url: None,
            },
            first_seen: at,
            last_seen: at,
            acked_by: None,
            acked_at: None,
            resolved_at: None,
        }
    }

    fn commands(actions: &[ChatAction]) -> Vec<&str> {
        actions.iter().map(|a| a.command.as_str()).collect()
    }

    #[test]
    fn ack_buttons_are_for_listed_alerts_that_still_need_someone() {
        let mut alerts = vec![
            alert(1, AlertStatus::Firing, "warning"),
            alert(2, AlertStatus::Resolved, "critical"),
            alert(3, AlertStatus::Firing, "critical"),
            alert(4, AlertStatus::Firing, "warning"),
            alert(5, AlertStatus::Firing, "warning"),
        ];
        alerts[3].acked_by = Some("alice".into());
        let silenced = HashSet::from([AlertId(5)]);
        assert_eq!(
            commands(&ack_actions(&alerts, &silenced, 10)),
            ["/ack 3", "/ack 1"],
            "critical first; resolved, acked and silenced alerts get none"
        );
        assert_eq!(
            commands(&ack_actions(&alerts, &silenced, 1)),
            ["/ack 3"],
            "summarised alerts get none, so buttons change only with the text"
        );
    }

    #[test]
    fn a_long_alert_line_is_cut_in_its_head_and_still_says_who_acked_it() {
        let mut a = alert(1, AlertStatus::Firing, "critical");
        for key in ["alertname", "instance"] {
            a.incoming.labels.insert(key.into(), "x".repeat(190));
        }
        a.incoming
            .annotations
            .insert("summary".into(), "y".repeat(190));
        a.acked_by = Some("bob".into());
        let mut out = String::new();
        write_alert_line(&mut out, &a, true);
        assert!(out.chars().count() <= LINE_MAX + 1, "{out}");
        assert!(out.ends_with("… (acked by bob) (silenced)"), "{out}");
    }

    #[test]
    fn at_most_one_row_of_ack_buttons() {
        let alerts: Vec<Alert> = (1..=8)
            .map(|id| alert(id, AlertStatus::Firing, "critical"))
            .collect();
        let actions = ack_actions(&alerts, &HashSet::new(), 10);
        assert_eq!(actions.len(), MAX_ACK_BUTTONS);
        assert_eq!(actions[0].label, "Ack #1");
    }
}
