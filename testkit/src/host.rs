//! The host the toolstack's tests run on, and the invariants they check.
//!
//! A host with real-looking USB devices in the fake sysfs and no emulated
//! ones (the toolstack never talks to a device): a two-interface device 1-2
//! (1.6: usb-storage, usbhid), a one-interface device 1-3 (1.7: btusb), a
//! hub 1-1 (1.2) and a driverless device 2-1 (2.3); guests [`GUEST`] and
//! [`OTHER`].

use pvusb_toolstack::record;
use pvusb_toolstack::sysfs::fake::FakeDevice;
use pvusb_xenstore::Tx;

use crate::peer::Peer;
use crate::toolstack::Ts;
use crate::world::World;

/// The guest most tests use.
pub const GUEST: u16 = 3;
/// A second guest.
pub const OTHER: u16 = 4;

/// The devices not assigned anywhere go back to these drivers.
const ORIGINAL_DRIVERS: [(&str, &[&str]); 2] =
    [("1-2", &["usb-storage", "usbhid"]), ("1-3", &["btusb"])];

/// The host, its guests named `guest3` and `guest4`.
pub fn new() -> World {
    World::builder()
        .guest(GUEST)
        .guest(OTHER)
        .host_device(FakeDevice::new(
            "1-2",
            1,
            6,
            &[Some("usb-storage"), Some("usbhid")],
        ))
        .host_device(FakeDevice::new("1-3", 1, 7, &[Some("btusb")]))
        .host_device(FakeDevice::hub("1-1", 1, 2))
        .host_device(FakeDevice::new("2-1", 2, 3, &[None]))
        .build()
}

/// The host, its toolstack and a [`Peer`] answering for the daemon and the
/// guests: where most toolstack tests start.
pub fn with_peer() -> (World, Ts, Peer) {
    let host = new();
    let ts = host.toolstack();
    let peer = Peer::start(&host);
    (host, ts, peer)
}

/// The crash-only invariants: every port names a device whose record says
/// assigned there; every record is a finished assignment in an existing
/// port; assigned devices have no host driver; devices without a record
/// have their original drivers; every controller of a live guest has both
/// nodes, and libxl's entries match them (`assert_libxl_matches`).
pub fn assert_consistent(w: &World) {
    let ts = w.toolstack();
    let st = &ts.store;
    let ports = ts.assignments().expect("the assignments");
    for (busid, place) in &ports {
        let rec = record::read(st, Tx::NONE, busid)
            .expect("a record")
            .unwrap_or_else(|| panic!("{busid} in a port without record"));
        assert_eq!(rec.stage, Some(record::Stage::Assigned), "{busid}: {rec:?}");
        assert_eq!(
            (rec.domid, rec.ctrl, rec.port),
            (Some(place.domid), Some(place.ctrl), Some(place.port))
        );
        assert!(
            w.drivers(busid).iter().all(Option::is_none),
            "{busid} assigned but bound"
        );
    }
    for busid in record::busids(st, Tx::NONE).expect("the records") {
        assert!(
            ports.iter().any(|(b, _)| *b == busid),
            "record of {busid} points at no port"
        );
    }
    for (busid, orig) in ORIGINAL_DRIVERS {
        if !ports.iter().any(|(b, _)| b == busid) {
            let want: Vec<Option<String>> = orig.iter().map(|d| Some((*d).to_owned())).collect();
            assert_eq!(w.drivers(busid), want, "{busid} not back on its drivers");
        }
    }
    for dom in [GUEST, OTHER] {
        let mut be = directory(w, &format!("/local/domain/0/backend/vusb/{dom}"));
        let mut fe = directory(w, &format!("/local/domain/{dom}/device/vusb"));
        be.sort();
        fe.sort();
        if w.exists(&format!("/local/domain/{dom}")) {
            assert_eq!(be, fe, "controllers of {dom} half-present");
        }
        assert_libxl_matches(w, dom, &be);
    }
}

/// libxl's entries (`/libxl/<dom>/device/vusb/<devid>`) exist exactly for
/// the controllers in `be` (the backend directory's), each in libxl 4.17's
/// layout (`libxl__device_generic_add`): the two paths, the backend's
/// entries as written at creation, nothing else.
fn assert_libxl_matches(w: &World, dom: u16, be: &[String]) {
    let base = format!("/libxl/{dom}/device/vusb");
    let mut lx = directory(w, &base);
    lx.sort();
    assert_eq!(
        lx, be,
        "libxl's entries of {dom} differ from our controllers"
    );
    for devid in be {
        let lp = format!("{base}/{devid}");
        let bp = format!("/local/domain/0/backend/vusb/{dom}/{devid}");
        let ports: u32 = w
            .read(&format!("{bp}/num-ports"))
            .expect("num-ports")
            .parse()
            .expect("a number of ports");
        let want = [
            (
                "frontend",
                format!("/local/domain/{dom}/device/vusb/{devid}"),
            ),
            ("backend", bp.clone()),
            ("frontend-id", dom.to_string()),
            ("online", "1".to_owned()),
            ("state", "1".to_owned()),
            ("type", "pv".to_owned()),
            (
                "usb-ver",
                w.read(&format!("{bp}/usb-ver")).expect("usb-ver"),
            ),
            ("num-ports", ports.to_string()),
            ("port", String::new()),
        ];
        for (k, v) in &want {
            assert_eq!(w.read(&format!("{lp}/{k}")).as_ref(), Some(v), "{lp}/{k}");
        }
        let mut keys = directory(w, &lp);
        keys.sort();
        let mut want_keys: Vec<String> = want.iter().map(|(k, _)| (*k).to_owned()).collect();
        want_keys.sort();
        assert_eq!(keys, want_keys, "{lp} holds other nodes");
        let mut pk = directory(w, &format!("{lp}/port"));
        pk.sort_by_key(|p| p.parse::<u32>().unwrap_or(u32::MAX));
        let want_ports: Vec<String> = (1..=ports).map(|p| p.to_string()).collect();
        assert_eq!(pk, want_ports, "{lp}/port");
        for p in want_ports {
            assert_eq!(w.read(&format!("{lp}/port/{p}")).as_deref(), Some(""));
        }
    }
}

fn directory(w: &World, path: &str) -> Vec<String> {
    w.xs()
        .directory(Tx::NONE, path)
        .expect("xenstore directory")
}
