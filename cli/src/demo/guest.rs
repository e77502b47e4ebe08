//! The guest side of the demo (`pvusb demo --role guest`, a separate process
//! declared to xenstore as domain 1): a pvUSB frontend over the simulated
//! transport that carries out the demo's requests (see [`super::wire`]) with
//! the `pvusb-frontend` library, exactly as an application in a guest would.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvusb_frontend::{Device, Frontend, FrontendError, MassStorage, Options};
use pvusb_protocol::usb::EndpointType;
use pvusb_protocol::{Direction, SetupPacket, Speed, UsbVer};
use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xen::sim::SimXen;
use pvusb_xenstore::{Tx, XsClient};
use sha2::{Digest, Sha256};

use super::hid::BootDecoder;
use super::wire::{DeviceSummary, KeyboardReport, LoopbackReport, Reply, Request, StorageReport};

/// Timeout of one transfer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Loopback vendor requests (see `pvusb_backend::usb::emulated::loopback`).
const VENDOR_SET_MODE: u8 = 0x01;
const VENDOR_GET_COUNTERS: u8 = 0x02;

/// The guest's state between requests.
struct Guest {
    xs: Arc<XsClient>,
    sim_dir: std::path::PathBuf,
    domid: u16,
    /// Shared with the signal thread, which closes it on SIGTERM.
    front: Arc<Mutex<Option<Arc<Frontend>>>>,
    devid: u32,
    devices: Vec<Device>,
    /// How long a request may wait for something to happen.
    timeout: Duration,
}

/// Serves requests from stdin until it closes; SIGTERM/SIGINT close the
/// controller (if still open) and exit 0.
pub fn run(xs_path: &Path, sim_dir: &Path, domid: u16, timeout: Duration) -> Result<(), String> {
    let xs = XsClient::connect_as(xs_path, domid).map_err(|e| {
        format!(
            "guest: cannot connect to xenstore as domain {domid}: {e}",
            e = Chain(&e)
        )
    })?;
    let front: Arc<Mutex<Option<Arc<Frontend>>>> = Arc::default();
    watch_signals(Arc::clone(&front))?;
    let mut guest = Guest {
        xs: Arc::new(xs),
        sim_dir: sim_dir.to_owned(),
        domid,
        front,
        devid: 0,
        devices: Vec::new(),
        timeout,
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("guest: reading requests: {e}", e = Chain(&e)))?;
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                tracing::info!(?req, "request");
                guest
                    .handle(req)
                    .unwrap_or_else(|message| Reply::Error { message })
            }
            Err(e) => Reply::Error {
                message: format!("unreadable request: {e}", e = Chain(&e)),
            },
        };
        let text = serde_json::to_string(&reply)
            .map_err(|e| format!("guest: encoding: {e}", e = Chain(&e)))?;
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("guest: writing replies: {e}", e = Chain(&e)))?;
    }
    guest.close_front();
    Ok(())
}

fn watch_signals(front: Arc<Mutex<Option<Arc<Frontend>>>>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("guest: cannot handle signals: {e}", e = Chain(&e)))?;
    std::thread::Builder::new()
        .name("demo-guest-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(sig, "guest stopping");
                let open = lock_unpoisoned(&front).take();
                if let Some(f) = open {
                    if let Err(e) = f.close() {
                        tracing::warn!("closing the controller: {e}", e = Chain(&e));
                    }
                }
                std::process::exit(0);
            }
        })
        .map(drop)
        .map_err(|e| format!("guest: cannot start the signal thread: {e}", e = Chain(&e)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn speed_text(s: Speed) -> &'static str {
    match s {
        Speed::None => "-",
        Speed::Low => "1.5",
        Speed::Full => "12",
        Speed::High => "480",
    }
}

fn err(e: FrontendError) -> String {
    e.to_string()
}

impl Guest {
    fn front(&self) -> Result<Arc<Frontend>, String> {
        lock_unpoisoned(&self.front)
            .clone()
            .ok_or_else(|| "the guest has no controller connected".to_owned())
    }

    fn device(&self, port: u8) -> Result<&Device, String> {
        self.devices
            .iter()
            .find(|d| d.port == port)
            .ok_or_else(|| format!("no enumerated device on port {port}"))
    }

    fn frontend_dir(&self) -> String {
        format!("/local/domain/{}/device/vusb/{}", self.domid, self.devid)
    }

    /// Polls xenstore until `f` holds for the frontend directory's existence.
    fn wait_dir(&self, exists: bool) -> Result<(), String> {
        let dir = self.frontend_dir();
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = self
                .xs
                .exists(Tx::NONE, &dir)
                .map_err(|e| Chain(&e).to_string())?;
            if now == exists {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let what = if exists { "created" } else { "removed" };
                return Err(format!("{dir} was not {what} within {:?}", self.timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn handle(&mut self, req: Request) -> Result<Reply, String> {
        match req {
            Request::Connect { devid } => self.connect(devid),
            Request::Enumerate { ports } => self.enumerate(&ports),
            Request::Storage { port, bytes } => self.storage(port, bytes).map(Reply::Storage),
            Request::Keyboard { port, chars } => self.keyboard(port, chars).map(Reply::Keyboard),
            Request::Loopback { port, bytes } => self.loopback(port, bytes).map(Reply::Loopback),
            Request::WaitGone { ports } => {
                let front = self.front()?;
                for p in ports {
                    front.wait_for_disconnect(p, self.timeout).map_err(err)?;
                }
                self.devices.clear();
                Ok(Reply::Gone)
            }
            Request::Close => {
                self.wait_dir(false)?;
                Ok(Reply::Closed {
                    clean: self.close_front(),
                })
            }
        }
    }

    /// Like xen-hcd's probe: as soon as the toolstack wrote our directory.
    fn connect(&mut self, devid: u32) -> Result<Reply, String> {
        self.devid = devid;
        self.wait_dir(true)?;
        let transport = Arc::new(SimXen::new(&self.sim_dir, self.domid));
        let options = Options {
            handshake_timeout: self.timeout,
            ..Options::default()
        };
        let front = Frontend::connect(Arc::clone(&self.xs), transport, self.domid, devid, options)
            .map_err(err)?;
        let reply = Reply::Connected {
            num_ports: front.num_ports(),
            usb_ver: match front.config().usb_ver {
                UsbVer::Usb11 => "1.1".into(),
                UsbVer::Usb20 => "2.0".into(),
            },
        };
        *lock_unpoisoned(&self.front) = Some(Arc::new(front));
        Ok(reply)
    }

    fn enumerate(&mut self, ports: &[u8]) -> Result<Reply, String> {
        let front = self.front()?;
        let mut devices = Vec::new();
        for &port in ports {
            front
                .wait_for_device(port, self.timeout)
                .map_err(|e| format!("port {port}: {e}", e = Chain(&e)))?;
            let d = front
                .enumerate(port)
                .map_err(|e| format!("port {port}: {e}", e = Chain(&e)))?;
            devices.push(summary(&d));
            self.devices.retain(|old| old.port != port);
            self.devices.push(d);
        }
        Ok(Reply::Devices { devices })
    }

    fn storage(&mut self, port: u8, bytes: usize) -> Result<StorageReport, String> {
        let front = self.front()?;
        let dev = self.device(port)?.clone();
        let mut ms = MassStorage::open(&front, &dev).map_err(err)?;
        let inq = ms.inquiry().map_err(err)?;
        let bs = usize::try_from(ms.block_size).map_err(|_| "block size too large".to_owned())?;
        if bs == 0 {
            return Err("the device reports a zero block size".into());
        }
        let medium = usize::try_from(ms.blocks)
            .unwrap_or(usize::MAX)
            .saturating_mul(bs);
        let len = bytes.min(medium) / bs * bs;
        let data = random_bytes(len)?;
        let t = Instant::now();
        // The library splits long ranges into READ(10)/WRITE(10) commands itself.
        ms.write_blocks(0, &data).map_err(err)?;
        let write_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let count = u32::try_from(len / bs).map_err(|_| "block count overflow".to_owned())?;
        let back = ms.read_blocks(0, count).map_err(err)?;
        let read_secs = t.elapsed().as_secs_f64();
        Ok(StorageReport {
            inquiry: format!("{} {}", inq.vendor, inq.product),
            blocks: ms.blocks,
            block_size: ms.block_size,
            bytes: len,
            written_sha256: sha256(&data),
            read_sha256: sha256(&back),
            write_secs,
            read_secs,
        })
    }

    fn keyboard(&mut self, port: u8, chars: usize) -> Result<KeyboardReport, String> {
        let front = self.front()?;
        let dev = self.device(port)?;
        let ep = dev
            .endpoints()
            .into_iter()
            .find(|e| {
                e.endpoint_type() == EndpointType::Interrupt && e.direction() == Direction::In
            })
            .ok_or("the keyboard has no interrupt IN endpoint")?;
        let mut decoder = BootDecoder::default();
        let (mut text, mut reports, mut sample) = (String::new(), 0usize, Vec::new());
        let deadline = Instant::now() + self.timeout;
        while text.chars().count() < chars {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "only {:?} arrived within {:?} ({reports} reports)",
                    text, self.timeout
                ));
            }
            let report = front
                .interrupt_in(
                    port,
                    dev.address,
                    ep.number(),
                    8,
                    u16::from(ep.interval),
                    left,
                )
                .map_err(err)?;
            reports += 1;
            if sample.len() < 4 {
                sample.push(hex(&report));
            }
            text.push_str(&decoder.feed(&report));
        }
        Ok(KeyboardReport {
            text,
            reports,
            sample,
        })
    }

    fn loopback(&mut self, port: u8, bytes: usize) -> Result<LoopbackReport, String> {
        let front = self.front()?;
        let dev = self.device(port)?;
        let a = dev.address;
        let bulk = |dir| {
            dev.endpoints()
                .into_iter()
                .find(|e| e.endpoint_type() == EndpointType::Bulk && e.direction() == dir)
                .map(|e| e.number())
        };
        let (Some(ep_in), Some(ep_out)) = (bulk(Direction::In), bulk(Direction::Out)) else {
            return Err("the loopback device has no bulk endpoint pair".into());
        };
        let set_mode = |mode: u16| {
            front
                .control_out(
                    port,
                    a,
                    SetupPacket::new(0x40, VENDOR_SET_MODE, mode, 0, 0),
                    &[],
                    IO_TIMEOUT,
                )
                .map_err(err)
        };
        // Echo: what goes out comes back.
        set_mode(0)?;
        let echo = random_bytes(4096)?;
        front
            .bulk_out(port, a, ep_out, &echo, IO_TIMEOUT)
            .map_err(err)?;
        let back = front
            .bulk_in(port, a, ep_in, echo.len(), IO_TIMEOUT)
            .map_err(err)?;
        if back != echo {
            return Err(format!(
                "echo mismatch: sent {} bytes, got {} different ones",
                echo.len(),
                back.len()
            ));
        }
        // Throughput OUT: the device consumes everything.
        let out = vec![0x5a; bytes];
        let t = Instant::now();
        let sent = front
            .bulk_out(port, a, ep_out, &out, IO_TIMEOUT)
            .map_err(err)?;
        let out_secs = t.elapsed().as_secs_f64();
        // Throughput IN: source mode, a known pattern checked byte by byte.
        set_mode(1)?;
        let t = Instant::now();
        let got = front
            .bulk_in(port, a, ep_in, bytes, IO_TIMEOUT)
            .map_err(err)?;
        let in_secs = t.elapsed().as_secs_f64();
        if let Some(pos) = got
            .iter()
            .enumerate()
            .position(|(i, &b)| u64::from(b) != (i as u64) % 251)
        {
            return Err(format!(
                "bulk IN data differs from the source pattern at byte {pos}"
            ));
        }
        let c = front
            .control_in(
                port,
                a,
                SetupPacket::new(0xc0, VENDOR_GET_COUNTERS, 0, 0, 16),
                IO_TIMEOUT,
            )
            .map_err(err)?;
        let word = |r: std::ops::Range<usize>| {
            c.get(r)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes)
        };
        set_mode(0)?;
        Ok(LoopbackReport {
            echo_bytes: echo.len(),
            out_bytes: sent,
            out_secs,
            in_bytes: got.len(),
            in_secs,
            device_counters: (word(0..8), word(8..16)),
        })
    }

    /// Releases the controller; true if that went without error.
    fn close_front(&mut self) -> bool {
        let open = lock_unpoisoned(&self.front).take();
        let Some(front) = open else { return true };
        match front.close() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("closing the controller: {e}", e = Chain(&e));
                false
            }
        }
    }
}

fn summary(d: &Device) -> DeviceSummary {
    let interfaces = d
        .config
        .interfaces
        .iter()
        .filter_map(|i| i.alt_settings.first())
        .map(|a| format!("{:02x}/{:02x}/{:02x}", a.class, a.subclass, a.protocol))
        .collect();
    let endpoints = d
        .endpoints()
        .iter()
        .map(|e| {
            let kind = match e.endpoint_type() {
                EndpointType::Control => "control",
                EndpointType::Isochronous => "iso",
                EndpointType::Bulk => "bulk",
                EndpointType::Interrupt => "int",
            };
            let dir = if e.direction() == Direction::In {
                "in"
            } else {
                "out"
            };
            format!("0x{:02x} {kind}-{dir} {}", e.address, e.max_packet_size)
        })
        .collect();
    DeviceSummary {
        port: d.port,
        address: d.address,
        speed: speed_text(d.speed).to_owned(),
        vendor: d.descriptor.id_vendor,
        product: d.descriptor.id_product,
        manufacturer: d.manufacturer.clone(),
        product_name: d.product.clone(),
        interfaces,
        endpoints,
    }
}

/// `len` bytes from the kernel's random source.
fn random_bytes(len: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}", e = Chain(&e)))?;
    Ok(buf)
}
