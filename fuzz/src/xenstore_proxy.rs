//! Target `xenstore_proxy`: the filtering xenstore proxy's verdict
//! (`pvusb_xenstore::proxy`) on requests a compromised backend worker could
//! send.
//!
//! The input is a stream of messages. Oracles: no panic; a forwarded request
//! is of a type a worker may send, and the path it names is one the scope
//! grants for the access its type needs (read for READ, DIRECTORY, GET_PERMS
//! and WATCH; write for WRITE, MKDIR and RM), spelled canonically.

use pvusb_xenstore::proxy::{would_forward, Access, PrefixScope, Scope};
use pvusb_xenstore::wire::{Message, MsgType};

/// Messages examined per input, so every run is short.
const MAX_MESSAGES: usize = 64;

/// The scope a backend worker of controller 0 of guest 3 gets.
fn scope() -> PrefixScope {
    PrefixScope::new()
        .read("/local/domain/0/backend/vusb/3/0")
        .read("/local/domain/3/device/vusb/0")
        .read("/local/domain/3/name")
        .read("/pvusb/usbback")
        .write_leaf("/pvusb/usbback", "opened")
        .write("/local/domain/0/backend/vusb/3/0/state")
        .write("/local/domain/0/backend/vusb/3/0/pvusb-addresses")
}

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let scope = scope();
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let Ok((msg, used)) = Message::parse(rest) else {
            break;
        };
        if would_forward(&msg, &scope) {
            check_forwarded(&msg, &scope);
        }
        rest = rest.get(used..).unwrap_or_default();
    }
}

fn check_forwarded(msg: &Message, scope: &PrefixScope) {
    let path = match msg.msg_type {
        MsgType::Read | MsgType::Directory | MsgType::GetPerms | MsgType::Mkdir | MsgType::Rm => {
            msg.one_arg().ok().map(str::to_owned)
        }
        MsgType::Write => msg.path_and_value().ok().map(|(p, _)| p.to_owned()),
        MsgType::Watch => msg.args(2).ok().and_then(|a| a.first().map(|p| (*p).to_owned())),
        MsgType::Unwatch | MsgType::TransactionStart | MsgType::TransactionEnd => return,
        other => panic!("a {other:?} request was forwarded"),
    };
    let path = path.unwrap_or_else(|| panic!("forwarded {:?} without its path", msg.msg_type));
    let access = match msg.msg_type {
        MsgType::Write | MsgType::Mkdir | MsgType::Rm => Access::Write,
        _ => Access::Read,
    };
    assert!(path.starts_with('/'), "forwarded a relative or special path {path:?}");
    assert!(!path.contains("//") && !path.ends_with('/'), "forwarded {path:?}");
    assert!(scope.allows(&path, access), "forwarded {access:?} of {path:?}");
}

fn request(ty: MsgType, payload: &[u8]) -> Vec<u8> {
    Message::new(ty, 7, 0, payload.to_vec())
        .map(|m| m.serialize())
        .unwrap_or_default()
}

/// Allowed and refused requests of every kind the filter decides on.
pub fn seeds() -> Vec<Vec<u8>> {
    let be = "/local/domain/0/backend/vusb/3/0";
    vec![
        request(MsgType::Read, format!("{be}/num-ports\0").as_bytes()),
        request(MsgType::Write, format!("{be}/state\04").as_bytes()),
        request(MsgType::Write, format!("{be}/port/1\01-2").as_bytes()),
        request(MsgType::Write, b"/pvusb/usbback/1-2/opened\x00123"),
        request(MsgType::Write, b"/pvusb/usbback/1-2/state\0assigned"),
        request(MsgType::Rm, b"/pvusb/usbback/1-2/opened\0"),
        request(MsgType::Watch, b"/local/domain/3/device/vusb/0\0tok\0"),
        request(MsgType::Watch, b"@releaseDomain\0tok\0"),
        request(MsgType::Read, b"local/domain/3/name\0"),
        request(MsgType::Read, b"/local/domain/3//name\0"),
        request(MsgType::Directory, b"/local/domain/0/backend/vusb/3/0x\0"),
        request(MsgType::SetPerms, format!("{be}/state\0b0\0").as_bytes()),
        request(MsgType::TransactionStart, b"\0"),
        request(MsgType::TransactionEnd, b"T\0"),
    ]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(2000, 256);
}
