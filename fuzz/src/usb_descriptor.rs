//! Target `usb_descriptor`: the USB descriptor parsers of `pvusb_protocol::usb`
//! (device, configuration with its interfaces, alternate settings, endpoints
//! and class-specific extras, string and language-id descriptors), on bytes a
//! broken or malicious device supplies.
//!
//! Input layout: the whole input is the descriptor bytes; every parser runs on
//! it. Oracles: no panic; a parsed device descriptor serialises back to the
//! bytes it came from (but `bLength`); a parsed configuration serialises (unless
//! it has more than 255 interfaces or endpoints), the result parses to the same
//! value and serialises to the same bytes, and it is no longer than the
//! `wTotalLength` bytes it came from (so every interface, endpoint and extra
//! byte the parser reports lies within them); strings and language ids
//! re-encode to what they decoded from, within the descriptor's `bLength`.

use pvusb_protocol::usb::descriptor::DescriptorError;
use pvusb_protocol::usb::{
    decode_language_ids, decode_string, encode_language_ids, encode_string, ConfigBuilder,
    ConfigDescriptor, DeviceDescriptor, EndpointDescriptor, EndpointType, InterfaceSpec,
};

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    device(data);
    config(data);
    strings(data);
}

fn device(data: &[u8]) {
    let Ok(d) = DeviceDescriptor::parse(data) else {
        return;
    };
    let bytes = d.to_bytes();
    assert_eq!(bytes.get(1..), data.get(1..DeviceDescriptor::LEN));
    assert_eq!(DeviceDescriptor::parse(&bytes), Ok(d));
}

fn config(data: &[u8]) {
    let total = ConfigDescriptor::total_length(data);
    let Ok(cfg) = ConfigDescriptor::parse(data) else {
        return;
    };
    let total = usize::from(total.expect("a parsed configuration has wTotalLength"));
    let head = usize::from(data[0]);
    let bytes = match cfg.to_bytes() {
        Ok(b) => b,
        Err(DescriptorError::TooMany(_)) => {
            let intfs = cfg.interfaces.len();
            let eps = cfg
                .interfaces
                .iter()
                .flat_map(|i| &i.alt_settings)
                .map(|a| a.endpoints.len())
                .max();
            assert!(
                intfs > 255 || eps > Some(255),
                "TooMany with {intfs} interfaces"
            );
            return;
        }
        Err(e) => panic!("a parsed configuration does not serialise: {e}"),
    };
    // The header is rewritten as 9 bytes, interfaces as 9; everything else is
    // copied, so nothing reported can come from outside the input.
    assert!(
        bytes.len() <= total - head + 9,
        "{} bytes serialised from wTotalLength {total}",
        bytes.len()
    );
    let again = ConfigDescriptor::parse(&bytes).expect("a serialised configuration parses");
    assert_eq!(again, cfg, "parse(to_bytes(c)) != c");
    assert_eq!(again.to_bytes().ok().as_ref(), Some(&bytes));
    assert_eq!(
        ConfigDescriptor::total_length(&bytes),
        u16::try_from(bytes.len()).ok()
    );
    for alt in cfg.interfaces.iter().flat_map(|i| &i.alt_settings) {
        for ep in &alt.endpoints {
            assert!(ep.number() <= 15);
            assert!(EndpointDescriptor::LEN + ep.tail.len() <= 255);
        }
    }
}

fn strings(data: &[u8]) {
    let within = |n: usize| n <= data.len() && n <= usize::from(data.first().copied().unwrap_or(0));
    if let Ok(s) = decode_string(data) {
        if !s.contains(char::REPLACEMENT_CHARACTER) {
            let enc = encode_string(&s).expect("a decoded string fits a descriptor");
            assert!(within(enc.len()));
            assert_eq!(enc.get(1..), data.get(1..enc.len()));
            assert_eq!(decode_string(&enc).as_deref(), Ok(s.as_str()));
        }
    }
    if let Ok(ids) = decode_language_ids(data) {
        let enc = encode_language_ids(&ids).expect("decoded ids fit a descriptor");
        assert!(within(enc.len()));
        assert_eq!(enc.get(1..), data.get(1..enc.len()));
    }
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    let flash_device = vec![
        0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x81, 0x07, 0x81, 0x55, 0x00, 0x01, 0x01,
        0x02, 0x03, 0x01,
    ];
    let mouse = vec![
        0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32, // config
        0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x02, 0x00, // interface 0
        0x09, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x34, 0x00, // HID
        0x07, 0x05, 0x81, 0x03, 0x04, 0x00, 0x0a, // endpoint 0x81 interrupt
    ];
    let storage = ConfigBuilder::new(1)
        .attributes(0x80)
        .max_power(50)
        .interface(InterfaceSpec {
            class: 0x08,
            subclass: 0x06,
            protocol: 0x50,
            ..InterfaceSpec::default()
        })
        .endpoint(EndpointDescriptor::new(0x81, EndpointType::Bulk, 512, 0))
        .endpoint(EndpointDescriptor::new(0x02, EndpointType::Bulk, 512, 0))
        .build()
        .unwrap_or_default();
    // Audio-style: an interface association before the interfaces, two
    // alternate settings, a 9-byte iso endpoint followed by a class endpoint.
    let audio = vec![
        0x09, 0x02, 0x3c, 0x00, 0x02, 0x01, 0x00, 0x80, 0x32, // config
        0x08, 0x0b, 0x00, 0x02, 0x01, 0x00, 0x00, 0x00, // IAD
        0x09, 0x04, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, // control intf
        0x09, 0x04, 0x01, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, // stream alt 0
        0x09, 0x04, 0x01, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, // stream alt 1
        0x09, 0x05, 0x01, 0x09, 0xc8, 0x00, 0x01, 0x00, 0x00, // iso OUT, 9 bytes
        0x07, 0x25, 0x01, 0x01, 0x00, 0x00, 0x00, // class endpoint
    ];
    let interleaved = vec![
        0x09, 0x02, 0x2b, 0x00, 0x02, 0x01, 0x00, 0x80, 0x32, // config
        0x09, 0x04, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x00, // intf 0 alt 0
        0x07, 0x05, 0x81, 0x02, 0x40, 0x00, 0x00, // ep
        0x09, 0x04, 0x01, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, // intf 1 alt 0
        0x09, 0x04, 0x00, 0x01, 0x00, 0xff, 0x00, 0x00, 0x00, // intf 0 alt 1
    ];
    vec![
        flash_device,
        mouse,
        storage,
        audio,
        interleaved,
        vec![0x0c, 0x03, b'p', 0, b'v', 0, b'u', 0, b's', 0, b'b', 0],
        vec![0x04, 0x03, 0x09, 0x04],
        vec![0x09, 0x02, 0x09, 0x00, 0x00, 0x01, 0x00, 0x80, 0x32],
    ]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(3000, 300);

    #[test]
    fn seeds_parse() {
        let seeds = super::seeds();
        for s in &seeds[1..5] {
            super::ConfigDescriptor::parse(s).expect("a configuration seed parses");
        }
    }
}
