//! The CLI side of the API.
