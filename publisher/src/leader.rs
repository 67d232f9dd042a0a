//! Leader election on a coordination.k8s.io/v1 Lease, so that running two or more replicas
//! is safe: only the holder scrapes and publishes.
//!
//! The algorithm is client-go's: read the Lease; if we hold it, renew `renewTime`; if
//! nobody holds it, or its record has not changed for `leaseDurationSeconds` *as measured
//! on our own clock* (so clock skew between replicas does not matter), take it over. Every
//! write carries the `resourceVersion` we read, so when two replicas race, the API server
//! accepts one and answers 409 Conflict to the other. A leader that cannot renew within the
//! renew deadline (two thirds of the lease) stops acting as leader before anyone else can
//! take over. On graceful shutdown the leader releases the Lease (empty holder), so a
//! standby takes over at its next attempt instead of waiting for expiry.
//!
//! RBAC: `get`, `create` and `update` on `leases` (coordination.k8s.io) in the Lease's
//! namespace.

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
    #[error("Lease {namespace}/{name} did not answer within {timeout:?}")]
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
        self.lease_duration * 2 / 3
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
            .api
            .get_opt(&self.name)
            .await
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
            return match self.api.create(&PostParams::default(), &lease).await {
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
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
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
            .api
            .get_opt(&self.name)
            .await
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
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
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

/// What the election task reports to the round loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeadershipState {
    pub is_leader: bool,
    /// The last attempt reached the API server (a standby is healthy).
    pub healthy: bool,
}

/// Runs the election until `stop` turns true, publishing the state on `state`, then
/// releases the Lease if held.
pub async fn run_election(
    mut elector: LeaderElector,
    state: watch::Sender<LeadershipState>,
    mut stop: watch::Receiver<bool>,
) {
    let retry_period = elector.retry_period();
    let renew_deadline = elector.renew_deadline();
    let attempt_timeout = renew_deadline.max(Duration::from_millis(200));
    let mut last_renewal: Option<Instant> = None;
    tracing::info!(identity = %elector.identity(), lease = %elector.name, "leader election started");
    loop {
        let attempt = tokio::time::timeout(attempt_timeout, elector.try_acquire_or_renew()).await;
        let attempt = attempt.unwrap_or_else(|_| {
            Err(LeaderError::Timeout {
                namespace: elector.namespace.clone(),
                name: elector.name.clone(),
                timeout: attempt_timeout,
            })
        });
        let previous = *state.borrow();
        let next = match attempt {
            Ok(Attempt::Leading) => {
                last_renewal = Some(Instant::now());
                LeadershipState {
                    is_leader: true,
                    healthy: true,
                }
            }
            Ok(Attempt::Following { holder }) => {
                last_renewal = None;
                tracing::debug!(%holder, "standing by");
                LeadershipState {
                    is_leader: false,
                    healthy: true,
                }
            }
            Err(error) => {
                tracing::warn!("leader election attempt failed: {error}");
                let still_leading =
                    last_renewal.is_some_and(|renewed| renewed.elapsed() < renew_deadline);
                if !still_leading {
                    last_renewal = None;
                }
                LeadershipState {
                    is_leader: still_leading,
                    healthy: false,
                }
            }
        };
        if next.is_leader != previous.is_leader {
            if next.is_leader {
                tracing::info!(identity = %elector.identity(), "became the leader");
            } else {
                tracing::warn!(identity = %elector.identity(), "no longer the leader");
            }
        }
        // Only a change wakes the round loop; an unchanged state every retry period would
        // make it re-run its standby bookkeeping for nothing.
        state.send_if_modified(|current| std::mem::replace(current, next) != next);
        tokio::select! {
            () = tokio::time::sleep(retry_period) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    state.send_replace(LeadershipState::default());
    match tokio::time::timeout(attempt_timeout, elector.release()).await {
        Ok(Ok(())) => tracing::info!("released the Lease"),
        Ok(Err(error)) => tracing::warn!("releasing the Lease failed: {error}"),
        Err(_) => tracing::warn!("releasing the Lease timed out"),
    }
}
