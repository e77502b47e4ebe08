//! Target `xenstore_msg`: the xenstore wire parser (`pvusb_xenstore::wire`) on a
//! hostile byte stream, as the embedded server and the client read it.
//!
//! The input is a stream of messages. Oracles: no panic; a parsed message never
//! claims more than `HEADER_LEN + PAYLOAD_MAX` bytes or more than the input holds;
//! the framing reader and the buffer parser agree; every parsed message
//! re-serializes to exactly the bytes it came from; a permission entry that
//! parses formats to one that parses to the same value (the spelling may differ:
//! `"r02222"` is accepted, as xenstored accepts it, and formats as `"r2222"`).

use pvusb_xenstore::wire::{read_message, Message, MsgType, RawHeader, HEADER_LEN, PAYLOAD_MAX};
use pvusb_xenstore::Perm;

/// Messages examined per input, so every run is short.
const MAX_MESSAGES: usize = 64;

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let mut rest = data;
    let mut stream = data;
    for _ in 0..MAX_MESSAGES {
        let parsed = Message::parse(rest);
        let read = read_message(&mut stream);
        let Ok((msg, used)) = parsed else { break };
        assert!(used <= rest.len() && used <= HEADER_LEN + PAYLOAD_MAX);
        assert_eq!(
            read.ok().as_ref(),
            Some(&msg),
            "framing reader and parser disagree"
        );
        assert_eq!(msg.serialize(), rest.get(..used).unwrap_or_default());
        exercise_arguments(&msg);
        rest = rest.get(used..).unwrap_or_default();
    }
}

/// Every argument decoder a request handler or the client may apply.
fn exercise_arguments(msg: &Message) {
    let _ = msg.is_empty_arg();
    let _ = msg.one_arg();
    let _ = msg.path_and_value();
    for n in 0..4 {
        if let Ok(args) = msg.args(n) {
            assert_eq!(args.len(), n);
        }
    }
    if let Ok(list) = msg.list() {
        for s in list.iter().take(PAYLOAD_MAX) {
            if let Ok(p) = Perm::parse(s) {
                let wire = p.to_wire();
                assert_eq!(
                    Perm::parse(&wire).ok(),
                    Some(p),
                    "{s:?} formats as {wire:?}"
                );
                assert!(wire.len() <= s.len(), "{s:?} formats longer, as {wire:?}");
            }
            let _ = pvusb_xenstore::wire::parse_number::<u32>(s);
        }
    }
}

fn frame(ty: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = RawHeader {
        msg_type: ty,
        req_id,
        tx_id: 0,
        len,
    }
    .encode()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    let t = |m: MsgType| m as u32;
    vec![
        frame(t(MsgType::Read), 1, b"/local/domain/0/backend/vusb\0"),
        frame(
            t(MsgType::Write),
            2,
            b"/local/domain/5/device/vusb/0/state\x004",
        ),
        [
            frame(t(MsgType::Watch), 3, b"backend/vusb\0tok\0"),
            frame(t(MsgType::WatchEvent), 0, b"/a\0tok\0"),
        ]
        .concat(),
        frame(t(MsgType::SetPerms), 4, b"/a\0n0\0r5\0b65535\0"),
        frame(t(MsgType::Directory), 5, b"a\0b\0c\0"),
        frame(t(MsgType::TransactionStart), 6, b""),
        frame(t(MsgType::Introduce), 7, b"5\x001234\x007\0"),
        frame(t(MsgType::Error), 8, b"EAGAIN\0"),
        frame(99, 9, b"unknown type"),
        RawHeader {
            msg_type: 2,
            req_id: 10,
            tx_id: 0,
            len: 4097,
        }
        .encode()
        .to_vec(),
        frame(t(MsgType::Read), 11, &[0xff; 40]),
        frame(t(MsgType::SetPerms), 12, b"/a\0r02222\0n007\0"),
    ]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(1500, 600);

    /// The input that failed the byte-wise oracle in its first second of
    /// coverage-guided fuzzing: permission `"n06"` formats as `"n6"`.
    #[test]
    fn leading_zero_permission_round_trips_by_value() {
        super::run(&super::frame(
            pvusb_xenstore::wire::MsgType::SetPerms as u32,
            1,
            b"/a\0n06\0r02222\0",
        ));
    }
}
