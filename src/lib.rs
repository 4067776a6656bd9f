//! crier runs scheduled mass-messaging jobs — SMS, email and customer-portal messages
//! from an internet provider to its customers and leads — declared as YAML files.
//!
//! A message travels one way, and the modules say so:
//! job file ([`job`]) → recipients ([`recipients`]) → throttle ([`throttle`]) →
//! provider ([`provider`]), with [`store`] underneath. [`config`] and [`diag`] serve the
//! files admins write; [`cli`] and [`commands`] are the command line the binary wraps.

pub mod bounces;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod console;
pub mod control;
pub mod daemon;
pub mod diag;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod history;
pub mod job;
pub mod logging;
pub mod provider;
pub mod recipients;
pub mod render;
pub mod script;
pub mod server;
pub mod store;
pub mod throttle;
