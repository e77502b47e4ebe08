//! `pvusb front ...`: the guest-side frontend as a tool (thin adapters over
//! `pvusb-frontend`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use pvusb_frontend::{Device, Frontend, FrontendError, MassStorage, Options, Transport};
use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usb::EndpointType;
use pvusb_protocol::{Direction, SetupPacket};
use pvusb_support::Chain;
use pvusb_xenstore::XsClient;
use serde_json::{json, Value};

/// Which grant/event-channel implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// Real Xen: /dev/xen/gntalloc and /dev/xen/evtchn.
    Xen,
    /// The simulated transport (with the embedded xenstore at XENSTORED_PATH).
    Sim,
}

/// Arguments of `pvusb front`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Our domain id (default: read from xenstore on Xen, 1 in the simulation).
    #[arg(long)]
    domid: Option<u16>,
    /// Device id of the controller.
    #[arg(long, default_value_t = 0)]
    devid: u32,
    /// Transport.
    #[arg(long, value_enum, default_value_t = TransportKind::Xen)]
    transport: TransportKind,
    /// Rendezvous directory of the simulated transport.
    #[arg(long, default_value = "/tmp/pvusb-sim")]
    sim_dir: PathBuf,
    #[command(subcommand)]
    command: FrontCommand,
}

#[derive(Debug, Subcommand)]
enum FrontCommand {
    /// List the ports and devices (like lsusb).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the descriptors of the device on PORT.
    Descriptors {
        port: u8,
        #[arg(long)]
        json: bool,
    },
    /// Read blocks from a mass-storage device.
    Read {
        port: u8,
        #[arg(long)]
        lba: u64,
        #[arg(long)]
        count: u32,
        /// Output file (default: hex dump to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a file (whole blocks) to a mass-storage device.
    Write {
        port: u8,
        #[arg(long)]
        lba: u64,
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Exercise every transfer type the device(s) offer and report.
    Selftest {
        port: Option<u8>,
        #[arg(long)]
        json: bool,
    },
    /// Serve every device to the guest kernel's vhci-hcd until SIGTERM.
    #[command(long_about = crate::cmd_front_serve::LONG_ABOUT)]
    Serve(crate::cmd_front_serve::ServeArgs),
}

const WAIT: Duration = Duration::from_secs(2);

fn err(e: impl std::error::Error) -> String {
    Chain(&e).to_string()
}

impl Args {
    /// The controller's device id.
    pub fn devid(&self) -> u32 {
        self.devid
    }
}

/// Connects the frontend `args` name with `options`.
pub fn open(args: &Args, options: Options) -> Result<Frontend, String> {
    open_controller(args, args.devid, options)
}

/// Connects as the frontend of controller `devid` of this domain.
pub fn open_controller(args: &Args, devid: u32, options: Options) -> Result<Frontend, String> {
    let (xs, transport, domid): (XsClient, Arc<dyn Transport>, u16) = match args.transport {
        TransportKind::Xen => {
            let xs = XsClient::connect_default().map_err(err)?;
            let domid = match args.domid {
                Some(d) => d,
                None => pvusb_frontend::xenbus::own_domid(&xs).map_err(err)?,
            };
            (
                xs,
                Arc::new(pvusb_frontend::LinuxXen::open().map_err(err)?),
                domid,
            )
        }
        TransportKind::Sim => {
            let domid = args.domid.unwrap_or(1);
            let path = std::env::var_os(pvusb_xenstore::PATH_ENV)
                .ok_or("the sim transport needs XENSTORED_PATH (the embedded xenstore's socket)")?;
            let xs = XsClient::connect_as(std::path::Path::new(&path), domid).map_err(err)?;
            (
                xs,
                Arc::new(pvusb_xen::sim::SimXen::new(&args.sim_dir, domid)),
                domid,
            )
        }
    };
    Frontend::connect(Arc::new(xs), transport, domid, devid, options).map_err(err)
}

/// Runs `pvusb front`.
pub fn run(args: Args) -> Result<(), String> {
    if let FrontCommand::Serve(serve) = &args.command {
        return crate::cmd_front_serve::run(&args, serve);
    }
    let front = open(&args, Options::default())?;
    // Conn events arrive right after the handshake: give them a moment.
    std::thread::sleep(Duration::from_millis(200));
    let result = match &args.command {
        FrontCommand::List { json } => list(&front, *json),
        FrontCommand::Descriptors { port, json } => descriptors(&front, *port, *json),
        FrontCommand::Read {
            port,
            lba,
            count,
            out,
        } => read(&front, *port, *lba, *count, out.as_ref()),
        FrontCommand::Write { port, lba, input } => write(&front, *port, *lba, input),
        FrontCommand::Selftest { port, json } => selftest(&front, *port, *json),
        FrontCommand::Serve(_) => Ok(()),
    };
    let closed = front.close().map_err(err);
    result.and(closed)
}

fn enumerate(front: &Frontend, port: u8) -> Result<Device, String> {
    front
        .wait_for_device(port, WAIT)
        .map_err(|_| format!("no device on port {port}"))?;
    front.enumerate(port).map_err(err)
}

fn device_json(d: &Device) -> Value {
    json!({
        "port": d.port, "address": d.address, "speed": format!("{:?}", d.speed),
        "vendor": format!("{:04x}", d.descriptor.id_vendor), "product_id": format!("{:04x}", d.descriptor.id_product),
        "manufacturer": d.manufacturer, "product": d.product, "serial": d.serial,
    })
}

fn list(front: &Frontend, as_json: bool) -> Result<(), String> {
    let mut rows = Vec::new();
    for p in front.ports() {
        if !p.connected() {
            rows.push(json!({"port": p.port, "speed": "None"}));
            if !as_json {
                println!("Port {:2}: empty", p.port);
            }
            continue;
        }
        match front.enumerate(p.port) {
            Ok(d) => {
                if !as_json {
                    println!(
                        "Port {:2}: Device {:03} ID {:04x}:{:04x} {:?} speed  {} {}",
                        d.port,
                        d.address,
                        d.descriptor.id_vendor,
                        d.descriptor.id_product,
                        d.speed,
                        d.manufacturer.as_deref().unwrap_or(""),
                        d.product.as_deref().unwrap_or("")
                    );
                }
                rows.push(device_json(&d));
            }
            Err(e) => {
                if !as_json {
                    println!(
                        "Port {:2}: {:?} speed, enumeration failed: {e}",
                        p.port,
                        p.speed,
                        e = Chain(&e)
                    );
                }
                rows.push(json!({"port": p.port, "speed": format!("{:?}", p.speed), "error": e.to_string()}));
            }
        }
    }
    if as_json {
        println!("{}", Value::Array(rows));
    }
    Ok(())
}

fn descriptors(front: &Frontend, port: u8, as_json: bool) -> Result<(), String> {
    let d = enumerate(front, port)?;
    if as_json {
        let mut v = device_json(&d);
        v["device_descriptor"] = json!(format!("{:?}", d.descriptor));
        v["configuration"] = json!(format!("{:?}", d.config));
        v["raw_config"] = json!(d
            .raw_config
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>());
        println!("{v}");
        return Ok(());
    }
    println!("Device descriptor: {:#?}", d.descriptor);
    println!(
        "Manufacturer: {:?}  Product: {:?}  Serial: {:?}",
        d.manufacturer, d.product, d.serial
    );
    println!(
        "Configuration {} ({} bytes):",
        d.config.configuration_value,
        d.raw_config.len()
    );
    for i in &d.config.interfaces {
        for a in &i.alt_settings {
            println!(
                "  Interface {} alt {}: class {:02x}/{:02x}/{:02x}",
                a.interface_number, a.alternate_setting, a.class, a.subclass, a.protocol
            );
            for e in &a.endpoints {
                println!(
                    "    Endpoint {:#04x} {:?} max packet {} interval {}",
                    e.address,
                    e.endpoint_type(),
                    e.max_packet_size,
                    e.interval
                );
            }
        }
    }
    Ok(())
}

fn read(
    front: &Frontend,
    port: u8,
    lba: u64,
    count: u32,
    out: Option<&PathBuf>,
) -> Result<(), String> {
    let d = enumerate(front, port)?;
    let mut ms = MassStorage::open(front, &d).map_err(err)?;
    let data = ms.read_blocks(lba, count).map_err(err)?;
    match out {
        Some(path) => std::fs::write(path, &data).map_err(err)?,
        None => {
            for (i, line) in data.chunks(16).enumerate() {
                let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                println!("{:08x}  {}", i * 16, hex.join(" "));
            }
        }
    }
    eprintln!(
        "read {} bytes ({count} blocks of {}) from LBA {lba}",
        data.len(),
        ms.block_size
    );
    Ok(())
}

fn write(front: &Frontend, port: u8, lba: u64, input: &PathBuf) -> Result<(), String> {
    let data = std::fs::read(input).map_err(err)?;
    let d = enumerate(front, port)?;
    let mut ms = MassStorage::open(front, &d).map_err(err)?;
    ms.write_blocks(lba, &data).map_err(err)?;
    eprintln!("wrote {} bytes at LBA {lba}", data.len());
    Ok(())
}

struct Outcome {
    name: String,
    ok: bool,
    detail: String,
}

fn selftest(front: &Frontend, port: Option<u8>, as_json: bool) -> Result<(), String> {
    let ports: Vec<u8> = match port {
        Some(p) => vec![p],
        None => front
            .ports()
            .iter()
            .filter(|p| p.connected())
            .map(|p| p.port)
            .collect(),
    };
    if ports.is_empty() {
        return Err("no device connected".into());
    }
    let mut all = Vec::new();
    for p in ports {
        let results = match enumerate(front, p) {
            Ok(d) => test_device(front, &d),
            Err(e) => vec![Outcome {
                name: "enumerate".into(),
                ok: false,
                detail: e,
            }],
        };
        all.push((p, results));
    }
    let failed = all.iter().flat_map(|(_, r)| r).filter(|o| !o.ok).count();
    if as_json {
        let v: Vec<Value> = all
            .iter()
            .flat_map(|(p, rs)| {
                rs.iter().map(
                    move |o| json!({"port": p, "test": o.name, "pass": o.ok, "detail": o.detail}),
                )
            })
            .collect();
        println!("{}", Value::Array(v));
    } else {
        for (p, rs) in &all {
            for o in rs {
                println!(
                    "port {p}: {:<28} {}  {}",
                    o.name,
                    if o.ok { "PASS" } else { "FAIL" },
                    o.detail
                );
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} self-test(s) failed"));
    }
    Ok(())
}

fn timed<T>(f: impl FnOnce() -> Result<T, FrontendError>) -> (Result<T, FrontendError>, Duration) {
    let start = Instant::now();
    (f(), start.elapsed())
}

fn test_device(front: &Frontend, d: &Device) -> Vec<Outcome> {
    let (port, addr) = (d.port, d.address);
    let t = Duration::from_secs(5);
    let mut out = Vec::new();
    let (r, el) = timed(|| {
        front.control_in(
            port,
            addr,
            SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 18),
            t,
        )
    });
    out.push(match r {
        Ok(b) => Outcome {
            name: "control GET_DESCRIPTOR".into(),
            ok: b.len() == 18 && b == d.descriptor.to_bytes(),
            detail: format!("{} bytes in {el:?}", b.len()),
        },
        Err(e) => Outcome {
            name: "control GET_DESCRIPTOR".into(),
            ok: false,
            detail: e.to_string(),
        },
    });
    let eps = d.endpoints();
    let find = |ty, dir| {
        eps.iter()
            .find(|e| e.endpoint_type() == ty && e.direction() == dir)
    };
    let is_storage = d
        .config
        .interfaces
        .iter()
        .flat_map(|i| &i.alt_settings)
        .any(|a| a.class == 8);
    if is_storage {
        let (r, el) = timed(|| {
            let mut ms = MassStorage::open(front, d)?;
            let data = ms.read_blocks(0, 128)?;
            Ok((data.len(), ms.blocks))
        });
        out.push(match r {
            Ok((n, blocks)) => Outcome {
                name: "bulk mass-storage read".into(),
                ok: n == 128 * 512,
                detail: format!(
                    "{n} bytes in {el:?} ({:.1} MB/s), {blocks} blocks",
                    n as f64 / el.as_secs_f64() / 1e6
                ),
            },
            Err(e) => Outcome {
                name: "bulk mass-storage read".into(),
                ok: false,
                detail: e.to_string(),
            },
        });
    } else if let (Some(i), Some(o)) = (
        find(EndpointType::Bulk, Direction::In),
        find(EndpointType::Bulk, Direction::Out),
    ) {
        let pattern: Vec<u8> = (0..4096u32).map(|x| (x * 7 + 3) as u8).collect();
        let (r, el) = timed(|| {
            front.bulk_out(port, addr, o.number(), &pattern, t)?;
            front.bulk_in(port, addr, i.number(), pattern.len(), t)
        });
        out.push(match r {
            Ok(b) => Outcome {
                name: "bulk OUT/IN loopback".into(),
                ok: b == pattern,
                detail: format!("{} bytes round trip in {el:?}", b.len()),
            },
            Err(e) => Outcome {
                name: "bulk OUT/IN loopback".into(),
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    if let Some(e) = find(EndpointType::Interrupt, Direction::In) {
        let (r, el) = timed(|| {
            front.interrupt_in(
                port,
                addr,
                e.number(),
                usize::from(e.max_packet_size & 0x7ff),
                u16::from(e.interval),
                t,
            )
        });
        out.push(match r {
            Ok(b) => Outcome {
                name: "interrupt IN".into(),
                ok: true,
                detail: format!("{}-byte report in {el:?}", b.len()),
            },
            Err(e) => Outcome {
                name: "interrupt IN".into(),
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    // Isochronous endpoints usually live in a non-zero alternate setting.
    for alt in d.config.interfaces.iter().flat_map(|i| &i.alt_settings) {
        let iso: Vec<_> = alt
            .endpoints
            .iter()
            .filter(|e| e.endpoint_type() == EndpointType::Isochronous)
            .collect();
        if iso.is_empty() {
            continue;
        }
        let select = SetupPacket::set_interface(alt.interface_number, alt.alternate_setting);
        if let Err(e) = front.control_out(port, addr, select, &[], t) {
            out.push(Outcome {
                name: "SET_INTERFACE for isochronous".into(),
                ok: false,
                detail: e.to_string(),
            });
            continue;
        }
        for e in iso {
            let dir = e.direction();
            let mps = u32::from(e.max_packet_size & 0x7ff).max(1);
            let payload = vec![0x55u8; mps as usize];
            let (r, el) = timed(|| match dir {
                Direction::In => front.iso_in(port, addr, e.number(), 1, vec![mps; 8], t),
                Direction::Out => front.iso_out(port, addr, e.number(), 1, &[&payload[..]; 8], t),
            });
            let name = format!("isochronous {dir:?} ep {:#04x}", e.address);
            out.push(match r {
                Ok(c) => {
                    let good = c.iso_packets.iter().filter(|p| p.status.is_ok()).count();
                    let bytes: u32 = c.iso_packets.iter().map(|p| p.actual_length).sum();
                    Outcome {
                        name,
                        ok: good == c.iso_packets.len(),
                        detail: format!(
                            "{good}/{} packets ok, {bytes} bytes in {el:?}",
                            c.iso_packets.len()
                        ),
                    }
                }
                Err(e) => Outcome {
                    name,
                    ok: false,
                    detail: e.to_string(),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod serve_cli_tests {
    use clap::{CommandFactory, Parser};

    use super::FrontCommand;
    use crate::{Cli, Command};

    fn front(argv: &[&str]) -> super::Args {
        let argv = ["pvusb", "front"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Front(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serve_parses_its_defaults_and_flags() {
        let args = front(&["serve"]);
        assert_eq!(args.devid(), 0);
        let FrontCommand::Serve(s) = args.command else {
            panic!()
        };
        assert!(!s.take_over);
        assert_eq!(s.vhci_dir, None);
        assert_eq!(s.max_in_flight, pvusb_frontend::vhci::DEFAULT_MAX_IN_FLIGHT);
        let args = front(&[
            "--devid",
            "2",
            "serve",
            "--take-over",
            "--vhci-dir",
            "/tmp/vhci",
            "--max-in-flight",
            "8",
        ]);
        assert_eq!(args.devid(), 2);
        let FrontCommand::Serve(s) = args.command else {
            panic!()
        };
        assert!(s.take_over);
        assert_eq!(
            s.vhci_dir.as_deref(),
            Some(std::path::Path::new("/tmp/vhci"))
        );
        assert_eq!(s.max_in_flight, 8);
        assert!(Cli::try_parse_from(["pvusb", "front", "serve", "--bogus"]).is_err());
    }

    #[test]
    fn serve_has_a_man_page_worthy_help() {
        let mut cmd = Cli::command();
        let serve = cmd
            .find_subcommand_mut("front")
            .and_then(|f| f.find_subcommand_mut("serve"))
            .unwrap();
        let help = serve.render_long_help().to_string();
        for needle in [
            "vhci-hcd",
            "SIGTERM",
            "Loads the vhci-hcd module",
            "rmmod xen-hcd",
            "--take-over",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
