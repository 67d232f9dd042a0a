//! Leader election on a coordination.k8s.io/v1 Lease, so that running two or more replicas
//! is safe: only the holder scrapes and publishes, and never two at once.
//!
//! The algorithm is client-go's: read the Lease; if we hold it, renew `renewTime`; if
//! nobody holds it, or its record has not changed for `leaseDurationSeconds` *as measured
//! on our own clock* (so clock skew between replicas does not matter), take it over. Every
//! write carries the `resourceVersion` we read, so when two replicas race, the API server
//! accepts one and answers 409 Conflict to the other. On graceful shutdown the leader
//! releases the Lease (empty holder), so a standby takes over at its next attempt instead of
//! waiting for expiry.
//!
//! **At most one leader acts at a time.** A standby takes over no earlier than a lease
//! duration after it last saw the record change, which is after our last successful renewal
//! was *sent*. So a leader leads until `start of its last successful renewal + renew
//! deadline` (two thirds of the lease) on its own monotonic clock, and not a moment longer,
//! whatever the API server does meanwhile: [`Leadership`] carries that instant, every
//! consumer (the round loop, the CloudWatch upload task) checks it before acting and stops
//! when it passes, without waiting for the election task or a hung request. For the same
//! reason the Lease requests have their own client: no retries (kube-rs retries 429, 503
//! and 504 with backoff by default, which would hide the failure past the deadline) and a
//! timeout per request of a quarter of the renew deadline, so an attempt (a read and a
//! write) ends well before the deadline and the next one can still renew in time.
//!
//! RBAC: `get`, `create` and `update` on `leases` (coordination.k8s.io) in the Lease's
//! namespace.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {namespace}/{name} failed: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Lease {namespace}/{name}: the API server did not answer within {timeout:?}; \
         check the API server's health and this pod's network"
    )]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease until at least the renew deadline from now.
    Leading,
    /// Someone else holds it (or won a race just now).
    Following { holder: String },
}

/// What we last saw of the Lease and when, on our clock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<i32>),
    at: Instant,
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(
        api: Api<Lease>,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            api,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often to try: five times per lease, as client-go's 2 s for a 15 s lease.
    pub fn retry_period(&self) -> Duration {
        (self.lease_duration / 5).max(Duration::from_millis(100))
    }

    /// How long a leader keeps leading without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        renew_deadline(self.lease_duration)
    }

    /// How long one Lease request may take.
    pub fn request_timeout(&self) -> Duration {
        request_timeout(self.lease_duration)
    }

    /// Runs one Lease request within [`LeaderElector::request_timeout`].
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, LeaderError> {
        let timeout = self.request_timeout();
        tokio::time::timeout(timeout, request)
            .await
            .map_err(|_| LeaderError::Timeout {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                timeout,
            })
    }

    fn api_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Acquires, renews or observes the Lease once.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaderError> {
        let now = MicroTime(Timestamp::now());
        let existing = self
            .call(self.api.get_opt(&self.name))
            .await?
            .map_err(|error| self.api_error(error))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self
                .call(self.api.create(&PostParams::default(), &lease))
                .await?
            {
                Ok(_) => Ok(Attempt::Leading),
                Err(error) if is_conflict(&error) => Ok(Attempt::Following {
                    holder: "(another replica created the Lease first)".to_owned(),
                }),
                Err(error) => Err(self.api_error(error)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec
            .holder_identity
            .clone()
            .filter(|holder| !holder.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.clone(),
            spec.lease_duration_seconds,
        );
        let observed_at = match &self.observed {
            Some(observed) if observed.record == record => observed.at,
            _ => Instant::now(),
        };
        self.observed = Some(Observed {
            record,
            at: observed_at,
        });
        let held_by_us = holder.as_deref() == Some(self.identity.as_str());
        if let Some(holder) = &holder
            && !held_by_us
        {
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map_or(self.lease_duration, Duration::from_secs);
            if observed_at.elapsed() < their_duration {
                return Ok(Attempt::Following {
                    holder: holder.clone(),
                });
            }
            tracing::info!(previous = %holder, "the Lease expired; taking over");
        }
        if !held_by_us {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.lease_seconds());
        match self
            .call(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await?
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(error) if is_conflict(&error) => Ok(Attempt::Following {
                holder: "(another replica won the race)".to_owned(),
            }),
            Err(error) => Err(self.api_error(error)),
        }
    }

    /// Gives the Lease up if we hold it, so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .call(self.api.get_opt(&self.name))
            .await?
            .map_err(|error| self.api_error(error))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .call(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await?
        {
            Ok(_) => Ok(()),
            // Someone else changed it meanwhile: it is no longer ours to release.
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(self.api_error(error)),
        }
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// How long a leader keeps leading without a successful renewal: two thirds of the lease,
/// as client-go's 10 s for a 15 s lease.
pub fn renew_deadline(lease_duration: Duration) -> Duration {
    lease_duration * 2 / 3
}

/// How long one Lease request may take: a quarter of the renew deadline, so that an attempt
/// (a read, then a write) that hangs ends by half the deadline and leaves time for another.
pub fn request_timeout(lease_duration: Duration) -> Duration {
    (renew_deadline(lease_duration) / 4).max(Duration::from_millis(50))
}

/// The client for Lease requests, from the process's Kubernetes configuration: no retries
/// and every timeout at [`request_timeout`], so that a request fails fast and visibly
/// instead of being retried past the renew deadline.
pub fn lease_client(
    mut config: kube::Config,
    lease_duration: Duration,
) -> Result<kube::Client, kube::Error> {
    let timeout = request_timeout(lease_duration);
    config.default_retry = false;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    kube::Client::try_from(config)
}

/// Whether this replica leads, as the election task last decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Another replica leads, or nobody is known to.
    No,
    /// We lead until this instant of our monotonic clock (the start of our last successful
    /// renewal plus the renew deadline), unless a renewal extends it meanwhile.
    Until(Instant),
    /// There is no election: this replica always leads.
    Always,
}

/// What the election task reports to the round loop and the upload task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeadershipState {
    pub lead: Lead,
    /// The last attempt reached the API server (a standby is healthy).
    pub healthy: bool,
}

impl LeadershipState {
    /// The state of a replica without election.
    pub fn unelected() -> Self {
        LeadershipState {
            lead: Lead::Always,
            healthy: true,
        }
    }

    /// A replica that does not lead.
    pub fn following(healthy: bool) -> Self {
        LeadershipState {
            lead: Lead::No,
            healthy,
        }
    }

    /// Whether this replica may act as the leader at `now`.
    pub fn leads_at(&self, now: Instant) -> bool {
        match self.lead {
            Lead::No => false,
            Lead::Until(deadline) => now < deadline,
            Lead::Always => true,
        }
    }

    /// When the leadership ends unless renewed; `None` without a deadline.
    fn deadline(&self) -> Option<Instant> {
        match self.lead {
            Lead::Until(deadline) => Some(deadline),
            Lead::No | Lead::Always => None,
        }
    }
}

/// A view of this replica's leadership that never trusts a stale report: it reads as lost
/// as soon as the renewal deadline passes on the monotonic clock, even if the election task
/// has not said so yet (it may be waiting for a hung request).
#[derive(Debug, Clone)]
pub struct Leadership {
    state: watch::Receiver<LeadershipState>,
}

impl Leadership {
    pub fn new(state: watch::Receiver<LeadershipState>) -> Self {
        Leadership { state }
    }

    /// The last reported state.
    pub fn state(&self) -> LeadershipState {
        *self.state.borrow()
    }

    /// Whether this replica may act as the leader now.
    pub fn leads_now(&self) -> bool {
        self.state().leads_at(Instant::now())
    }

    /// Waits for the next report of the election task; false when it can send no more.
    pub async fn changed(&mut self) -> bool {
        self.state.changed().await.is_ok()
    }

    /// The state, marking it as seen for [`Leadership::changed`].
    pub fn see(&mut self) -> LeadershipState {
        *self.state.borrow_and_update()
    }

    /// Completes once this replica does not lead: at once if it does not, else when the
    /// election task reports the loss or when the renewal deadline passes, whichever comes
    /// first. Never completes while leading without a deadline.
    pub async fn lost(&mut self) {
        loop {
            let state = *self.state.borrow_and_update();
            if !state.leads_at(Instant::now()) {
                return;
            }
            let expired = sleep_until(state.deadline());
            tokio::select! {
                changed = self.state.changed() => {
                    if changed.is_err() {
                        // No more reports: the state stands until its deadline, if any.
                        sleep_until(state.deadline()).await;
                        return;
                    }
                }
                () = expired => return,
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

/// The election task's own record of its leadership.
struct Reporter {
    state: watch::Sender<LeadershipState>,
    identity: String,
    renew_deadline: Duration,
}

impl Reporter {
    /// The deadline of the current leadership, if leading.
    fn deadline(&self) -> Option<Instant> {
        self.state.borrow().deadline()
    }

    /// Reports `next`, logging a change of leadership. Only a change wakes the consumers;
    /// an unchanged state every retry period would make them re-run their bookkeeping.
    fn report(&self, next: LeadershipState) {
        let now = Instant::now();
        let was_leader = self.state.borrow().leads_at(now);
        let is_leader = next.leads_at(now);
        if is_leader && !was_leader {
            tracing::info!(identity = %self.identity, "became the leader");
        } else if was_leader && !is_leader {
            tracing::warn!(identity = %self.identity, "no longer the leader");
        }
        self.state
            .send_if_modified(|current| std::mem::replace(current, next) != next);
    }

    /// Runs `work` while making sure the leadership ends at its deadline: if the deadline
    /// passes before `work` completes, the loss is reported at once.
    async fn demoting_at_deadline<T>(&self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            let Some(deadline) = self.deadline() else {
                return work.await;
            };
            tokio::select! {
                output = &mut work => return output,
                () = sleep_until(Some(deadline)) => {
                    tracing::warn!(
                        renew_deadline = ?self.renew_deadline,
                        "no successful Lease renewal within the renew deadline; stopping \
                         scraping and publishing before another replica can take over"
                    );
                    self.report(LeadershipState::following(false));
                }
            }
        }
    }

    /// The state after an attempt that started at `started`.
    fn after_attempt(
        &self,
        started: Instant,
        attempt: Result<Attempt, LeaderError>,
    ) -> LeadershipState {
        match attempt {
            Ok(Attempt::Leading) => {
                let deadline = started + self.renew_deadline;
                if deadline <= Instant::now() {
                    // The renewal took the whole deadline: a standby may be about to take
                    // over on the strength of the previous record; the next attempt decides.
                    LeadershipState::following(true)
                } else {
                    LeadershipState {
                        lead: Lead::Until(deadline),
                        healthy: true,
                    }
                }
            }
            Ok(Attempt::Following { holder }) => {
                tracing::debug!(%holder, "standing by");
                LeadershipState::following(true)
            }
            Err(error) => {
                tracing::warn!("leader election attempt failed: {error}");
                // A failed renewal does not end the leadership before its deadline.
                let current = *self.state.borrow();
                LeadershipState {
                    lead: match current.lead {
                        Lead::Until(deadline) if Instant::now() < deadline => Lead::Until(deadline),
                        Lead::Until(_) | Lead::No | Lead::Always => Lead::No,
                    },
                    healthy: false,
                }
            }
        }
    }
}

/// Runs the election until `stop` turns true, publishing the state on `state`, then
/// releases the Lease if held.
pub async fn run_election(
    mut elector: LeaderElector,
    state: watch::Sender<LeadershipState>,
    mut stop: watch::Receiver<bool>,
) {
    let retry_period = elector.retry_period();
    let reporter = Reporter {
        state,
        identity: elector.identity().to_owned(),
        renew_deadline: elector.renew_deadline(),
    };
    tracing::info!(
        identity = %elector.identity(),
        lease = %elector.name,
        request_timeout = ?elector.request_timeout(),
        renew_deadline = ?elector.renew_deadline(),
        "leader election started"
    );
    loop {
        let started = Instant::now();
        let attempt = reporter
            .demoting_at_deadline(elector.try_acquire_or_renew())
            .await;
        reporter.report(reporter.after_attempt(started, attempt));
        let stopping = reporter
            .demoting_at_deadline(async {
                tokio::select! {
                    () = tokio::time::sleep(retry_period) => false,
                    _ = stop.wait_for(|stop| *stop) => true,
                }
            })
            .await;
        if stopping {
            break;
        }
    }
    reporter.report(LeadershipState::following(false));
    match elector.release().await {
        Ok(()) => tracing::info!("released the Lease"),
        Err(error) => tracing::warn!("releasing the Lease failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leading_for(duration: Duration) -> LeadershipState {
        LeadershipState {
            lead: Lead::Until(Instant::now() + duration),
            healthy: true,
        }
    }

    #[test]
    fn leadership_ends_at_its_deadline_on_the_monotonic_clock() {
        let now = Instant::now();
        let state = LeadershipState {
            lead: Lead::Until(now + Duration::from_secs(2)),
            healthy: false,
        };
        assert!(state.leads_at(now));
        assert!(state.leads_at(now + Duration::from_millis(1999)));
        assert!(!state.leads_at(now + Duration::from_secs(2)));
        assert!(!LeadershipState::following(true).leads_at(now));
        assert!(LeadershipState::unelected().leads_at(now + Duration::from_secs(1 << 30)));
    }

    #[tokio::test]
    async fn lost_completes_at_the_deadline_even_without_a_report() {
        // The sender stays alive and silent, as an election task stuck on a hung request.
        let (_sender, receiver) = watch::channel(leading_for(Duration::from_millis(100)));
        let mut leadership = Leadership::new(receiver);
        assert!(leadership.leads_now());
        tokio::time::timeout(Duration::from_secs(5), leadership.lost())
            .await
            .expect("lost() completes once the deadline passed");
        assert!(!leadership.leads_now());
    }

    #[tokio::test]
    async fn a_renewal_moves_the_deadline_that_lost_waits_for() {
        let (sender, receiver) = watch::channel(leading_for(Duration::from_millis(100)));
        let mut leadership = Leadership::new(receiver);
        let renewed = leading_for(Duration::from_secs(60));
        sender.send_replace(renewed);
        let waited = tokio::time::timeout(Duration::from_millis(300), leadership.lost()).await;
        assert!(
            waited.is_err(),
            "lost() completed although a renewal came in time"
        );
        sender.send_replace(LeadershipState::following(true));
        tokio::time::timeout(Duration::from_secs(5), leadership.lost())
            .await
            .expect("lost() completes once the loss is reported");
    }

    #[tokio::test]
    async fn without_election_leadership_is_never_lost() {
        let (_sender, receiver) = watch::channel(LeadershipState::unelected());
        let mut leadership = Leadership::new(receiver);
        let waited = tokio::time::timeout(Duration::from_millis(200), leadership.lost()).await;
        assert!(waited.is_err());
        assert!(leadership.leads_now());
    }

    fn reporter(state: LeadershipState) -> Reporter {
        Reporter {
            state: watch::channel(state).0,
            identity: "me".to_owned(),
            renew_deadline: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_failed_attempt_keeps_leadership_only_until_its_deadline() {
        let error = || LeaderError::Timeout {
            namespace: "ns".to_owned(),
            name: "lease".to_owned(),
            timeout: Duration::from_millis(500),
        };
        let leading = leading_for(Duration::from_secs(1));
        let after = reporter(leading).after_attempt(Instant::now(), Err(error()));
        assert_eq!(after.lead, leading.lead);
        assert!(!after.healthy);

        let expired = LeadershipState {
            lead: Lead::Until(Instant::now()),
            healthy: true,
        };
        let after = reporter(expired).after_attempt(Instant::now(), Err(error()));
        assert_eq!(after, LeadershipState::following(false));
    }

    #[test]
    fn a_renewal_counts_from_when_it_was_sent() {
        let reporter = reporter(LeadershipState::following(true));
        let sent = Instant::now();
        let after = reporter.after_attempt(sent, Ok(Attempt::Leading));
        assert_eq!(after.lead, Lead::Until(sent + Duration::from_secs(2)));

        // A renewal that took the whole deadline does not make a leader: a standby may
        // already be acting on the previous record.
        let long_ago = Instant::now() - Duration::from_secs(3);
        let after = reporter.after_attempt(long_ago, Ok(Attempt::Leading));
        assert_eq!(after, LeadershipState::following(true));
    }

    #[test]
    fn lease_requests_end_well_inside_the_renew_deadline() {
        for seconds in [2, 3, 15, 60] {
            let lease = Duration::from_secs(seconds);
            // An attempt is a read and a write: both together take at most half.
            assert!(
                2 * request_timeout(lease) <= renew_deadline(lease) / 2 + Duration::from_millis(1)
            );
            assert!(renew_deadline(lease) < lease);
        }
    }
}
