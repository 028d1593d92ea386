//! opsbot: chat-ops for on-call teams. See ARCHITECTURE.md for the map.
//!
//! The core (`domain`, `catalog`, `router`, `actions`) talks to the world only through the
//! traits in `ports`; backends (`store`, `limiter`, `probes`) and adapters (`adapters`, `http`)
//! implement them, and `app` wires one to the other.

pub mod actions;
pub mod adapters;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod domain;
pub mod hooks;
pub mod http;
pub mod leader;
pub mod limiter;
pub mod liveness;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod paging;
pub mod periodic;
pub mod ports;
pub mod preflight;
pub mod probes;
pub mod router;
pub mod runner;
pub mod scheduler;
pub mod store;
pub mod sweeper;
pub mod telemetry;
