//! `pvusb stats`: the live counters of a running backend daemon, read over
//! its control socket (`pvusb_backend::control`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use pvusb_support::Chain;
use serde_json::Value;

use crate::cmd_backend::DEFAULT_CONTROL;

/// Arguments of `pvusb stats`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this guest (domid or name).
    dom: Option<String>,
    /// Print the daemon's JSON as is.
    #[arg(long)]
    json: bool,
    /// Print again every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
    /// The daemon's control socket (default: $PVUSB_CONTROL, else
    /// /run/pvusb/control.sock).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
}

/// Runs `pvusb stats`.
pub fn run(args: Args) -> Result<(), String> {
    let path = args
        .control
        .clone()
        .or_else(|| std::env::var_os("PVUSB_CONTROL").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL));
    let domid = match &args.dom {
        None => None,
        Some(d) => Some(resolve(d)?),
    };
    loop {
        let reply = ask(&path, domid)?;
        if args.json {
            println!("{reply}");
        } else {
            let v: Value = serde_json::from_str(&reply).map_err(|e| {
                format!(
                    "the daemon's answer is not JSON ({e}): {reply}",
                    e = Chain(&e)
                )
            })?;
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                return Err(format!("the daemon refused the request: {e}"));
            }
            print!("{}", render(&v));
        }
        match args.watch {
            Some(secs) => {
                std::thread::sleep(Duration::from_secs(secs.max(1)));
                println!();
            }
            None => return Ok(()),
        }
    }
}

fn resolve(dom: &str) -> Result<u16, String> {
    if let Ok(d) = dom.parse() {
        return Ok(d);
    }
    let xs = pvusb_xenstore::XsClient::connect_default().map_err(|e| {
        format!(
            "cannot reach xenstore to resolve {dom:?}: {e}; give a domid",
            e = Chain(&e)
        )
    })?;
    let ts = pvusb_toolstack::Toolstack::new(xs, pvusb_toolstack::SysfsRoot::new("/sys"), 0);
    ts.resolve_domain(dom).map_err(|e| Chain(&e).to_string())
}

fn ask(path: &std::path::Path, domid: Option<u16>) -> Result<String, String> {
    let req = match domid {
        Some(d) => format!("stats {d}\n"),
        None => "stats\n".to_owned(),
    };
    request(path, &req)
}

/// Sends one request line to the daemon's control socket; its answer.
pub(crate) fn request(path: &std::path::Path, req: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the backend daemon at {} ({e}): is `pvusb backend` running (systemctl status pvusb-backend), and are you root?",
            path.display(), e = Chain(&e)
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Chain(&e).to_string())?;
    s.write_all(req.as_bytes())
        .map_err(|e| Chain(&e).to_string())?;
    let mut out = String::new();
    s.take(64 << 20)
        .read_to_string(&mut out)
        .map_err(|e| format!("reading the daemon's answer: {e}", e = Chain(&e)))?;
    Ok(out.trim().to_owned())
}

/// The human view: one block per controller, one line per port.
pub fn render(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let controllers = v["controllers"].as_array().cloned().unwrap_or_default();
    if controllers.is_empty() {
        out.push_str("no controller is being served\n");
    }
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    for c in &controllers {
        let t = &c["totals"];
        let _ = writeln!(
            out,
            "domain {} controller {}{}: requests {}, responses {}, invalid {}, in flight {}",
            n(&c["domid"]),
            n(&c["devid"]),
            if c["running"].as_bool() == Some(true) {
                ""
            } else {
                " (stopped)"
            },
            n(&t["requests"]),
            n(&t["responses"]),
            n(&t["invalid"]),
            n(&t["in_flight"]),
        );
        let ports = c["ports"].as_array().cloned().unwrap_or_default();
        if ports.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>7} {:>7} {:>6} {:>9} {:>8} {:>8}",
            "port", "control", "bulk", "intr", "iso", "MB in", "MB out", "ok", "errors", "unlinks",
            "flight", "transfers", "p50 µs", "p99 µs"
        );
        for p in &ports {
            let urbs = &p["urbs"];
            let done = &p["completions"];
            let ok = n(&done["ok"]);
            let all: u64 = done
                .as_object()
                .map(|m| m.values().map(|x| x.as_u64().unwrap_or(0)).sum())
                .unwrap_or(0);
            let lat = |k: &str| p[k].as_u64().map_or("-".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>10.2} {:>10.2} {:>9} {:>7} {:>7} {:>6} {:>9} {:>8} {:>8}",
                n(&p["port"]),
                n(&urbs["control"]),
                n(&urbs["bulk"]),
                n(&urbs["interrupt"]),
                n(&urbs["isochronous"]),
                n(&p["bytes_in"]) as f64 / 1e6,
                n(&p["bytes_out"]) as f64 / 1e6,
                ok,
                all - ok,
                n(&p["unlinks"]),
                n(&p["in_flight"]),
                n(&p["transfers"]),
                lat("latency_p50_us"),
                lat("latency_p99_us"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_port() {
        let v: Value = serde_json::from_str(
            r#"{"controllers":[{"domid":3,"devid":0,"running":true,
                "totals":{"requests":12,"responses":12,"invalid":0,"in_flight":0},
                "ports":[{"port":1,"urbs":{"control":4,"bulk":8,"interrupt":0,"isochronous":0},
                  "bytes_in":1000000,"bytes_out":2000000,
                  "completions":{"ok":11,"stall":1},"unlinks":0,"in_flight":0,
                  "transfers":12,"latency_p50_us":64,"latency_p99_us":null}]}]}"#,
        )
        .unwrap();
        let text = render(&v);
        assert!(
            text.starts_with("domain 3 controller 0: requests 12"),
            "{text}"
        );
        let line = text.lines().nth(2).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            ["1", "4", "8", "0", "0", "1.00", "2.00", "11", "1", "0", "0", "12", "64", "-"]
        );
        assert_eq!(
            render(&serde_json::json!({"controllers": []})),
            "no controller is being served\n"
        );
    }
}
