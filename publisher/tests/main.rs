//! The publisher's integration tests, linked into one binary.
mod aggregation;
mod cli;
mod e2e;
mod parser;
