//! The part of the [`Store`](crate::Store) implementations that is the same
//! for every backend: methods that only hand their arguments to the
//! backend's `jobs::` and `sources::` functions inside `self.write` or
//! `self.read`. Each backend module mirrors those function names, so
//! [`impl_store!`] writes them once; the backend adds the methods that differ.

/// Implements [`Store`](crate::Store) for `$store`: the shared methods, then `$own`.
macro_rules! impl_store {
    ($store:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            async fn apply_snapshot(&self, snapshot: Snapshot) -> Result<ApplyReport> {
                self.write(move |w| sources::apply_snapshot(w, &snapshot)).await
            }

            async fn reject_revision(&self, source: &str, revision: &str, errors: Vec<String>) -> Result<()> {
                let (source, revision) = (source.to_string(), revision.to_string());
                self.write(move |w| sources::reject_revision(w, &source, &revision, &errors)).await
            }

            async fn source_checked(&self, source: &str) -> Result<()> {
                let source = source.to_string();
                self.write(move |w| sources::checked(w, &source)).await
            }

            async fn sources(&self) -> Result<Vec<SourceView>> {
                self.read(sources::list).await
            }

            async fn manifests(&self, kind: Option<Kind>) -> Result<Vec<StoredManifest>> {
                self.read(move |c| sources::manifests(c, kind)).await
            }

            async fn catalog(&self) -> Result<Catalog> {
                self.read(sources::catalog).await
            }

            async fn create_job(&self, job: NewJob, actor: &str) -> Result<Created> {
                let actor = actor.to_string();
                self.write(move |w| jobs::create(w, &job, &actor)).await
            }

            async fn get_job(&self, id: &str) -> Result<Option<JobView>> {
                let id = id.to_string();
                self.read(move |c| jobs::get(c, &id, true)).await
            }

            async fn update_pending_job(&self, job: NewJob, actor: &str) -> Result<bool> {
                let actor = actor.to_string();
                self.write(move |w| jobs::update_pending(w, &job, &actor)).await
            }

            async fn trigger_mark(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
                let name = name.to_string();
                self.read(move |c| sources::trigger_mark(c, &name)).await
            }

            async fn set_trigger_mark(&self, name: &str, watermark: DateTime<Utc>) -> Result<()> {
                let name = name.to_string();
                self.write(move |w| sources::set_trigger_mark(w, &name, watermark)).await
            }

            async fn job_env(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
                let id = id.to_string();
                self.read(move |c| jobs::env(c, &id)).await
            }

            async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobView>> {
                let filter = filter.clone();
                self.read(move |c| jobs::list(c, &filter)).await
            }

            async fn set_desired(&self, id: &str, desired: DesiredState, actor: &str, reason: Option<&str>) -> Result<JobView> {
                let (id, actor, reason) = (id.to_string(), actor.to_string(), reason.map(str::to_string));
                self.write(move |w| jobs::set_desired(w, &id, desired, &actor, reason.as_deref())).await
            }

            async fn override_status(&self, id: &str, target: &Override, actor: &str, reason: &str) -> Result<JobView> {
                let (id, target, actor, reason) = (id.to_string(), target.clone(), actor.to_string(), reason.to_string());
                self.write(move |w| jobs::override_status(w, &id, &target, &actor, &reason)).await
            }

            async fn add_comment(&self, id: &str, author: &str, body: &str) -> Result<CommentView> {
                let (id, author, body) = (id.to_string(), author.to_string(), body.to_string());
                self.write(move |w| jobs::add_comment(w, &id, &author, &body)).await
            }

            async fn comments(&self, id: &str) -> Result<Vec<CommentView>> {
                let id = id.to_string();
                self.read(move |c| jobs::comments(c, &id)).await
            }

            async fn evidence(&self, id: &str) -> Result<Vec<EvidenceView>> {
                let id = id.to_string();
                self.read(move |c| jobs::evidence(c, &id)).await
            }

            async fn active_job_ids(&self) -> Result<Vec<String>> {
                self.read(jobs::active_ids).await
            }

            async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
                let id = id.to_string();
                self.read(move |c| jobs::state(c, &id)).await
            }

            async fn change_status(&self, id: &str, change: StatusChange, actor: &str) -> Result<bool> {
                let (id, actor) = (id.to_string(), actor.to_string());
                self.write(move |w| jobs::change_status(w, &id, &change, &actor)).await
            }

            async fn start_attempt(&self, id: &str, attempt: NewAttempt) -> Result<u32> {
                let id = id.to_string();
                self.write(move |w| jobs::start_attempt(w, &id, &attempt)).await
            }

            async fn attempt_spawned(&self, id: &str, attempt: u32, handle: Value) -> Result<()> {
                let id = id.to_string();
                self.write(move |w| jobs::attempt_spawned(w, &id, attempt, &handle)).await
            }

            async fn set_attempt_state(
                &self,
                id: &str,
                attempt: u32,
                state: AgentState,
                actor: &str,
                reason: Option<&str>,
            ) -> Result<()> {
                let (id, actor, reason) = (id.to_string(), actor.to_string(), reason.map(str::to_string));
                self.write(move |w| jobs::set_attempt_state(w, &id, attempt, state, &actor, reason.as_deref())).await
            }

            async fn end_attempt(&self, id: &str, attempt: u32, end: AttemptEnd) -> Result<()> {
                let id = id.to_string();
                self.write(move |w| jobs::end_attempt(w, &id, attempt, &end)).await
            }

            async fn live_attempts(&self) -> Result<Vec<AgentView>> {
                self.read(|c| jobs::agents(c, true, u32::MAX)).await
            }

            async fn agent_for_token(&self, token_hash: &str) -> Result<Option<(String, u32)>> {
                let token_hash = token_hash.to_string();
                self.read(move |c| jobs::agent_for_token(c, &token_hash)).await
            }

            async fn heartbeat(&self, id: &str, attempt: u32) -> Result<()> {
                let id = id.to_string();
                self.write(move |w| jobs::heartbeat(w, &id, attempt)).await
            }

            async fn report_step(&self, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()> {
                let (id, step, report) = (id.to_string(), step.to_string(), report.clone());
                self.write(move |w| jobs::report_step(w, &id, attempt, &step, &report)).await
            }

            async fn add_evidence(
                &self,
                id: &str,
                attempt: u32,
                step: Option<&str>,
                kind: &str,
                content: &str,
                truncated: bool,
            ) -> Result<EvidenceView> {
                let (id, step, kind, content) =
                    (id.to_string(), step.map(str::to_string), kind.to_string(), content.to_string());
                self.write(move |w| jobs::add_evidence(w, &id, attempt, step.as_deref(), &kind, &content, truncated)).await
            }

            $($own)*
        }
    };
}

pub(crate) use impl_store;
