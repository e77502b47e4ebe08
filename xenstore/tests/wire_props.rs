//! Property tests of the wire parser: arbitrary bytes never panic, and valid
//! messages round-trip.

use proptest::prelude::*;
use pvusb_xenstore::wire::{read_message, Message, MsgType, WireError, HEADER_LEN, PAYLOAD_MAX};
use pvusb_xenstore::Perm;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        if let Ok((msg, used)) = Message::parse(&bytes) {
            prop_assert!(used <= bytes.len() && msg.payload().len() <= PAYLOAD_MAX);
            prop_assert_eq!(used, HEADER_LEN + msg.payload().len());
            let _ = msg.list();
            let _ = msg.args(2);
            let _ = msg.path_and_value();
            for s in msg.list().unwrap_or_default() {
                let _ = Perm::parse(s);
            }
        }
        let _ = read_message(&mut &bytes[..]);
    }

    #[test]
    fn arbitrary_headers_with_short_bodies(ty in 0u32..40, len in any::<u32>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = pvusb_xenstore::wire::RawHeader { msg_type: ty, req_id: 1, tx_id: 0, len }.encode().to_vec();
        bytes.extend(&body);
        match Message::parse(&bytes) {
            Ok((m, _)) => prop_assert_eq!(m.payload().len() as u32, len),
            Err(WireError::TooLong(l)) => prop_assert!(l as usize > PAYLOAD_MAX),
            Err(WireError::Incomplete { .. }) | Err(WireError::UnknownType(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn valid_messages_round_trip(ty in 0u32..23, req in any::<u32>(), tx in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..PAYLOAD_MAX)) {
        let ty = MsgType::try_from(ty).unwrap();
        let m = Message::new(ty, req, tx, payload).unwrap();
        let bytes = m.serialize();
        prop_assert_eq!(Message::parse(&bytes).unwrap(), (m.clone(), bytes.len()));
        prop_assert_eq!(read_message(&mut &bytes[..]).unwrap(), m);
    }
}

#[test]
fn payload_over_the_maximum_is_refused_on_construction() {
    assert_eq!(
        Message::new(MsgType::Write, 1, 0, vec![0; PAYLOAD_MAX + 1]),
        Err(WireError::TooLong(4097))
    );
}
