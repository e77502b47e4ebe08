//! usbif wire types, constants, validation and xenstore layout (pure, no I/O)
#![forbid(unsafe_code)]
