//! Settings, checked once, typed from then on.
//!
//! - `destination`: the RudderStack destination's settings (spec section 1): API key,
//!   base endpoint, mapping flags; shared by the function and the command line
//! - `lambda`: the function's environment variables (the template's parameters)

mod destination;
pub mod lambda;

pub use destination::*;
