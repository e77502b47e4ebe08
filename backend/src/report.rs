//! What `pvusb stats` and the metrics listener show: a copy of every
//! controller's counters, per port, as JSON (the control socket) or in the
//! Prometheus text format (the `--metrics` listener).

use std::fmt::Write as _;
use std::sync::Arc;

use crate::port_stats::{PortSnapshot, UrbType, LATENCY_BUCKETS};
use crate::stats::StatsSnapshot;

/// One controller's counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControllerReport {
    /// Guest.
    pub domid: u16,
    /// Controller devid.
    pub devid: u32,
    /// Whether its worker runs.
    pub running: bool,
    /// Its worker process now, when controllers run as processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_pid: Option<u32>,
    /// How many times its worker process was started again after a crash.
    pub worker_restarts: u64,
    /// Controller-wide counters.
    pub totals: StatsSnapshot,
    /// Ports that ever saw a URB.
    pub ports: Vec<PortReport>,
}

/// One port's counters, with the derived figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortReport {
    /// Root-hub port (1-based).
    pub port: u8,
    /// URBs accepted by transfer type.
    pub urbs: serde_json::Map<String, serde_json::Value>,
    /// Bytes the device returned.
    pub bytes_in: u64,
    /// Bytes the device accepted.
    pub bytes_out: u64,
    /// Answers by status.
    pub completions: serde_json::Map<String, serde_json::Value>,
    /// Unlinks naming a URB of this port.
    pub unlinks: u64,
    /// URBs accepted and not answered yet.
    pub in_flight: u64,
    /// Device transfers started.
    pub transfers: u64,
    /// Median latency (upper edge of its histogram bucket), µs.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile latency, µs.
    pub latency_p99_us: Option<u64>,
    /// The raw histogram, for the metrics listener (not serialised).
    #[serde(skip)]
    pub snapshot: PortSnapshot,
}

impl PortReport {
    /// The report of `port` from its snapshot.
    pub fn new(port: u8, s: PortSnapshot) -> Self {
        let urbs = UrbType::ALL
            .iter()
            .zip(s.urbs)
            .map(|(t, n)| (t.name().to_owned(), n.into()))
            .collect();
        let completions = PortSnapshot::status_names()
            .iter()
            .zip(s.completions)
            .map(|(name, n)| ((*name).to_owned(), n.into()))
            .collect();
        Self {
            port,
            urbs,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            completions,
            unlinks: s.unlinks,
            in_flight: s.in_flight(),
            transfers: s.transfers,
            latency_p50_us: s.latency_quantile_us(0.5),
            latency_p99_us: s.latency_quantile_us(0.99),
            snapshot: s,
        }
    }
}

/// Takes a report of every controller; cheap to clone and to send to the
/// threads that serve the control socket and the metrics listener.
#[derive(Clone)]
pub struct Reporter {
    take: Arc<dyn Fn() -> Vec<ControllerReport> + Send + Sync>,
    faults: Option<FaultInjector>,
}

/// Sends a test fault to a controller's worker process; whether it was sent.
pub type FaultInjector = Arc<dyn Fn(u16, u32, crate::isolation::Fault) -> bool + Send + Sync>;

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl Reporter {
    /// A reporter calling `take`.
    pub fn new(take: impl Fn() -> Vec<ControllerReport> + Send + Sync + 'static) -> Self {
        Self {
            take: Arc::new(take),
            faults: None,
        }
    }

    /// Also takes `fault DOMID DEVID KIND` requests (a daemon started with
    /// test fault hooks).
    pub fn with_faults(mut self, inject: FaultInjector) -> Self {
        self.faults = Some(inject);
        self
    }

    /// Every controller's report, sorted by (domid, devid).
    pub fn take(&self) -> Vec<ControllerReport> {
        (self.take)()
    }

    /// Sends a fault; `None` without fault hooks.
    pub fn inject(&self, domid: u16, devid: u32, fault: crate::isolation::Fault) -> Option<bool> {
        self.faults.as_ref().map(|f| f(domid, devid, fault))
    }
}

/// The reports as one JSON document (`{"controllers": [...]}`).
pub fn to_json(reports: &[ControllerReport]) -> String {
    serde_json::json!({ "controllers": reports }).to_string()
}

/// The reports in the Prometheus text exposition format (version 0.0.4).
pub fn to_prometheus(reports: &[ControllerReport]) -> String {
    fn family(out: &mut String, name: &str, kind: &str, help: &str) {
        let _ = writeln!(out, "# HELP pvusb_{name} {help}");
        let _ = writeln!(out, "# TYPE pvusb_{name} {kind}");
    }
    let labels = |r: &ControllerReport, p: &PortReport| {
        format!(
            "domid=\"{}\",devid=\"{}\",port=\"{}\"",
            r.domid, r.devid, p.port
        )
    };
    let mut out = String::new();
    family(
        &mut out,
        "urbs_total",
        "counter",
        "URBs accepted for the device, by transfer type.",
    );
    for r in reports {
        for p in &r.ports {
            for (t, n) in UrbType::ALL.iter().zip(p.snapshot.urbs) {
                let _ = writeln!(
                    out,
                    "pvusb_urbs_total{{{},type=\"{}\"}} {n}",
                    labels(r, p),
                    t.name()
                );
            }
        }
    }
    family(
        &mut out,
        "bytes_total",
        "counter",
        "Bytes moved by the device, by direction.",
    );
    for r in reports {
        for p in &r.ports {
            let l = labels(r, p);
            let _ = writeln!(
                out,
                "pvusb_bytes_total{{{l},direction=\"in\"}} {}",
                p.bytes_in
            );
            let _ = writeln!(
                out,
                "pvusb_bytes_total{{{l},direction=\"out\"}} {}",
                p.bytes_out
            );
        }
    }
    family(
        &mut out,
        "completions_total",
        "counter",
        "URBs answered, by usbif status.",
    );
    for r in reports {
        for p in &r.ports {
            for (name, n) in PortSnapshot::status_names()
                .iter()
                .zip(p.snapshot.completions)
            {
                let _ = writeln!(
                    out,
                    "pvusb_completions_total{{{},status=\"{name}\"}} {n}",
                    labels(r, p)
                );
            }
        }
    }
    for (name, help, get) in [
        (
            "unlinks_total",
            "Unlink requests naming a URB of the port.",
            (|p: &PortReport| p.unlinks) as fn(&PortReport) -> u64,
        ),
        (
            "device_transfers_total",
            "Device transfers started (a coalesced one carries several URBs).",
            |p| p.transfers,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for r in reports {
            for p in &r.ports {
                let _ = writeln!(out, "pvusb_{name}{{{}}} {}", labels(r, p), get(p));
            }
        }
    }
    family(
        &mut out,
        "urbs_in_flight",
        "gauge",
        "URBs accepted and not answered yet.",
    );
    for r in reports {
        for p in &r.ports {
            let _ = writeln!(
                out,
                "pvusb_urbs_in_flight{{{}}} {}",
                labels(r, p),
                p.in_flight
            );
        }
    }
    family(
        &mut out,
        "urb_latency_seconds",
        "histogram",
        "Time from accepting a URB to answering it.",
    );
    for r in reports {
        for p in &r.ports {
            let l = labels(r, p);
            let mut cumulative = 0u64;
            for (i, n) in p
                .snapshot
                .latency
                .iter()
                .enumerate()
                .take(LATENCY_BUCKETS - 1)
            {
                cumulative += n;
                let le = (1u64 << (i + 1)) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "pvusb_urb_latency_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
                );
            }
            let count: u64 = p.snapshot.latency.iter().sum();
            let _ = writeln!(
                out,
                "pvusb_urb_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let sum = p.snapshot.latency_us_sum as f64 / 1e6;
            let _ = writeln!(out, "pvusb_urb_latency_seconds_sum{{{l}}} {sum}");
            let _ = writeln!(out, "pvusb_urb_latency_seconds_count{{{l}}} {count}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port_stats::PortStats;

    fn sample() -> Vec<ControllerReport> {
        let p = PortStats::default();
        p.urb(UrbType::Bulk);
        p.urb(UrbType::Bulk);
        p.transfer();
        p.answered(0, 4096, true, 300);
        vec![ControllerReport {
            domid: 3,
            devid: 0,
            running: true,
            worker_pid: None,
            worker_restarts: 0,
            totals: StatsSnapshot::default(),
            ports: vec![PortReport::new(1, p.snapshot())],
        }]
    }

    #[test]
    fn json_names_types_and_statuses() {
        let v: serde_json::Value = serde_json::from_str(&to_json(&sample())).unwrap();
        let port = &v["controllers"][0]["ports"][0];
        assert_eq!(port["urbs"]["bulk"], 2);
        assert_eq!(port["completions"]["ok"], 1);
        assert_eq!(port["in_flight"], 1);
        assert_eq!(port["latency_p50_us"], 512);
    }

    #[test]
    fn prometheus_text_has_help_type_and_cumulative_buckets() {
        let text = to_prometheus(&sample());
        assert!(text.contains("# TYPE pvusb_urbs_total counter"));
        assert!(
            text.contains("pvusb_urbs_total{domid=\"3\",devid=\"0\",port=\"1\",type=\"bulk\"} 2")
        );
        assert!(text.contains(
            "pvusb_bytes_total{domid=\"3\",devid=\"0\",port=\"1\",direction=\"in\"} 4096"
        ));
        assert!(text.contains("pvusb_urbs_in_flight{domid=\"3\",devid=\"0\",port=\"1\"} 1"));
        assert!(text.contains("le=\"0.000512\"} 1"));
        assert!(
            text.contains("pvusb_urb_latency_seconds_count{domid=\"3\",devid=\"0\",port=\"1\"} 1")
        );
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
