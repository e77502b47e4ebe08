//! Test harness: an embedded xenstore server, a fake sysfs tree, a toolstack over
//! them, and a peer thread playing the backend daemon and the guest's frontend.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pvusb_toolstack::sysfs::fake::{FakeDevice, FakeSysfs};
use pvusb_toolstack::sysfs::SysfsRoot;
use pvusb_toolstack::{record, Toolstack};
use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsServer, XsServerHandle};

/// The guest used by most tests.
pub const GUEST: u16 = 3;
/// A second guest.
pub const OTHER: u16 = 4;

pub type Ts = Toolstack<XsClient, SysfsRoot>;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub server: XsServerHandle,
    pub fake: FakeSysfs,
    pub ts: Ts,
}

impl Harness {
    /// Server, domains 0, 3 ("guest3") and 4 ("guest4"), and a host with a
    /// two-interface device 1-2 (1.6), a single-interface device 1-3 (1.7), a hub
    /// 1-1 (1.2) and a driverless device 2-1 (2.3).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("xs.sock");
        let server = XsServer::start_with(&sock, ServerConfig::simulation()).unwrap();
        let root = dir.path().join("sys");
        std::fs::create_dir_all(&root).unwrap();
        let fake = FakeSysfs::create(&root).unwrap();
        fake.add_device(&FakeDevice::new(
            "1-2",
            1,
            6,
            &[Some("usb-storage"), Some("usbhid")],
        ))
        .unwrap();
        fake.add_device(&FakeDevice::new("1-3", 1, 7, &[Some("btusb")]))
            .unwrap();
        fake.add_device(&FakeDevice::hub("1-1", 1, 2)).unwrap();
        fake.add_device(&FakeDevice::new("2-1", 2, 3, &[None]))
            .unwrap();
        let xs = XsClient::connect(&sock).unwrap();
        for (d, name) in [(0u16, "Domain-0"), (GUEST, "guest3"), (OTHER, "guest4")] {
            xs.write(Tx::NONE, &format!("/local/domain/{d}"), "")
                .unwrap();
            xs.write(Tx::NONE, &format!("/local/domain/{d}/name"), name)
                .unwrap();
        }
        let ts = Toolstack {
            store: xs,
            sysfs: fake.sysfs(),
            backend_domid: 0,
            timeout: Duration::from_secs(5),
        };
        Harness {
            dir,
            server,
            fake,
            ts,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("xs.sock")
    }

    pub fn sys_root(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    pub fn client(&self) -> XsClient {
        XsClient::connect(&self.sock()).unwrap()
    }

    pub fn read(&self, path: &str) -> Option<String> {
        self.ts.store.read(Tx::NONE, path).unwrap()
    }

    pub fn drivers(&self, busid: &str) -> Vec<Option<String>> {
        use pvusb_toolstack::Sysfs;
        self.ts
            .sysfs
            .device(busid)
            .unwrap()
            .interfaces
            .into_iter()
            .map(|i| i.driver)
            .collect()
    }

    /// Start a peer that connects every new controller and closes closing ones.
    pub fn peer(&self) -> Peer {
        Peer::start(&self.sock(), 0)
    }

    /// Destroy a guest the way the toolstack does: its domain dir disappears.
    pub fn destroy_domain(&self, domid: u16) {
        self.ts
            .store
            .rm(Tx::NONE, &format!("/local/domain/{domid}"))
            .unwrap();
    }

    /// Assert the crash-only invariants: every port names a device whose record
    /// says assigned there; every record is a finished assignment in an existing
    /// port; assigned devices have no host driver; devices without a record have
    /// their original drivers; every controller has both nodes.
    pub fn assert_consistent(&self) {
        let st = &self.ts.store;
        let ports = self.ts.assignments().unwrap();
        for (busid, place) in &ports {
            let rec = record::read(st, Tx::NONE, busid)
                .unwrap()
                .unwrap_or_else(|| panic!("{busid} in a port without record"));
            assert_eq!(rec.stage, Some(record::Stage::Assigned), "{busid}: {rec:?}");
            assert_eq!(
                (rec.domid, rec.ctrl, rec.port),
                (Some(place.domid), Some(place.ctrl), Some(place.port))
            );
            assert!(
                self.drivers(busid).iter().all(Option::is_none),
                "{busid} assigned but bound"
            );
        }
        for busid in record::busids(st, Tx::NONE).unwrap() {
            assert!(
                ports.iter().any(|(b, _)| *b == busid),
                "record of {busid} points at no port"
            );
        }
        for (busid, orig) in [
            ("1-2", vec![Some("usb-storage"), Some("usbhid")]),
            ("1-3", vec![Some("btusb")]),
        ] {
            if !ports.iter().any(|(b, _)| b == busid) {
                let want: Vec<Option<String>> =
                    orig.into_iter().map(|d| d.map(str::to_owned)).collect();
                assert_eq!(self.drivers(busid), want, "{busid} not back on its drivers");
            }
        }
        for dom in [GUEST, OTHER] {
            let be = st
                .directory(Tx::NONE, &format!("/local/domain/0/backend/vusb/{dom}"))
                .unwrap();
            let fe = st
                .directory(Tx::NONE, &format!("/local/domain/{dom}/device/vusb"))
                .unwrap();
            let mut be_sorted = be.clone();
            be_sorted.sort();
            let mut fe_sorted = fe.clone();
            fe_sorted.sort();
            if self.read(&format!("/local/domain/{dom}")).is_some() {
                assert_eq!(be_sorted, fe_sorted, "controllers of {dom} half-present");
            }
            self.assert_libxl_matches(dom, &be_sorted);
        }
    }

    /// libxl's entries (`/libxl/<dom>/device/vusb/<devid>`) exist exactly for the
    /// controllers in our backend dir (`be`), each with libxl 4.17's layout
    /// (`libxl__device_generic_add`): the two paths, the backend's entries copied
    /// as written at creation, nothing else.
    pub fn assert_libxl_matches(&self, dom: u16, be: &[String]) {
        let st = &self.ts.store;
        let base = format!("/libxl/{dom}/device/vusb");
        let mut lx = st.directory(Tx::NONE, &base).unwrap();
        lx.sort();
        assert_eq!(
            lx, be,
            "libxl's entries of {dom} differ from our controllers"
        );
        for devid in be {
            let lp = format!("{base}/{devid}");
            let bp = format!("/local/domain/0/backend/vusb/{dom}/{devid}");
            let ports: u32 = self
                .read(&format!("{bp}/num-ports"))
                .unwrap()
                .parse()
                .unwrap();
            let mut want = vec![
                (
                    "frontend".to_owned(),
                    format!("/local/domain/{dom}/device/vusb/{devid}"),
                ),
                ("backend".to_owned(), bp.clone()),
                ("frontend-id".to_owned(), dom.to_string()),
                ("online".to_owned(), "1".to_owned()),
                ("state".to_owned(), "1".to_owned()),
                ("type".to_owned(), "pv".to_owned()),
                (
                    "usb-ver".to_owned(),
                    self.read(&format!("{bp}/usb-ver")).unwrap(),
                ),
                ("num-ports".to_owned(), ports.to_string()),
                ("port".to_owned(), String::new()),
            ];
            for (k, v) in &want {
                assert_eq!(
                    self.read(&format!("{lp}/{k}")).as_ref(),
                    Some(v),
                    "{lp}/{k}"
                );
            }
            let mut keys = st.directory(Tx::NONE, &lp).unwrap();
            keys.sort();
            let mut want_keys: Vec<String> = want.drain(..).map(|(k, _)| k).collect();
            want_keys.sort();
            assert_eq!(keys, want_keys, "{lp} holds other nodes");
            let mut pk = st.directory(Tx::NONE, &format!("{lp}/port")).unwrap();
            pk.sort_by_key(|p| p.parse::<u32>().unwrap_or(u32::MAX));
            let want_ports: Vec<String> = (1..=ports).map(|p| p.to_string()).collect();
            assert_eq!(pk, want_ports, "{lp}/port");
            for p in want_ports {
                assert_eq!(self.read(&format!("{lp}/port/{p}")).as_deref(), Some(""));
            }
        }
    }
}

/// Plays the backend daemon (InitWait→Connected, Closing→Closed) and each guest's
/// frontend (Connected, Closed), through real xenstore connections with the
/// guests' own domids.
pub struct Peer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    pub fn start(sock: &Path, backdom: u16) -> Peer {
        let stop = Arc::new(AtomicBool::new(false));
        let sock = sock.to_owned();
        let s2 = stop.clone();
        let back = XsClient::connect(&sock).unwrap();
        let base = format!("/local/domain/{backdom}/backend/vusb");
        let watch = back.watch(&base).unwrap();
        let thread = std::thread::spawn(move || {
            let mut guests: HashMap<u16, XsClient> = HashMap::new();
            while !s2.load(Ordering::SeqCst) {
                let _ = watch.receiver().recv_timeout(Duration::from_millis(20));
                for g in back.directory(Tx::NONE, &base).unwrap_or_default() {
                    let Ok(domid) = g.parse::<u16>() else {
                        continue;
                    };
                    for d in back
                        .directory(Tx::NONE, &format!("{base}/{g}"))
                        .unwrap_or_default()
                    {
                        let be = format!("{base}/{g}/{d}");
                        let fe = format!("/local/domain/{domid}/device/vusb/{d}/state");
                        let guest = guests
                            .entry(domid)
                            .or_insert_with(|| XsClient::connect_as(&sock, domid).unwrap());
                        // Read and answer the backend state in one transaction, so a
                        // toolstack write in between (e.g. ctrl-detach's Closing right
                        // after a crashed ctrl-attach) makes the answer retry instead of
                        // overwriting it with a stale Connected.
                        let answer = back.transaction(|tx| {
                            let state = back.read(tx, &format!("{be}/state"))?;
                            let next = match state.as_deref() {
                                Some("1") => "4",
                                Some("5") => "6",
                                _ => return Ok(None),
                            };
                            back.write(tx, &format!("{be}/state"), next)?;
                            Ok(Some(next))
                        });
                        if let Ok(Some(next)) = answer {
                            let _ = guest.write(Tx::NONE, &fe, next);
                        }
                    }
                }
            }
        });
        Peer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
