//! The engine: images, containers, their state.

pub mod container;
pub mod content;
pub mod image;
pub mod meta;
pub mod snapshot;
