//! Parser and serialiser tests on real-world byte strings and garbage.

use proptest::prelude::*;

use super::*;
use crate::usb::{ConfigBuilder, InterfaceSpec};

/// A SanDisk-style flash drive: device descriptor.
const FLASH_DEVICE: [u8; 18] = [
    0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x81, 0x07, 0x81, 0x55, 0x00, 0x01, 0x01, 0x02,
    0x03, 0x01,
];

/// A USB mouse: config, interface (HID boot mouse), HID descriptor, IN endpoint.
const MOUSE_CONFIG: [u8; 34] = [
    0x09, 0x02, 0x22, 0x00, 0x01, 0x01, 0x00, 0xa0, 0x32, // config
    0x09, 0x04, 0x00, 0x00, 0x01, 0x03, 0x01, 0x02, 0x00, // interface 0
    0x09, 0x21, 0x11, 0x01, 0x00, 0x01, 0x22, 0x34, 0x00, // HID
    0x07, 0x05, 0x81, 0x03, 0x04, 0x00, 0x0a, // endpoint 0x81 interrupt
];

/// The error of a parse that had `got` of the `needed` bytes.
fn truncated<T>(needed: usize, got: usize) -> Result<T, DescriptorError> {
    Err(DescriptorError::Truncated { needed, got })
}

#[test]
fn device_descriptor_round_trip() {
    let d = DeviceDescriptor::parse(&FLASH_DEVICE).unwrap();
    assert_eq!(d.bcd_usb, 0x0200);
    assert_eq!(d.max_packet_size0, 64);
    assert_eq!((d.id_vendor, d.id_product), (0x0781, 0x5581));
    assert_eq!(
        (d.i_manufacturer, d.i_product, d.i_serial_number),
        (1, 2, 3)
    );
    assert_eq!(d.num_configurations, 1);
    assert_eq!(d.to_bytes(), FLASH_DEVICE);
}

#[test]
fn device_descriptor_garbage() {
    assert_eq!(
        DeviceDescriptor::parse(&FLASH_DEVICE[..17]),
        truncated(18, 17)
    );
    let mut d = FLASH_DEVICE;
    d[1] = 2;
    assert_eq!(
        DeviceDescriptor::parse(&d),
        Err(DescriptorError::WrongType {
            expected: 1,
            found: 2
        })
    );
    let mut d = FLASH_DEVICE;
    d[0] = 8;
    assert!(matches!(
        DeviceDescriptor::parse(&d),
        Err(DescriptorError::TooShortForType { .. })
    ));
}

#[test]
fn mouse_config_parses_with_class_descriptor() {
    let c = ConfigDescriptor::parse(&MOUSE_CONFIG).unwrap();
    assert_eq!(ConfigDescriptor::total_length(&MOUSE_CONFIG), Some(34));
    assert_eq!(
        (c.configuration_value, c.attributes, c.max_power),
        (1, 0xa0, 0x32)
    );
    assert_eq!(c.interfaces.len(), 1);
    let alt = &c.interfaces[0].alt_settings[0];
    assert_eq!((alt.class, alt.subclass, alt.protocol), (3, 1, 2));
    assert_eq!(alt.extra, MOUSE_CONFIG[18..27]);
    let ep = &alt.endpoints[0];
    assert_eq!((ep.address, ep.max_packet_size, ep.interval), (0x81, 4, 10));
    assert_eq!(ep.endpoint_type(), EndpointType::Interrupt);
    assert_eq!(ep.direction(), Direction::In);
    assert_eq!(ep.number(), 1);
    assert_eq!(c.to_bytes().unwrap(), MOUSE_CONFIG);
}

#[test]
fn alt_settings_group_by_interface_and_audio_endpoints_keep_their_tail() {
    let bytes = [
        0x09, 0x02, 0x00, 0x00, 0x02, 0x01, 0x00, 0x80, 0x32, // config (total patched below)
        0x08, 0x0b, 0x00, 0x02, 0x01, 0x01, 0x00, 0x00, // IAD -> config extra
        0x09, 0x04, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, // intf 0 alt 0 (control)
        0x09, 0x04, 0x01, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, // intf 1 alt 0
        0x09, 0x04, 0x01, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, // intf 1 alt 1
        0x09, 0x05, 0x01, 0x09, 0xc0, 0x00, 0x01, 0x00, 0x00, // audio iso OUT, 9 bytes
        0x07, 0x25, 0x01, 0x01, 0x00, 0x00, 0x00, // CS endpoint -> ep extra
    ];
    let mut bytes = bytes.to_vec();
    let total = u16::try_from(bytes.len()).unwrap();
    bytes[2..4].copy_from_slice(&total.to_le_bytes());
    let c = ConfigDescriptor::parse(&bytes).unwrap();
    assert_eq!(c.extra.len(), 8);
    assert_eq!(c.interfaces.len(), 2);
    assert_eq!(c.interfaces[1].alt_settings.len(), 2);
    let ep = &c.interfaces[1].alt_settings[1].endpoints[0];
    assert_eq!(ep.endpoint_type(), EndpointType::Isochronous);
    assert_eq!(ep.max_packet_size, 0xc0);
    assert_eq!(ep.tail, vec![0, 0]);
    assert_eq!(ep.extra.len(), 7);
    assert_eq!(c.to_bytes().unwrap(), bytes);
}

#[test]
fn config_garbage_is_an_error_not_a_panic_or_hang() {
    let mut zero_len = MOUSE_CONFIG;
    zero_len[9] = 0; // bLength 0 would loop forever in a naive walker
    assert!(matches!(
        ConfigDescriptor::parse(&zero_len),
        Err(DescriptorError::BadLength {
            offset: 9,
            b_length: 0,
            ..
        })
    ));
    let mut past_end = MOUSE_CONFIG;
    past_end[27] = 8; // endpoint claims one byte more than left
    assert!(matches!(
        ConfigDescriptor::parse(&past_end),
        Err(DescriptorError::BadLength { offset: 27, .. })
    ));
    assert_eq!(
        ConfigDescriptor::parse(&MOUSE_CONFIG[..20]),
        truncated(34, 20)
    );
    let mut short_intf = MOUSE_CONFIG;
    short_intf[9] = 8; // an interface descriptor one byte short
    assert!(matches!(
        ConfigDescriptor::parse(&short_intf),
        Err(DescriptorError::TooShortForType {
            desc_type: 4,
            offset: 9,
            b_length: 8,
            min: 9
        })
    ));
    let ep_first = [
        0x09, 0x02, 0x10, 0x00, 0x01, 0x01, 0x00, 0x80, 0x32, 0x07, 0x05, 0x81, 0x02, 0x40, 0x00,
        0x00,
    ];
    assert_eq!(
        ConfigDescriptor::parse(&ep_first),
        Err(DescriptorError::EndpointOutsideInterface { offset: 9 })
    );
    let mut wrong = MOUSE_CONFIG;
    wrong[1] = 1;
    assert!(matches!(
        ConfigDescriptor::parse(&wrong),
        Err(DescriptorError::WrongType { .. })
    ));
    let mut head_past_total = MOUSE_CONFIG;
    head_past_total[2] = 9;
    head_past_total[0] = 10;
    assert!(ConfigDescriptor::parse(&head_past_total).is_err());
    assert!(ConfigDescriptor::parse(&[]).is_err());
    // Trailing bytes past wTotalLength are ignored.
    let mut longer = MOUSE_CONFIG.to_vec();
    longer.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        ConfigDescriptor::parse(&longer),
        ConfigDescriptor::parse(&MOUSE_CONFIG)
    );
}

#[test]
fn builder_matches_the_real_mouse() {
    let built = ConfigBuilder::new(1)
        .attributes(0x20)
        .max_power(0x32)
        .interface(InterfaceSpec {
            number: 0,
            class: 3,
            subclass: 1,
            protocol: 2,
            ..Default::default()
        })
        .class_descriptor(&MOUSE_CONFIG[18..27])
        .endpoint(EndpointDescriptor::new(
            0x81,
            EndpointType::Interrupt,
            4,
            10,
        ))
        .build()
        .unwrap();
    assert_eq!(built, MOUSE_CONFIG);
}

#[test]
fn builder_errors() {
    let e = ConfigBuilder::new(1)
        .endpoint(EndpointDescriptor::new(0x81, EndpointType::Bulk, 64, 0))
        .build();
    assert!(matches!(
        e,
        Err(DescriptorError::EndpointOutsideInterface { .. })
    ));
    let e = ConfigBuilder::new(1)
        .interface(InterfaceSpec::default())
        .class_descriptor(&[5, 0x24, 0]) // bLength 5 but 3 bytes
        .build();
    assert!(matches!(e, Err(DescriptorError::BadExtra { .. })));
    let e = ConfigBuilder::new(1)
        .interface(InterfaceSpec::default())
        .class_descriptor(&[7, 5, 0x81, 2, 64, 0, 0]) // a disguised endpoint
        .build();
    assert!(matches!(e, Err(DescriptorError::BadExtra { .. })));
    let mut blob = [0x24u8; 255];
    blob[0] = 255;
    let mut b = ConfigBuilder::new(1).interface(InterfaceSpec::default());
    for _ in 0..258 {
        b = b.class_descriptor(&blob); // 258 * 255 + 18 > 65535
    }
    assert!(matches!(b.build(), Err(DescriptorError::TooLarge(_))));
    let mut b = ConfigBuilder::new(1).interface(InterfaceSpec::default());
    for _ in 0..256 {
        b = b.endpoint(EndpointDescriptor::new(0x81, EndpointType::Bulk, 64, 0));
    }
    assert_eq!(b.build(), Err(DescriptorError::TooMany("endpoints")));
}

fn endpoint() -> impl Strategy<Value = EndpointDescriptor> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<u8>(),
        prop::bool::ANY,
    )
        .prop_map(|(a, t, m, i, audio)| {
            let mut e = EndpointDescriptor::new(a, EndpointType::Bulk, m, i);
            e.attributes = t;
            if audio {
                e.tail = vec![0, 0];
                e.extra = vec![7, 0x25, 1, 0, 0, 0, 0];
            }
            e
        })
}

fn spec() -> impl Strategy<Value = InterfaceSpec> {
    (0u8..4, 0u8..3, any::<u8>(), any::<u8>()).prop_map(
        |(number, alternate_setting, class, i_interface)| InterfaceSpec {
            number,
            alternate_setting,
            class,
            subclass: 0,
            protocol: 0,
            i_interface,
        },
    )
}

proptest! {
    #[test]
    fn built_configs_parse_back(
        intfs in proptest::collection::vec((spec(), proptest::collection::vec(endpoint(), 0..4), prop::bool::ANY), 0..6),
        value in any::<u8>(),
    ) {
        let mut b = ConfigBuilder::new(value).class_descriptor(&[8, 0x0b, 0, 1, 3, 0, 0, 0]);
        for (spec, eps, hid) in intfs {
            b = b.interface(spec);
            if hid {
                b = b.class_descriptor(&MOUSE_CONFIG[18..27]);
            }
            for e in eps {
                b = b.endpoint(e);
            }
        }
        let want = b.clone().descriptor().unwrap();
        let bytes = b.build().unwrap();
        prop_assert_eq!(usize::from(ConfigDescriptor::total_length(&bytes).unwrap()), bytes.len());
        prop_assert_eq!(bytes[4] as usize, want.interfaces.len());
        let parsed = ConfigDescriptor::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed, &want);
        prop_assert_eq!(parsed.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn parse_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..400), fix in prop::bool::ANY) {
        if fix && data.len() >= 4 {
            // Make the header plausible so the walker actually runs.
            data[0] = 9;
            data[1] = 2;
            let n = u16::try_from(data.len()).unwrap();
            data[2..4].copy_from_slice(&n.to_le_bytes());
        }
        if let Ok(c) = ConfigDescriptor::parse(&data) {
            // Whatever parsed re-serialises and re-parses to the same thing.
            if let Ok(b) = c.to_bytes() {
                prop_assert_eq!(ConfigDescriptor::parse(&b).unwrap(), c);
            }
        }
        let _ = DeviceDescriptor::parse(&data);
    }
}
