//! `pvusb demo`: the whole stack on one machine without Xen or USB.
//!
//! Separate processes, as on a real host: the embedded xenstore, the backend
//! daemon (domain 0) and the guest (domain 1, a frontend over the simulated
//! transport), plus one process per toolstack command. The demo plays the user
//! and the toolstack: it creates the guest domain in xenstore, runs `ctrl-attach`
//! and `dev-attach`, asks the guest to use each device, checks every result,
//! and shuts everything down — `dev-detach`, `ctrl-detach`, SIGTERM to every
//! process — proving at the end that nothing is left over.
//!
//! Every step has a timeout; a failure names the step, shows the last lines the
//! child involved printed, cleans up and exits non-zero. Ctrl-C cleans up too.
//!
//! | module | concern |
//! |---|---|
//! | [`script`] | the steps, in order, and what they check |
//! | [`stack`] | temp dir layout, xenstore domain nodes, fake sysfs, leftovers |
//! | [`children`] | child processes: output tails, timeouts, SIGTERM and reaping |
//! | [`link`], [`wire`] | the line protocol between the demo and its guest |
//! | [`guest`], [`hid`] | the guest process (`--role guest`) |
//! | [`report`] | how results are printed |

pub mod children;
pub mod guest;
pub mod hid;
pub mod link;
pub mod report;
pub mod script;
pub mod stack;
pub mod wire;
