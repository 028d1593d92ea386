//! Platform adapters: each turns its platform's events into `domain::InboundEvent`s for the
//! router and delivers the replies. Only the console exists so far.

pub mod console;
