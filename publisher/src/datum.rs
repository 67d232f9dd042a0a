//! One CloudWatch data point, as the aggregator produces it and as `once --dry-run` and
//! `aggregate` print it. The JSON shape is a contract (DESIGN.md):
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
    /// Always finite: the aggregator never produces NaN or infinities.
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

/// The datums of one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Round {
    pub datums: Vec<Datum>,
}

/// What `once --dry-run` and `aggregate` print: `{"rounds":[{"datums":[...]}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rounds {
    pub rounds: Vec<Round>,
}
