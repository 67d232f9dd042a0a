//! Publishing to CloudWatch: a bounded queue of datums, flushed in PutMetricData calls of
//! at most 1000 datums and at most 1 MB (estimated conservatively), after the SDK's standard
//! retry. When CloudWatch stays unreachable the queue keeps the newest data up to its
//! capacity and drops the oldest, counting and logging what it dropped; it never grows
//! without limit. NaN and infinities are never queued.
//!
//! The SDK configuration comes from [`crate::edge::aws_config_loader`] (the default chains
//! and one explicit rustls+ring HTTP client), with the region given explicitly so that IMDS
//! is never asked for it.

use std::collections::VecDeque;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_cloudwatch::error::{DisplayErrorContext, SdkError};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension as CwDimension, MetricDatum, StandardUnit};

use crate::datum::{Datum, Unit};
use crate::edge::aws_config_loader;

/// CloudWatch's limit of datums per PutMetricData call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// CloudWatch's limit of bytes per PutMetricData request.
pub const MAX_BYTES_PER_CALL: usize = 1_000_000;
/// The smallest byte budget a batch may be configured with: room for one large datum.
pub const MIN_BATCH_BYTES: usize = 16 * 1024;
/// What the request itself costs besides its datums (namespace, envelope, headers).
const REQUEST_OVERHEAD_BYTES: usize = 4 * 1024;

/// How long one PutMetricData call may take in total, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a flush stopped before the queue was empty.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "PutMetricData to namespace {namespace} failed after the SDK's retries; {queued} datums \
         stay queued for the next round: {message}"
    )]
    Transient {
        namespace: String,
        queued: usize,
        message: String,
    },
}

/// Loads the SDK configuration for CloudWatch in `region`, with the PutMetricData timeouts.
pub async fn load_sdk_config(region: &str) -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    aws_config_loader()
        .region(Region::new(region.to_owned()))
        .timeout_config(timeouts)
        .load()
        .await
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub calls: usize,
    pub datums_sent: usize,
    /// Datums CloudWatch refused as invalid (4xx other than throttling); dropped, since
    /// resending them would fail the same way.
    pub datums_rejected: usize,
}

/// The bounded queue and its CloudWatch client.
pub struct CloudWatchPublisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    queue: DatumQueue,
    batch_datums: usize,
    batch_bytes: usize,
}

impl CloudWatchPublisher {
    /// A publisher to `namespace` that keeps at most `queue_capacity` datums while
    /// CloudWatch cannot be reached and sends at most `batch_datums` datums and
    /// `batch_bytes` estimated bytes per call (both within CloudWatch's limits).
    pub fn new(
        sdk_config: &SdkConfig,
        namespace: &str,
        queue_capacity: usize,
        batch_datums: usize,
        batch_bytes: usize,
    ) -> Self {
        CloudWatchPublisher {
            client: aws_sdk_cloudwatch::Client::new(sdk_config),
            namespace: namespace.to_owned(),
            queue: DatumQueue::new(queue_capacity),
            batch_datums: batch_datums.clamp(1, MAX_DATUMS_PER_CALL),
            batch_bytes: batch_bytes.clamp(MIN_BATCH_BYTES, MAX_BYTES_PER_CALL),
        }
    }

    /// Queues a round's datums (non-finite values are left out).
    pub fn enqueue(&mut self, datums: Vec<Datum>) {
        self.queue.push(datums);
    }

    /// How many datums wait to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many datums the queue dropped since start because it was full.
    pub fn dropped_total(&self) -> u64 {
        self.queue.dropped_total
    }

    /// Sends what is queued, oldest first, batch by batch. Stops at the first batch that
    /// fails transiently (after the SDK's retries) and keeps it queued.
    pub async fn flush(&mut self) -> Result<FlushReport, PublishError> {
        let mut report = FlushReport::default();
        loop {
            let metric_data = self.queue.next_batch(self.batch_datums, self.batch_bytes);
            let batch_len = metric_data.len();
            if batch_len == 0 {
                return Ok(report);
            }
            let sent = self
                .client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(metric_data))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    self.queue.remove_oldest(batch_len);
                    report.calls += 1;
                    report.datums_sent += batch_len;
                    tracing::debug!(datums = batch_len, namespace = %self.namespace, "PutMetricData sent");
                }
                Err(error) if is_permanent(&error) => {
                    self.queue.remove_oldest(batch_len);
                    report.calls += 1;
                    report.datums_rejected += batch_len;
                    tracing::warn!(
                        datums = batch_len,
                        "CloudWatch refused a batch, dropping it: {}",
                        DisplayErrorContext(&error)
                    );
                }
                Err(error) => {
                    return Err(PublishError::Transient {
                        namespace: self.namespace.clone(),
                        queued: self.queue.len(),
                        message: DisplayErrorContext(&error).to_string(),
                    });
                }
            }
        }
    }
}

/// A client error that is not throttling: the request itself is wrong and would fail again.
fn is_permanent<E, R>(error: &SdkError<E, R>) -> bool
where
    E: aws_sdk_cloudwatch::error::ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let throttled = code.contains("Throttl") || code == "RequestLimitExceeded";
            let client_fault = matches!(
                code,
                "InvalidParameterValue"
                    | "InvalidParameterCombination"
                    | "MissingParameter"
                    | "InvalidParameterValueException"
                    | "InvalidParameterCombinationException"
                    | "MissingRequiredParameterException"
            );
            client_fault && !throttled
        }
        _ => false,
    }
}

/// One datum as the CloudWatch SDK takes it.
pub fn to_metric_datum(datum: &Datum) -> MetricDatum {
    let unit = match datum.unit {
        Unit::Count => StandardUnit::Count,
        Unit::Milliseconds => StandardUnit::Milliseconds,
    };
    let dimensions: Vec<CwDimension> = datum
        .dimensions
        .iter()
        .map(|dimension| {
            CwDimension::builder()
                .name(&dimension.name)
                .value(&dimension.value)
                .build()
        })
        .collect();
    MetricDatum::builder()
        .metric_name(&datum.metric_name)
        .value(datum.value)
        .unit(unit)
        .timestamp(DateTime::from(datum.timestamp))
        .set_dimensions(Some(dimensions))
        .build()
}

/// A conservative estimate of one datum's share of a request, in the most verbose wire
/// format CloudWatch accepts (the query protocol, where every field name repeats the full
/// member path, e.g. `MetricData.member.1000.Dimensions.member.30.Value=`). CBOR and JSON
/// are smaller, and compression makes them smaller still.
pub fn estimated_datum_bytes(datum: &Datum) -> usize {
    // Field paths and separators for name, value, unit, timestamp and storage resolution,
    // with room for the longest numbers and an ISO timestamp.
    const FIXED: usize = 256;
    // The field paths of one dimension's name and value.
    const PER_DIMENSION: usize = 96;
    // Values may need percent-encoding, which triples a byte at most.
    let escaped = |text: &str| text.len() * 3;
    FIXED
        + escaped(&datum.metric_name)
        + datum
            .dimensions
            .iter()
            .map(|dimension| PER_DIMENSION + escaped(&dimension.name) + escaped(&dimension.value))
            .sum::<usize>()
}

/// Datums waiting for CloudWatch, oldest first, never more than `capacity`.
#[derive(Debug)]
pub struct DatumQueue {
    datums: VecDeque<Datum>,
    capacity: usize,
    dropped_total: u64,
}

impl DatumQueue {
    pub fn new(capacity: usize) -> Self {
        DatumQueue {
            datums: VecDeque::new(),
            capacity: capacity.max(1),
            dropped_total: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.datums.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datums.is_empty()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Appends datums, leaving out non-finite values, and drops the oldest beyond capacity.
    pub fn push(&mut self, datums: Vec<Datum>) {
        let mut non_finite = 0_usize;
        for datum in datums {
            if datum.value.is_finite() {
                self.datums.push_back(datum);
            } else {
                non_finite += 1;
            }
        }
        if non_finite > 0 {
            tracing::warn!(
                datums = non_finite,
                "left out datums whose value is NaN or infinite"
            );
        }
        let excess = self.datums.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.datums.drain(..excess);
            self.dropped_total += excess as u64;
            tracing::warn!(
                dropped = excess,
                dropped_total = self.dropped_total,
                capacity = self.capacity,
                "the CloudWatch queue is full; dropped the oldest datums"
            );
        }
    }

    /// How many datums from the front fit in one call of at most `max_datums` datums and
    /// `max_bytes` estimated bytes. At least one, unless the queue is empty, so that a
    /// single oversized datum cannot block the queue (CloudWatch then refuses it and it is
    /// dropped).
    pub fn next_batch_len(&self, max_datums: usize, max_bytes: usize) -> usize {
        let budget = max_bytes.saturating_sub(REQUEST_OVERHEAD_BYTES);
        let mut used = 0_usize;
        let mut count = 0_usize;
        for datum in self.datums.iter().take(max_datums) {
            let size = estimated_datum_bytes(datum);
            if count > 0 && used + size > budget {
                break;
            }
            used += size;
            count += 1;
        }
        count
    }

    /// The next call's datums as the SDK takes them: the [`DatumQueue::next_batch_len`]
    /// oldest. They stay queued until [`DatumQueue::remove_oldest`] removes them, once
    /// CloudWatch has answered.
    pub fn next_batch(&self, max_datums: usize, max_bytes: usize) -> Vec<MetricDatum> {
        let batch_len = self.next_batch_len(max_datums, max_bytes);
        self.datums
            .iter()
            .take(batch_len)
            .map(to_metric_datum)
            .collect()
    }

    /// Removes the `count` oldest datums (all of them when fewer are queued).
    pub fn remove_oldest(&mut self, count: usize) {
        self.datums.drain(..count.min(self.datums.len()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::datum::Dimension;

    fn datum(name: &str, value: f64, dimension_value_len: usize) -> Datum {
        Datum {
            metric_name: name.to_owned(),
            value,
            unit: Unit::Count,
            dimensions: vec![Dimension {
                name: "CLUSTER_ID".to_owned(),
                value: "c".repeat(dimension_value_len),
            }],
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }

    /// A queue of `count` datums `m0`, `m1`, ... whose dimension values are
    /// `dimension_value_len` bytes long.
    fn queue_of(count: usize, dimension_value_len: usize) -> DatumQueue {
        let mut queue = DatumQueue::new(5000);
        queue.push(
            (0..count)
                .map(|index| datum(&format!("m{index}"), 1.0, dimension_value_len))
                .collect(),
        );
        queue
    }

    #[test]
    fn batches_stop_at_1000_datums() {
        let queue = queue_of(2500, 4);
        assert_eq!(
            queue.next_batch_len(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL),
            1000
        );
    }

    #[test]
    fn batches_are_taken_oldest_first_and_stay_queued_until_removed() {
        let mut queue = queue_of(2500, 4);
        let mut sizes = Vec::new();
        let mut first_names = Vec::new();
        while !queue.is_empty() {
            let batch = queue.next_batch(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
            assert_eq!(queue.len(), 2500 - sizes.iter().sum::<usize>());
            first_names.push(batch[0].metric_name().unwrap_or_default().to_owned());
            sizes.push(batch.len());
            queue.remove_oldest(batch.len());
        }
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(first_names, ["m0", "m1000", "m2000"]);
        queue.remove_oldest(10);
        assert!(queue.is_empty());
    }

    #[test]
    fn batches_stop_before_the_byte_budget() {
        // Each datum is estimated at well over 1 KB, so 1000 of them exceed 1 MB.
        let queue = queue_of(1000, 256);
        let batch = queue.next_batch_len(MAX_DATUMS_PER_CALL, MAX_BYTES_PER_CALL);
        assert!(batch < 1000, "{batch}");
        let bytes: usize = queue
            .datums
            .iter()
            .take(batch)
            .map(estimated_datum_bytes)
            .sum();
        assert!(bytes + REQUEST_OVERHEAD_BYTES <= MAX_BYTES_PER_CALL);
        let with_one_more: usize = queue
            .datums
            .iter()
            .take(batch + 1)
            .map(estimated_datum_bytes)
            .sum();
        assert!(with_one_more + REQUEST_OVERHEAD_BYTES > MAX_BYTES_PER_CALL);
    }

    #[test]
    fn the_estimate_exceeds_the_json_size() {
        let sample = datum("assignIPAddresses", 123_456.789, 40);
        let json = serde_json::to_string(&sample).expect("datum serializes");
        assert!(estimated_datum_bytes(&sample) > json.len() * 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let mut queue = DatumQueue::new(3);
        queue.push(vec![datum("a", 1.0, 1), datum("b", 2.0, 1)]);
        queue.push(vec![datum("c", 3.0, 1), datum("d", 4.0, 1)]);
        let names: Vec<&str> = queue
            .datums
            .iter()
            .map(|d| d.metric_name.as_str())
            .collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_eq!(queue.dropped_total(), 1);
    }

    #[test]
    fn non_finite_values_are_never_queued() {
        let mut queue = DatumQueue::new(10);
        queue.push(vec![
            datum("nan", f64::NAN, 1),
            datum("inf", f64::INFINITY, 1),
            datum("neg", f64::NEG_INFINITY, 1),
            datum("ok", 0.0, 1),
        ]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_batch_len(1000, MAX_BYTES_PER_CALL), 1);
    }

    #[test]
    fn an_empty_queue_has_no_batch() {
        assert_eq!(
            DatumQueue::new(1).next_batch_len(1000, MAX_BYTES_PER_CALL),
            0
        );
        assert!(DatumQueue::new(1).is_empty());
    }
}
