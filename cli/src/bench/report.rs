//! The result of one `pvusb bench`: serialised as one JSON object, or printed
//! as a table.

use serde::Serialize;

use super::stats::{Plan, Summary};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Unit of median/min/max.
    pub unit: &'static str,
    /// The runs' summary.
    #[serde(flatten)]
    pub value: Summary,
    /// Frontend (bench process) CPU seconds per GB moved, over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_cpu_s_per_gb: Option<f64>,
    /// Backend process CPU seconds per GB moved, over the runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_cpu_s_per_gb: Option<f64>,
}

/// A ratio against a reference, with its target.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What is divided by what.
    pub name: String,
    /// The ratio of the medians.
    pub value: f64,
    /// The target from issue 7; `None` for a ratio reported as context.
    pub target: Option<f64>,
    /// `value >= target`; `None` without a target.
    pub met: Option<bool>,
}

/// Everything one run of the bench found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `simulated` (emulated loopback) or `device BUS.ADDR`.
    pub transport: String,
    /// Runs per figure after the warm-up.
    pub runs_per_figure: usize,
    /// Seconds per run.
    pub run_seconds: f64,
    /// CPUs the machine offers.
    pub cpus: usize,
    /// The pvusb figures.
    pub pvusb: Vec<Row>,
    /// The references measured in the same run.
    pub reference: Vec<Row>,
    /// The ratios the targets are set on.
    pub ratios: Vec<Ratio>,
}

impl Ratio {
    /// `value` against `target`; `met` is derived here so it cannot disagree.
    pub fn new(name: impl Into<String>, value: f64, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            target: Some(target),
            met: Some(value >= target),
        }
    }

    /// A ratio without a target, reported to explain another one.
    pub fn context(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
            target: None,
            met: None,
        }
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// A report of figures measured with `plan` on this machine (the run
    /// settings and the CPU count are recorded with them, so figures from
    /// different runs can be compared).
    pub fn new(
        transport: String,
        plan: &Plan,
        pvusb: Vec<Row>,
        reference: Vec<Row>,
        ratios: Vec<Ratio>,
    ) -> Self {
        Self {
            transport,
            runs_per_figure: plan.runs,
            run_seconds: plan.run.as_secs_f64(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            pvusb,
            reference,
            ratios,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "pvusb bench: {} ({} runs of {:.2} s per figure, median [min .. max], {} CPUs)\n\n",
            self.transport, self.runs_per_figure, self.run_seconds, self.cpus
        );
        let cpu = |v: Option<f64>| v.map(fmt).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<44} {:>10} {:>23} {:>8} {:>8}\n",
            "figure", "median", "[min .. max]", "front", "back"
        );
        s += &format!(
            "{:<44} {:>10} {:>23} {:>8} {:>8}\n",
            "", "", "", "CPU s/GB", "CPU s/GB"
        );
        for (title, rows) in [("pvusb", &self.pvusb), ("reference", &self.reference)] {
            s += &format!("-- {title}\n");
            for r in rows.iter() {
                let range = format!("[{} .. {}]", fmt(r.value.min), fmt(r.value.max));
                s += &format!(
                    "{:<44} {:>10} {:>23} {:>8} {:>8}\n",
                    format!("{} ({})", r.name, r.unit),
                    fmt(r.value.median),
                    range,
                    cpu(r.front_cpu_s_per_gb),
                    cpu(r.back_cpu_s_per_gb)
                );
            }
        }
        s += "-- ratios\n";
        for r in &self.ratios {
            let verdict = match (r.target, r.met) {
                (Some(t), Some(true)) => format!("(target >= {t}: met)"),
                (Some(t), _) => format!("(target >= {t}: NOT met)"),
                _ => "(no target)".to_string(),
            };
            s += &format!("{:<60} {:>8} {verdict}\n", r.name, fmt(r.value));
        }
        s
    }
}
