//! Integration tests across crates (in `tests/`): the real toolstack, backend
//! daemon and frontend together over the simulated transport. The world they
//! run in is `pvusb-testkit`'s; this library is empty on purpose.
#![forbid(unsafe_code)]
