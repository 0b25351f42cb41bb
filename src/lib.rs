//! muhurat — a phased deployment controller that moves HAProxy traffic from
//! the live pool to a new version only inside permitted windows computed from
//! an exchange calendar. See docs/design.md for the design; this crate is one
//! library (pure core + edges) and one binary.

pub mod api;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod diag;
pub mod duration;
pub mod engine;
pub mod gates;
pub mod localtime;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod secrets;
pub mod spec;
pub mod store;
pub mod traffic;
pub mod windows;
pub mod yaml;
