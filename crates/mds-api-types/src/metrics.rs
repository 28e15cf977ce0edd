//! `GET /databases/{id}/metrics?window=`: each binding's numbers from its
//! engine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time;
use crate::Timestamp;

#[derive(Debug, Serialize, Deserialize)]
pub struct DatabaseMetrics {
    pub database_id: String,
    pub engine: String,
    /// The window asked for (`5m`, `1h`, `24h`, `7d`).
    pub window: String,
    /// No history is kept: each binding has one point, read now. Counters
    /// (`xact_commit`, `commands_processed`, ...) run since the engine's
    /// statistics began, so two reads give a rate.
    pub resolution: String,
    pub bindings: Vec<BindingMetrics>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BindingMetrics {
    pub binding_id: String,
    pub environment: String,
    pub environment_id: String,
    pub state: String,
    pub points: Vec<MetricPoint>,
    /// Why there are no points (not running, the engine did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MetricPoint {
    #[serde(serialize_with = "time::serialize")]
    pub t: Timestamp,
    pub values: BTreeMap<String, f64>,
}
