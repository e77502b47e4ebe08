//! Integration tests: frontend and backend over the simulated transport
#![forbid(unsafe_code)]
