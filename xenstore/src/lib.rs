//! XenStore wire-protocol client and an embedded xenstore server
#![forbid(unsafe_code)]
