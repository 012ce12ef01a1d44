//! placeholder

pub mod anthropic;
