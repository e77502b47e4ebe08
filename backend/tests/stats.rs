//! Live statistics end to end: a guest's URBs through the daemon show per
//! port in the control socket's report and in the Prometheus text.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use pvusb_backend::control::{serve_control, serve_metrics, MetricsAddr};
use pvusb_testkit::{Controller, Driver, World};

fn ask(path: &std::path::Path, req: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect");
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn a_guests_urbs_show_per_port_in_the_report_and_the_metrics() {
    let w = World::new();
    let busid = w.plug_loopback(4096);
    let d = w.daemon();
    w.controller(&Controller::new(5, 0, 2, 2));
    w.set_port(5, 0, 2, &busid.to_string());
    let mut drv = Driver::connect(&w, 5, 0);
    assert_eq!(drv.conn_event().portnum, 2);
    drv.enumerate(2, 7);
    for i in 0..3u16 {
        let r = drv.roundtrip(drv.bulk(i, 7, 2, 0x01, 512));
        assert_eq!(r.status, 0, "bulk OUT");
        let r = drv.roundtrip(drv.bulk(i, 7, 2, 0x81, 512));
        assert_eq!(r.status, 0, "bulk IN");
    }
    let control = w.dir().join("control.sock");
    let _c = serve_control(&control, d.reporter()).expect("control socket");
    let v: serde_json::Value = serde_json::from_str(&ask(&control, "stats 5\n")).expect("json");
    let ctl = &v["controllers"][0];
    assert_eq!(
        (ctl["domid"].as_u64(), ctl["devid"].as_u64()),
        (Some(5), Some(0))
    );
    let ports = ctl["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "only the used port: {ports:?}");
    let p = &ports[0];
    assert_eq!(p["port"], 2);
    assert_eq!(p["urbs"]["bulk"], 6);
    // Enumeration: GET_DESCRIPTOR twice and SET_CONFIGURATION reach the
    // device (SET_ADDRESS is answered by the backend's address model).
    assert_eq!(p["urbs"]["control"], 3);
    assert_eq!(p["bytes_out"], 3 * 512);
    assert_eq!(p["bytes_in"].as_u64().map(|b| b >= 512), Some(true));
    assert_eq!(p["completions"]["ok"], 9);
    assert_eq!(p["in_flight"], 0);
    assert!(p["latency_p99_us"].as_u64().is_some());
    let none: serde_json::Value = serde_json::from_str(&ask(&control, "stats 6\n")).expect("json");
    assert_eq!(none["controllers"].as_array().map(Vec::len), Some(0));

    let metrics = w.dir().join("metrics.sock");
    let addr = MetricsAddr::parse(&format!("unix:{}", metrics.display())).expect("addr");
    let _m = serve_metrics(&addr, d.reporter()).expect("metrics");
    let text = ask(&metrics, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(
        text.contains("pvusb_urbs_total{domid=\"5\",devid=\"0\",port=\"2\",type=\"bulk\"} 6"),
        "{text}"
    );
    d.shutdown();
}
