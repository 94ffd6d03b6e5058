//! The command line's clients of a running provbox (its dashboard API), with the
//! stopped-server fallbacks. Top of the layers: they read the whole configuration.

pub mod api;
pub mod resync;
pub mod upgrade;
