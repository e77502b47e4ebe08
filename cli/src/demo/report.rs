//! How the demo prints: one heading per stage, short indented lines under it,
//! sizes in MiB and rates in MB/s (10^6 bytes per second, as `dd` prints).

use super::wire::DeviceSummary;

/// A stage heading.
pub fn heading(title: &str) {
    println!("\n== {title}");
}

/// An indented line under a heading.
pub fn line(text: impl AsRef<str>) {
    println!("   {}", text.as_ref());
}

/// `bytes` in MiB, one decimal.
pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// A transfer rate in MB/s.
pub fn rate(bytes: usize, secs: f64) -> String {
    if secs <= 0.0 {
        return "- MB/s".into();
    }
    format!("{:.1} MB/s", bytes as f64 / secs / 1e6)
}

/// The first and last hex digits of a digest, enough to compare by eye.
pub fn short_hash(hex: &str) -> String {
    match (hex.get(..12), hex.get(hex.len().saturating_sub(4)..)) {
        (Some(a), Some(b)) if hex.len() > 16 => format!("{a}…{b}"),
        _ => hex.to_owned(),
    }
}

/// One device as `lsusb` shows it, with the guest's view of its interfaces.
pub fn device_line(d: &DeviceSummary, busid: &str) -> Vec<String> {
    let name = [d.manufacturer.as_deref(), d.product_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        format!(
            "Port {}: Dev {:>3}, {:>4}M  ID {:04x}:{:04x} {name}  (host busid {busid})",
            d.port, d.address, d.speed, d.vendor, d.product
        ),
        format!(
            "        interfaces {}; endpoints {}",
            d.interfaces.join(", "),
            d.endpoints.join(", ")
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(mib(4 << 20), "4.0 MiB");
        assert_eq!(rate(2_000_000, 0.5), "4.0 MB/s");
        assert_eq!(rate(1, 0.0), "- MB/s");
        assert_eq!(short_hash("0123456789abcdef0123"), "0123456789ab…0123");
        assert_eq!(short_hash("abcd"), "abcd");
    }
}
