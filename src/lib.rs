//! edgewatch: a lightweight network-anomaly sensor for routers and gateways.
//!
//! Read the modules in pipeline order: `capture` (frames from a file or an interface) ->
//! `parse` (frame -> `packet::PacketMeta`) -> `dispatch` (order, fragments, shards) -> `flow`
//! (bidirectional flow table) -> `host` + `features` (the feature vector) -> `model` (tract
//! scorer) -> `incident` (threshold, behaviours, evidence, one alert per episode, rate limit)
//! -> `alert` (the EVE record) -> `sink` (JSON lines). `scoring` runs host context, features,
//! model and incidents as one stage; `mqtt` publishes the alerts; `agent` is the one place that
//! wires the threads and queues, for every command; `config`, `stats`, `signals`, `distinct`
//! (counting distinct values) and `fasthash` (the tables' hasher) serve them all.
//! `collector` (cargo feature `collector`) is the central side: MQTT ingest, storage, web UI and
//! API.

pub mod agent;
pub mod alert;
pub mod capture;
#[cfg(feature = "collector")]
pub mod collector;
pub mod config;
pub mod dispatch;
pub mod distinct;
pub mod fasthash;
pub mod features;
pub mod flow;
pub mod host;
pub mod incident;
pub mod model;
pub mod mqtt;
pub mod packet;
pub mod parse;
pub mod repeat;
pub mod scoring;
pub mod signals;
pub mod sink;
pub mod stats;
