//! mpo-run: a declarative experiment runner for Meta Plan Optimization.
//!
//! The pipeline (docs/ARCHITECTURE.md): a TOML [`spec`] is expanded into variants and
//! turned into a [`plan`] (a DAG of stage instances with content-addressed
//! keys); the [`exec`]utor runs what is not cached, stages ([`mpo`], each a
//! [`stage::Stage`]) write
//! artifacts and Parquet tables into the [`store`]; [`report`] regenerates
//! tables from the results alone. Environments live in [`env`], chat models
//! in [`model`].

pub mod agent;
pub mod cli;
pub mod env;
pub mod exec;
pub mod model;
pub mod mpo;
pub mod plan;
pub mod report;
pub mod spec;
pub mod stage;
pub mod store;
pub mod train;
