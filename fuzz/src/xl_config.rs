//! Target `xl_config`: the xl domain-config parser of `config-apply`
//! (`pvusb_toolstack::config::parse`: statements, numbers, strings in both
//! quote styles, multi-line lists, comments, the `usbctrl`/`usbdev` entries)
//! and the device names of the command line (`DeviceSpec::parse`).
//!
//! Input layout: the whole input is the config text (invalid UTF-8 replaced).
//! Oracles: no panic; an accepted config, rendered back to xl syntax, parses to
//! the same value; a refused one is a `Config` error naming a line of the text;
//! a device name that parses re-renders to a name that parses the same.

use pvusb_toolstack::attach::DeviceSpec;
use pvusb_toolstack::config::{parse, UsbConfig};
use pvusb_toolstack::error::ToolError;

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse("fuzz.cfg", &text) {
        Ok(cfg) => {
            if let Some(rendered) = render(&cfg) {
                let again = parse("rendered.cfg", &rendered)
                    .unwrap_or_else(|e| panic!("rendered config {rendered:?} refused: {e}"));
                assert_eq!(again, cfg, "rendered as {rendered:?}");
            }
        }
        Err(ToolError::Config { file, line, .. }) => {
            let lines = text.matches('\n').count() + 1;
            assert_eq!(file, "fuzz.cfg");
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
        }
        Err(e) => panic!("parse failed with a non-config error: {e}"),
    }
    if text.len() <= 64 {
        device_name(&text);
    }
}

fn device_name(s: &str) {
    let Ok(spec) = DeviceSpec::parse(s) else {
        return;
    };
    let name = match &spec {
        DeviceSpec::BusAddr(b, a) => format!("{b}.{a}"),
        DeviceSpec::BusId(id) => id.clone(),
    };
    let again = DeviceSpec::parse(&name).unwrap_or_else(|e| panic!("{name:?} refused: {e}"));
    assert_eq!(again, spec, "{s:?} renders as {name:?}");
}

/// The config in xl syntax (`None` for a device the syntax cannot name).
fn render(cfg: &UsbConfig) -> Option<String> {
    let ctrls: Vec<String> = cfg
        .controllers
        .iter()
        .map(|c| format!("'version={},ports={}'", c.version, c.ports))
        .collect();
    let mut devs = Vec::new();
    for d in &cfg.devices {
        let DeviceSpec::BusAddr(bus, addr) = &d.device else {
            return None;
        };
        let mut s = format!("\"hostbus={bus}, hostaddr={addr}");
        if let Some(c) = d.controller {
            s += &format!(",controller={c}");
        }
        if let Some(p) = d.port {
            s += &format!(",port={p}");
        }
        s.push('"');
        devs.push(s);
    }
    let mut out = String::from("name = \"rendered\"\n");
    if !ctrls.is_empty() {
        out += &format!("usbctrl = [ {}, ]\n", ctrls.join(",\n  "));
    }
    if !devs.is_empty() {
        out += &format!("usbdev = [\n  {}\n] # devices\n", devs.join(",\n  "));
    }
    Some(out)
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    [
        "name = \"guest\"\nmemory = 1024\nusbctrl = [ 'version=2,ports=8', \"version=1, ports=4\" ]\n\
         usbdev = [ 'hostbus=1,hostaddr=6,controller=0,port=1', \"devtype=hostdev,hostbus=2,hostaddr=3\" ]\n",
        "# comment\nusbctrl = [\n  'type=qusb,version=3,ports=15', # trailing\n  'backend=0',\n]\nvcpus = 2; maxmem = 2048\n",
        "usbdev = [ 'hostbus=1,hostaddr=6,backend=dom0' ]\nusbdev = [ 'hostbus=3,hostaddr=4,port=2' ]\n",
        "disk = [ 'format=raw, vdev=xvda, access=rw, target=/x' ]\nextra = \"a \\\" b\"\n",
        "usbctrl = [ 'speed=9' ]",
        "usbdev = [ 'hostbus=1' ]",
        "usbctrl = 'version=2'\n",
        "usbctrl = [ 'version=2\n",
        "2-1.6",
        "1.6",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(2000, 300);

    #[test]
    fn first_seed_parses() {
        let cfg = super::parse("s.cfg", std::str::from_utf8(&super::seeds()[0]).unwrap()).unwrap();
        assert_eq!((cfg.controllers.len(), cfg.devices.len()), (2, 2));
    }
}
