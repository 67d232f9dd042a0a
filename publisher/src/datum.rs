//! One CloudWatch data point, as the aggregator produces it and as `once --dry-run` and
//! `aggregate` print it. The JSON shape is a contract (documented in
//! `publisher/README.md`, "Metric semantics"):
//! `{"MetricName":"assignIPAddresses","Value":2.0,"Unit":"Count","Dimensions":[{"Name":"CLUSTER_ID","Value":"c"}]}`.

use std::time::SystemTime;

use serde::Serialize;

/// The one dimension upstream puts on every datum.
pub const CLUSTER_DIMENSION: &str = "CLUSTER_ID";

/// The CloudWatch unit of a datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Milliseconds,
}

/// A dimension name and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dimension {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Value")]
    pub value: String,
}

/// One data point of one metric in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Datum {
    #[serde(rename = "MetricName")]
    pub metric_name: String,
    /// Always accepted by CloudWatch ([`cloudwatch_accepts`]): the aggregator leaves other
    /// values out of the round and reports them in [`Round::unpublishable`].
    #[serde(rename = "Value")]
    pub value: f64,
    #[serde(rename = "Unit")]
    pub unit: Unit,
    #[serde(rename = "Dimensions")]
    pub dimensions: Vec<Dimension>,
    /// The round's time; not part of the JSON shape.
    #[serde(skip)]
    pub timestamp: SystemTime,
}

/// The largest magnitude CloudWatch accepts (its docs: 1.174271e+108, i.e. 2^360 in its
/// own base-2 notation); PutMetricData refuses the whole call when one value exceeds it.
pub const CLOUDWATCH_MAX_MAGNITUDE: f64 = 1.174_271e108;
/// The smallest non-zero magnitude CloudWatch accepts (its docs: 8.515920e-109).
pub const CLOUDWATCH_MIN_MAGNITUDE: f64 = 8.515_920e-109;

/// Whether CloudWatch accepts `value` in a datum: finite, at most
/// [`CLOUDWATCH_MAX_MAGNITUDE`] in magnitude, and zero or at least
/// [`CLOUDWATCH_MIN_MAGNITUDE`]. Values outside are dropped rather than clamped: a clamped
/// value would be a number nobody measured, and an alarm on it would fire or stay quiet for
/// the wrong reason.
pub fn cloudwatch_accepts(value: f64) -> bool {
    let magnitude = value.abs();
    // NaN fails both comparisons, infinities the first.
    magnitude <= CLOUDWATCH_MAX_MAGNITUDE
        && (magnitude == 0.0 || magnitude >= CLOUDWATCH_MIN_MAGNITUDE)
}

/// A value the aggregator computed but left out of the round because CloudWatch would
/// refuse it (see [`cloudwatch_accepts`]), e.g. a gauge sum that overflowed to infinity.
#[derive(Debug, Clone, PartialEq)]
pub struct UnpublishableValue {
    pub metric_name: String,
    pub dimensions: Vec<Dimension>,
    pub value: f64,
}

/// The datums of one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Round {
    pub datums: Vec<Datum>,
    /// What the round computed but could not publish; the caller warns and counts. Not
    /// part of the printed JSON shape.
    #[serde(skip)]
    pub unpublishable: Vec<UnpublishableValue>,
}

impl Round {
    /// Warns once per value left out of the round, naming it and saying what to check.
    pub fn warn_unpublishable(&self) {
        for value in &self.unpublishable {
            tracing::warn!(
                metric = %value.metric_name,
                dimensions = ?value.dimensions,
                value = value.value,
                "left this value out of the round: CloudWatch refuses values that are not \
                 finite, beyond ±1.174271e108 or non-zero below 8.515920e-109 in magnitude; \
                 check what the aws-node pods expose for it"
            );
        }
    }
}

/// What `once --dry-run` and `aggregate` print: `{"rounds":[{"datums":[...]}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rounds {
    pub rounds: Vec<Round>,
}
