//! Tests of the sandbox itself, against real processes and real HTTP on loopback.

mod alarms;
mod aws_emulator;
mod environment;
mod fleet;
mod kube_api;
mod kubectl_access;
mod kubectl_apply;
mod kubectl_drift;
mod kubectl_get;
mod openapi;
