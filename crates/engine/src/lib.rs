//! The engine: images, containers, their state.

pub mod build;
pub mod container;
pub mod content;
pub mod distribution;
pub mod error;
pub mod image;
pub mod meta;
pub mod snapshot;
