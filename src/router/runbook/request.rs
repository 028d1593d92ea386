//! A runbook command becomes a dry run, a run at once (no approval, or break-glass) or a
//! pending request that names who must approve it.

use super::*;

impl RunbookService {
    /// A runbook command that passed authorization, binding and rate limits.
    pub(in crate::router) async fn request_runbook(
        &self,
        ev: &InboundEvent,
        request_id: &RequestId,
        requester: &Requester,
        spec: &Arc<CommandSpec>,
        args: BoundArgs,
        mode: RunMode,
    ) -> Result<Done, Refusal> {
        let line = command_line(&spec.name, &args.0);
        let approval_note = match &spec.approval {
            Some(a) => format!(
                "needs {} approval(s) from {}",
                a.approvals,
                roles_list(&a.approver_roles)
            ),
            None => "runs without approval".into(),
        };
        if mode == RunMode::DryRun {
            // Secret values are never shown, so a dry run works even where they are not set.
            let env = self.env.clone();
            let lookup = move |name: &str| env(name).or_else(|| Some("unset".to_owned()));
            let rendered =
                render(spec, &args, &lookup).map_err(|e| Refusal::Failed(anyhow::anyhow!(e)))?;
            return Ok(Done::text(format!(
                "Dry run, nothing was requested. {line} would run ({approval_note}):\n```\n{}\n```",
                rendered.display
            )));
        }
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot request runbooks".into()))?;
        let now = self.now();
        let (state, break_glass) = match (&mode, &spec.approval) {
            (RunMode::BreakGlass(reason), Some(_)) => {
                if !person.has_any_role(&self.approvals.break_glass_roles) {
                    return Err(Refusal::Denied(format!(
                        "break-glass needs one of the roles {}; ask an approver instead.",
                        if self.approvals.break_glass_roles.is_empty() {
                            "(none configured)".to_owned()
                        } else {
                            roles_list(&self.approvals.break_glass_roles)
                        }
                    )));
                }
                (RunState::Approved, Some(reason.clone()))
            }
            (RunMode::BreakGlass(_), None) => {
                return Err(Refusal::Invalid(format!(
                    "/{} runs without approval; --break-glass is not needed.",
                    spec.name
                )));
            }
            (_, Some(_)) => (RunState::Pending, None),
            (_, None) => (RunState::Approved, None),
        };
        let rendered = self.render_for(spec, &args)?;
        let expires_after = spec.approval.as_ref().map_or(LEASE, |a| a.expires_after);
        let run = self
            .store
            .create_run(
                NewRun {
                    command: spec.name.clone(),
                    args: args.0.clone(),
                    rendered: rendered.display.clone(),
                    action_hash: rendered.hash.clone(),
                    requester: ev.user.clone(),
                    requester_name: person.name.clone(),
                    platform: ev.platform,
                    channel_id: ev.channel.id.clone(),
                    channel_name: ev.channel.name.clone(),
                    thread: ev.thread.clone(),
                    approvals_needed: spec.approval.as_ref().map_or(0, |a| a.approvals),
                    state,
                    break_glass: break_glass.clone(),
                    created_at: now,
                    expires_at: now + chrono::Duration::from_std(expires_after).unwrap_or_default(),
                },
                now + lease(),
            )
            .await
            .map_err(store_failed("creating run request"))?;
        if state == RunState::Approved {
            let result = self.execute(ev, request_id, &run, &rendered).await?;
            let (text, detail) = match break_glass {
                Some(reason) => (
                    format!(
                        "🚨 BREAK-GLASS: {} ran {line} without approval. Reason: {reason}\n{result}",
                        person.name
                    ),
                    format!("break-glass #{}: {reason}", run.id),
                ),
                None => (result, format!("ran #{}", run.id)),
            };
            return Ok(Done {
                text,
                detail,
                pending_run: None,
                ran: Some(run.id),
            });
        }
        let a = spec
            .approval
            .as_ref()
            .expect("pending requests have an approval policy");
        let approve = self
            .approvals
            .approve_emoji
            .first()
            .map_or("✅", String::as_str);
        let deny = self
            .approvals
            .deny_emoji
            .first()
            .map_or("❌", String::as_str);
        Ok(Done {
            text: format!(
                "Request #{id}: {line} requested by {who} — needs {n} approval(s) from {roles}, expires in {exp}.\n\
                 Will run:\n```\n{display}\n```\nReact {approve} to approve, {deny} to deny, or /approve {id} · /deny {id}. \
                 {who} can /cancel {id}.",
                id = run.id,
                who = person.name,
                n = a.approvals,
                roles = roles_list(&a.approver_roles),
                exp = human_duration(a.expires_after),
                display = rendered.display,
            ),
            detail: format!("pending #{}", run.id),
            pending_run: Some(run.id),
            ran: None,
        })
    }
}
