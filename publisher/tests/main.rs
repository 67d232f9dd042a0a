//! The publisher's integration tests, linked into one binary.
mod aggregation;
mod cli;
mod discovery;
mod e2e;
mod faults;
mod leadership;
mod parser;
mod parser_differential;
mod scrape;
