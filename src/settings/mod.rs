//! The function's settings, checked once, typed from then on.
//!
//! - `lambda`: the function's environment variables (the template's parameters)
//!
//! The RudderStack destination's own settings (spec section 1: API key, base endpoint,
//! mapping flags) are the mapping crate's: [`kustomer_mapping::settings`].

pub mod lambda;
