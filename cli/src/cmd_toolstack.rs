//! Toolstack subcommands (`ctrl-attach`, `dev-attach`, `list`, ..., and xl's own
//! verbs `usbctrl-attach`, `usbctrl-detach`, `usbdev-attach`, `usbdev-detach`,
//! `usb-list` with xl's argument forms and output): thin adapters that parse
//! xl-shaped arguments, call `pvusb-toolstack` and print the result.
//! All logic, including every error message, lives in the library.

use std::path::PathBuf;
use std::time::Duration;

use pvusb_support::Chain;
use pvusb_toolstack::sysfs::SysfsRoot;
use pvusb_toolstack::xl_args;
use pvusb_toolstack::{DeviceSpec, DeviceStatus, ToolError, Toolstack};
use pvusb_xenstore::XsClient;

/// Options shared by every toolstack subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Root of sysfs (default: $PVUSB_SYSFS_ROOT, else /sys).
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// Domain the pvusb backend daemon runs in.
    #[arg(long, default_value_t = 0)]
    backend_domid: u16,
    /// Seconds to wait for xenbus state changes.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Simulate driver bind/unbind on a fake sysfs tree (tests and demos only;
    /// also enabled by PVUSB_SYSFS_SIMULATED=1).
    #[arg(long, hide = true)]
    simulate_binding: bool,
    /// Device rules dev-attach checks (USBGuard's rule language; default:
    /// $PVUSB_RULES, else /etc/pvusb/rules.conf; no file: every device but
    /// hubs may be assigned).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
}

/// The toolstack subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create a virtual USB controller in a guest: DOM [version=1|2] [ports=N].
    CtrlAttach {
        /// Domain id or name.
        dom: String,
        /// `version=1|2` (default 2), `ports=N` (1..31, default 8).
        settings: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Remove a controller, giving its devices back to the host first.
    CtrlDetach {
        /// Domain id or name.
        dom: String,
        /// Controller index.
        devid: u32,
        /// Remove the nodes without waiting for the backend to close.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Give a host device to a guest:
    /// DOM (BUS.ADDR | hostbus=B hostaddr=A | BUSID) [controller=C] [port=P].
    DevAttach {
        /// Domain id or name.
        dom: String,
        /// The device and optional `controller=`/`port=`.
        #[arg(required = true)]
        args: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Give a device back to the host: DOM CTRL PORT, or DOM BUSID.
    DevDetach {
        /// Domain id or name.
        dom: String,
        /// CTRL PORT, or BUSID.
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// Controllers and devices of a guest with each device's assignment state.
    List {
        /// Domain id or name.
        dom: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Host devices that can be assigned (not hubs, not assigned), with their state.
    AssignableList {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Finish or roll back interrupted attaches/detaches: DEVICE, or --all.
    Recover {
        /// BUSID or BUS.ADDR.
        device: Option<String>,
        /// Every device with a record, and every dead domain's controllers.
        #[arg(long, conflicts_with = "device")]
        all: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// xl's `usbctrl-attach`: `<Domain> [type=pv] [version=1|2] [ports=N]`; silent
    /// on success, like xl.
    UsbctrlAttach {
        /// Domain id or name.
        dom: String,
        /// `type=pv` (only pv is served), `version=1|2` (default 2), `ports=N` (default 8).
        settings: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// xl's `usbctrl-detach`: `<Domain> <DevId>`; its devices go back to the host first.
    UsbctrlDetach {
        /// Domain id or name.
        dom: String,
        /// The controller's Devid (from `usb-list`).
        devid: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// xl's `usbdev-attach`: `<Domain> hostbus=B hostaddr=A [controller=C [port=P]]`.
    UsbdevAttach {
        /// Domain id or name.
        dom: String,
        /// `hostbus=` and `hostaddr=` (lsusb's Bus and Device), optional
        /// `controller=`, `port=`, `type=hostdev`.
        #[arg(required = true)]
        settings: Vec<String>,
        #[command(flatten)]
        opts: Opts,
    },
    /// xl's `usbdev-detach`: `<Domain> <controller> <port>`.
    UsbdevDetach {
        /// Domain id or name.
        dom: String,
        /// Controller Devid.
        controller: String,
        /// Port.
        port: String,
        #[command(flatten)]
        opts: Opts,
    },
    /// xl's `usb-list`: `<Domain>`, printed exactly as `xl usb-list` prints it.
    UsbList {
        /// Domain id or name.
        dom: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: Opts,
    },
    /// Create the usbctrl/usbdev entries of an xl domain config file.
    ConfigApply {
        /// Domain id or name.
        dom: String,
        /// The xl config file.
        file: PathBuf,
        #[command(flatten)]
        opts: Opts,
    },
}

type Ts = Toolstack<XsClient, SysfsRoot>;

/// The host's sysfs as the command line (or, without the flag, the
/// environment) describes it: the root (`PVUSB_SYSFS_ROOT`, else `/sys`),
/// whether binding is simulated (`PVUSB_SYSFS_SIMULATED=1`) and the device
/// rules file (`PVUSB_RULES`, else the toolstack's default). The backend
/// daemon and the toolstack commands must agree on all three.
pub(crate) fn host_sysfs(
    root: Option<PathBuf>,
    simulate_binding: bool,
    rules: Option<PathBuf>,
) -> SysfsRoot {
    let root = root
        .or_else(|| std::env::var_os("PVUSB_SYSFS_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/sys"));
    let simulated =
        simulate_binding || std::env::var("PVUSB_SYSFS_SIMULATED").is_ok_and(|v| v == "1");
    let sysfs = if simulated {
        SysfsRoot::simulated(root)
    } else {
        SysfsRoot::new(root)
    };
    match rules.or_else(|| std::env::var_os("PVUSB_RULES").map(PathBuf::from)) {
        Some(rules) => sysfs.with_rules(rules),
        None => sysfs,
    }
}

fn open(opts: &Opts) -> Result<Ts, String> {
    let store = XsClient::connect_default().map_err(|e| {
        format!(
            "cannot connect to xenstore ({e}): start xenstored or set XENSTORED_PATH",
            e = Chain(&e)
        )
    })?;
    let sysfs = host_sysfs(
        opts.sysfs_root.clone(),
        opts.simulate_binding,
        opts.rules.clone(),
    );
    let mut ts = Toolstack::new(store, sysfs, opts.backend_domid);
    ts.timeout = Duration::from_secs(opts.timeout);
    Ok(ts)
}

/// The toolstack, and the domain `dom` (an id or a name) resolved through
/// it: where every command about one domain starts.
fn open_for(opts: &Opts, dom: &str) -> Result<(Ts, u16), Box<dyn std::fmt::Display>> {
    let ts = open(opts).map_err(|e| Box::new(e) as Box<dyn std::fmt::Display>)?;
    let domid = ts
        .resolve_domain(dom)
        .map_err(|e| Box::new(Chain(&e).to_string()) as Box<dyn std::fmt::Display>)?;
    Ok((ts, domid))
}

/// `key=value` arguments; anything else is returned as a positional.
fn split_settings(args: &[String]) -> (Vec<(&str, &str)>, Vec<&str>) {
    let mut kv = Vec::new();
    let mut pos = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => kv.push((k, v)),
            None => pos.push(a.as_str()),
        }
    }
    (kv, pos)
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{key}={v} is not a number: give {key}=N"))
}

fn unknown(key: &str, allowed: &str) -> String {
    format!("unknown setting {key}=: this command takes {allowed}")
}

fn json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| format!("cannot encode JSON: {e}", e = Chain(&e)))?;
    println!("{text}");
    Ok(())
}

/// Prints state as JSON or as its text form.
fn show<T: serde::Serialize + std::fmt::Display>(v: &T, as_json: bool) -> Result<(), String> {
    if as_json {
        json(v)
    } else {
        print!("{v}");
        Ok(())
    }
}

fn print_devices(list: &[DeviceStatus]) {
    if list.is_empty() {
        println!("no assignable devices");
    }
    for d in list {
        println!("{d}");
    }
}

/// Run one toolstack subcommand.
pub fn run(cmd: Command) -> Result<(), String> {
    run_inner(cmd).map_err(|e| e.to_string())
}

fn run_inner(cmd: Command) -> Result<(), Box<dyn std::fmt::Display>> {
    let boxed = |e: ToolError| -> Box<dyn std::fmt::Display> { Box::new(Chain(&e).to_string()) };
    let text = |e: String| -> Box<dyn std::fmt::Display> { Box::new(e) };
    match cmd {
        Command::CtrlAttach {
            dom,
            settings,
            opts,
        } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            let (kv, pos) = split_settings(&settings);
            if let Some(p) = pos.first() {
                return Err(text(format!(
                    "unexpected {p:?}: give version=1|2 and/or ports=N"
                )));
            }
            let (mut version, mut ports) = (2u8, 8u32);
            for (k, v) in kv {
                match k {
                    "version" => version = number(k, v).map_err(text)?,
                    "ports" => ports = number(k, v).map_err(text)?,
                    _ => return Err(text(unknown(k, "version= and ports="))),
                }
            }
            let a = ts.ctrl_attach(domid, version, ports).map_err(boxed)?;
            println!("controller {} of domain {} connected", a.devid, a.domid);
        }
        Command::CtrlDetach {
            dom,
            devid,
            force,
            opts,
        } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            let d = ts.ctrl_detach(domid, devid, force).map_err(boxed)?;
            for b in d.devices {
                println!("device {b} given back to the host");
            }
            println!("controller {devid} of domain {domid} removed");
        }
        Command::DevAttach { dom, args, opts } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            let (kv, pos) = split_settings(&args);
            let (mut bus, mut addr, mut ctrl, mut port) = (None, None, None, None);
            for (k, v) in kv {
                match k {
                    "hostbus" => bus = Some(number(k, v).map_err(text)?),
                    "hostaddr" => addr = Some(number(k, v).map_err(text)?),
                    "controller" => ctrl = Some(number(k, v).map_err(text)?),
                    "port" => port = Some(number(k, v).map_err(text)?),
                    _ => return Err(text(unknown(k, "hostbus=, hostaddr=, controller=, port="))),
                }
            }
            let spec = match (pos.as_slice(), bus, addr) {
                ([one], None, None) => DeviceSpec::parse(one).map_err(boxed)?,
                ([], Some(b), Some(a)) => DeviceSpec::BusAddr(b, a),
                _ => {
                    return Err(text(
                        "name exactly one device: BUS.ADDR, hostbus=B hostaddr=A, or a busid"
                            .to_owned(),
                    ))
                }
            };
            let a = ts.dev_attach(domid, &spec, ctrl, port).map_err(boxed)?;
            let how = if a.already {
                " (already there)"
            } else if a.resumed {
                " (finished an interrupted attach)"
            } else {
                ""
            };
            println!(
                "device {} assigned to domain {} controller {} port {}{how}",
                a.busid, a.domid, a.ctrl, a.port
            );
        }
        Command::DevDetach { dom, args, opts } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            let d = match args.as_slice() {
                [c, p] => ts
                    .dev_detach(
                        domid,
                        number("controller", c).map_err(text)?,
                        number("port", p).map_err(text)?,
                    )
                    .map_err(boxed)?,
                [b] => {
                    let busid = ts.resolve_device(&DeviceSpec::parse(b).map_err(boxed)?);
                    // A device already unplugged can still be detached by busid.
                    let busid = busid.unwrap_or_else(|_| b.clone());
                    ts.dev_detach_busid(domid, &busid).map_err(boxed)?
                }
                _ => return Err(text("give CTRL PORT, or a BUSID".to_owned())),
            };
            if let Some(w) = d.release.and_then(|r| r.warning(&d.busid)) {
                eprintln!("{w}");
            }
            println!("device {} given back to the host", d.busid);
        }
        Command::List {
            dom,
            json: as_json,
            opts,
        } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            show(&ts.list(domid).map_err(boxed)?, as_json).map_err(text)?;
        }
        Command::AssignableList {
            json: as_json,
            opts,
        } => {
            let ts = open(&opts).map_err(text)?;
            let l = ts.assignable_list().map_err(boxed)?;
            if as_json {
                json(&l).map_err(text)?;
            } else {
                print_devices(&l);
            }
        }
        Command::Recover { device, all, opts } => {
            let ts = open(&opts).map_err(text)?;
            match (device, all) {
                (Some(d), false) => {
                    let spec = DeviceSpec::parse(&d).map_err(boxed)?;
                    let busid = match spec {
                        DeviceSpec::BusId(b) => b,
                        other => ts.resolve_device(&other).map_err(boxed)?,
                    };
                    let r = ts.recover_device(&busid).map_err(boxed)?;
                    println!("{busid}: {}", describe(&r));
                }
                (None, true) => {
                    let mut failed = 0usize;
                    for (what, r) in ts.recover_all().map_err(boxed)? {
                        match r {
                            Ok(r) => println!("{what}: {}", describe(&r)),
                            Err(e) => {
                                failed += 1;
                                eprintln!("{what}: {e}", e = Chain(&e));
                            }
                        }
                    }
                    if failed > 0 {
                        return Err(text(format!(
                            "{failed} item(s) could not be recovered: fix the causes above and re-run `pvusb recover --all`"
                        )));
                    }
                }
                _ => return Err(text("give a DEVICE or --all".to_owned())),
            }
        }
        Command::UsbctrlAttach {
            dom,
            settings,
            opts,
        } => {
            // Arguments first: a refusal needs no xenstore.
            let spec = xl_args::parse_usbctrl(&settings).map_err(boxed)?;
            let (ts, domid) = open_for(&opts, &dom)?;
            ts.ctrl_attach(domid, spec.version, spec.ports)
                .map_err(boxed)?;
        }
        Command::UsbctrlDetach { dom, devid, opts } => {
            let devid = xl_args::decimal("devid", &devid).map_err(boxed)?;
            let (ts, domid) = open_for(&opts, &dom)?;
            ts.ctrl_detach(domid, devid, false).map_err(boxed)?;
        }
        Command::UsbdevAttach {
            dom,
            settings,
            opts,
        } => {
            let spec = xl_args::parse_usbdev(&settings).map_err(boxed)?;
            let (ts, domid) = open_for(&opts, &dom)?;
            let dev = DeviceSpec::BusAddr(spec.hostbus, spec.hostaddr);
            ts.dev_attach(domid, &dev, spec.controller, spec.port)
                .map_err(boxed)?;
        }
        Command::UsbdevDetach {
            dom,
            controller,
            port,
            opts,
        } => {
            let ctrl = xl_args::decimal("controller", &controller).map_err(boxed)?;
            let port = xl_args::decimal("port", &port).map_err(boxed)?;
            let (ts, domid) = open_for(&opts, &dom)?;
            let d = ts.dev_detach(domid, ctrl, port).map_err(boxed)?;
            if let Some(w) = d.release.and_then(|r| r.warning(&d.busid)) {
                eprintln!("{w}");
            }
        }
        Command::UsbList {
            dom,
            json: as_json,
            opts,
        } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            show(&ts.xl_usb_list(domid).map_err(boxed)?, as_json).map_err(text)?;
        }
        Command::ConfigApply { dom, file, opts } => {
            let (ts, domid) = open_for(&opts, &dom)?;
            let name = file.display().to_string();
            let meta = std::fs::metadata(&file)
                .map_err(|e| text(format!("cannot read {name}: {e}", e = Chain(&e))))?;
            if meta.len() > pvusb_toolstack::config::MAX_CONFIG_LEN as u64 {
                return Err(text(format!(
                    "{name} is larger than a domain config can be: check the path"
                )));
            }
            let body = std::fs::read_to_string(&file)
                .map_err(|e| text(format!("cannot read {name}: {e}", e = Chain(&e))))?;
            let a = ts.config_apply(domid, &name, &body).map_err(boxed)?;
            for c in a.created_controllers {
                println!("controller {c} of domain {domid} created");
            }
            for (b, c, p) in a.devices {
                println!("device {b} at controller {c} port {p}");
            }
        }
    }
    Ok(())
}

fn describe(r: &pvusb_toolstack::Recovered) -> &'static str {
    use pvusb_toolstack::Recovered as R;
    match r {
        R::Consistent => "consistent, nothing to do",
        R::AttachRolledBack => "interrupted attach rolled back; device back on the host",
        R::DetachFinished => "interrupted detach finished; device back on the host",
        R::StaleRecordCleared => "stale record cleared; device back on the host",
    }
}
