//! The engine: images, containers, their state.

pub mod meta;
