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
        if mode == RunMode::DryRun {
            return self.dry_run(spec, &args, &line);
        }
        let person = requester
            .person()
            .ok_or_else(|| Refusal::Denied("unknown users cannot request runbooks".into()))?;
        let (state, break_glass) = self.admit(person, spec, &mode)?;
        let rendered = self.render_for(spec, &args)?;
        let run = self
            .create(
                ev,
                person,
                spec,
                &args,
                &rendered,
                (state, break_glass.clone()),
            )
            .await?;
        if state != RunState::Approved {
            return Ok(self.pending(&run, person, spec, &rendered, &line));
        }
        let steps = matches!(rendered.plan, Plan::Steps { .. });
        if steps && run.new.platform != Platform::Console {
            let ctx = (ev, request_id);
            return self
                .steps_in_background(ctx, run, rendered, break_glass)
                .await;
        }
        let ran = self.execute(ev, request_id, &run, &rendered).await?;
        let (result, ended) = (ran.text, ran.ended);
        let (text, detail) = match break_glass {
            Some(reason) => (
                format!(
                    "🚨 BREAK-GLASS: {} ran {line} without approval. Reason: {reason}\n{result}",
                    person.name
                ),
                format!("break-glass #{}: {reason}; {ended}", run.id),
            ),
            None => (result, format!("ran #{}: {ended}", run.id)),
        };
        Ok(Done {
            text,
            detail,
            pending_run: ran.gate,
            ran: Some(run.id),
            progress: false,
        })
    }

    /// A run of steps needing no approval, on a chat platform: started, then run in the
    /// background; the answer lists its steps and becomes its progress message once posted
    /// (`Router::bind_progress`), and its result is posted in reply.
    async fn steps_in_background(
        &self,
        (ev, request_id): (&InboundEvent, &RequestId),
        run: Run,
        rendered: RenderedAction,
        break_glass: Option<String>,
    ) -> Result<Done, Refusal> {
        let id = run.id;
        if !self.start(ev, request_id, &run, &rendered).await? {
            return Ok(Done::text(format!(
                "Request #{id} is already running or done."
            )));
        }
        let line = command_line(&run.new.command, &run.new.args);
        let who = run.new.requester_name.clone();
        let list = match &rendered.plan {
            Plan::Steps { steps, on_failure } => {
                super::progress::Progress::new(&run, (steps, on_failure), &[]).list(false)
            }
            Plan::Single(_) => String::new(),
        };
        let (banner, detail) = match &break_glass {
            Some(reason) => (
                format!("🚨 BREAK-GLASS: {who} ran {line} without approval. Reason: {reason}\n"),
                format!("break-glass #{id}: {reason}; running, its result goes to the channel"),
            ),
            None => (
                String::new(),
                format!("running #{id}; its result goes to the channel"),
            ),
        };
        self.run_in_background(
            ev,
            request_id,
            run,
            rendered,
            super::steps::Resume::default(),
        );
        Ok(Done {
            text: format!(
                "{banner}Request #{id}: {line} requested by {who} — running; the result will be posted in reply.\n{list}"
            ),
            detail,
            pending_run: None,
            ran: Some(id),
            progress: true,
        })
    }

    /// `--dry-run`: exactly what would run. Secret values are never shown, so a dry run works
    /// even where they are not set.
    fn dry_run(&self, spec: &CommandSpec, args: &BoundArgs, line: &str) -> Result<Done, Refusal> {
        let env = self.env.clone();
        let lookup = move |name: &str| env(name).or_else(|| Some("unset".to_owned()));
        let rendered =
            render(spec, args, &lookup).map_err(|e| Refusal::Failed(anyhow::anyhow!(e)))?;
        let approval_note = match &spec.approval {
            Some(a) => format!(
                "needs {} approval(s) from {}",
                a.approvals,
                roles_list(&a.approver_roles)
            ),
            None => "runs without approval".into(),
        };
        Ok(Done::text(format!(
            "Dry run, nothing was requested. {line} would run ({approval_note}):\n```\n{}\n```",
            rendered.display
        )))
    }

    /// The state a new request starts in: pending when it needs approval, approved when it
    /// does not or when a break-glass role skips it (with the reason).
    fn admit(
        &self,
        person: &Person,
        spec: &CommandSpec,
        mode: &RunMode,
    ) -> Result<(RunState, Option<String>), Refusal> {
        match (mode, &spec.approval) {
            (RunMode::BreakGlass(reason), Some(_)) => {
                let roles = &self.approvals.break_glass_roles;
                if !person.has_any_role(roles) {
                    return Err(Refusal::Denied(format!(
                        "break-glass needs one of the roles {}; ask an approver instead.",
                        if roles.is_empty() {
                            "(none configured)".to_owned()
                        } else {
                            roles_list(roles)
                        }
                    )));
                }
                Ok((RunState::Approved, Some(reason.clone())))
            }
            (RunMode::BreakGlass(_), None) => Err(Refusal::Invalid(format!(
                "/{} runs without approval; --break-glass is not needed.",
                spec.name
            ))),
            (_, Some(_)) => Ok((RunState::Pending, None)),
            (_, None) => Ok((RunState::Approved, None)),
        }
    }

    /// Stores the request in the state `admit` decided (with the break-glass reason, if any).
    async fn create(
        &self,
        ev: &InboundEvent,
        person: &Person,
        spec: &CommandSpec,
        args: &BoundArgs,
        rendered: &RenderedAction,
        (state, break_glass): (RunState, Option<String>),
    ) -> Result<Run, Refusal> {
        let now = self.now();
        let shown = (rendered.display.clone(), rendered.hash.clone());
        let new = self.new_request(ev, person, spec, &args.0, shown, (state, break_glass));
        self.store
            .create_run(new, now + lease())
            .await
            .or_refuse("creating run request")
    }

    /// A new request of `spec` by `person` in `ev`'s channel, showing (and bound to) `shown`
    /// (the text and its hash), in `state`; it expires as the command's approval says.
    pub(super) fn new_request(
        &self,
        ev: &InboundEvent,
        person: &Person,
        spec: &CommandSpec,
        args: &[(String, String)],
        (rendered, action_hash): (String, String),
        (state, break_glass): (RunState, Option<String>),
    ) -> NewRun {
        let now = self.now();
        let expires_after = spec.approval.as_ref().map_or(LEASE, |a| a.expires_after);
        NewRun {
            command: spec.name.clone(),
            args: args.to_vec(),
            rendered,
            action_hash,
            requester: ev.user.clone(),
            requester_name: person.name.clone(),
            platform: ev.platform,
            channel_id: ev.channel.id.clone(),
            channel_name: ev.channel.name.clone(),
            thread: ev.thread.clone(),
            approvals_needed: spec.approval.as_ref().map_or(0, |a| a.approvals),
            state,
            break_glass,
            created_at: now,
            expires_at: now + chrono::Duration::from_std(expires_after).unwrap_or_default(),
        }
    }

    /// The approval request: what will run, who may approve, how.
    pub(super) fn pending(
        &self,
        run: &Run,
        person: &Person,
        spec: &CommandSpec,
        rendered: &RenderedAction,
        line: &str,
    ) -> Done {
        let (approve, deny) = self.approvals.shown();
        let (n, roles, exp) = spec.approval.as_ref().map_or_else(
            || (0, String::new(), String::new()),
            |a| {
                (
                    a.approvals,
                    roles_list(&a.approver_roles),
                    human_duration(a.expires_after),
                )
            },
        );
        Done {
            text: format!(
                "Request #{id}: {line} requested by {who} — needs {n} approval(s) from {roles}, expires in {exp}.\n\
                 Will run:\n```\n{display}\n```\nReact {approve} to approve, {deny} to deny, or /approve {id} · /deny {id}. \
                 {who} can /cancel {id}.",
                id = run.id,
                who = person.name,
                display = rendered.display,
            ),
            detail: format!("pending #{}", run.id),
            pending_run: Some(run.id),
            ran: None,
            progress: false,
        }
    }
}
