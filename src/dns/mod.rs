//! DNS mode: the filtering resolver.

pub mod filter;
