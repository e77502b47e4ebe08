//! pvUSB frontend: a virtual host controller in userspace
#![forbid(unsafe_code)]
