//! DNS mode: the filtering resolver.

pub mod filter;
pub mod upstream;
