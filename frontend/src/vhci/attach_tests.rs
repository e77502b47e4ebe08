//! [`super::attach`] against a plain directory holding `status` texts as
//! `status_show` and `port_show_vhci` print them.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use pvusb_protocol::Speed;

use super::attach::*;

/// Controller 0 of a kernel with 4 ports per hub: hs port 0 in use by a
/// high-speed device (sockfd 3), port 1 initializing, the rest free.
const STATUS0: &str = "hub port sta spd dev      sockfd local_busid
hs  0000 006 003 00010002 000003 3-1
hs  0001 005 000 00000000 000000 0-0
hs  0002 004 000 00000000 000000 0-0
hs  0003 004 000 00000000 000000 0-0
ss  0004 004 000 00000000 000000 0-0
ss  0005 004 000 00000000 000000 0-0
ss  0006 004 000 00000000 000000 0-0
ss  0007 004 000 00000000 000000 0-0
";

/// Controller 1: its hs ports all taken.
const STATUS1: &str = "hub port sta spd dev      sockfd local_busid
hs  0008 006 002 00010003 000004 4-1
hs  0009 006 002 00010004 000005 4-2
hs  0010 006 002 00010005 000006 4-3
hs  0011 006 002 00010006 000007 4-4
ss  0012 004 000 00000000 000000 0-0
ss  0013 004 000 00000000 000000 0-0
ss  0014 004 000 00000000 000000 0-0
ss  0015 004 000 00000000 000000 0-0
";

fn fake(dir: &Path, status: &[&str]) -> VhciHcd {
    for (n, text) in status.iter().enumerate() {
        let name = match n {
            0 => "status".to_owned(),
            n => format!("status.{n}"),
        };
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(dir.join("attach"), "").unwrap();
    std::fs::write(dir.join("detach"), "").unwrap();
    VhciHcd::at(dir).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn status_lines_parse_as_the_kernel_prints_them() {
    let ports = parse_status(STATUS0).unwrap();
    assert_eq!(ports.len(), 8);
    assert_eq!(
        ports[0],
        PortLine {
            hub: Hub::High,
            port: 0,
            status: 6
        }
    );
    assert_eq!(
        (ports[7].hub, ports[7].port, ports[7].status),
        (Hub::Super, 7, VDEV_ST_NULL)
    );
    // status_show_not_ready's 16-digit sockfd column.
    let not_ready = "hub port sta spd dev      sockfd local_busid\n\
                     hs  0000 005 000 00000000 0000000000000000 0-0\n";
    assert_eq!(parse_status(not_ready).unwrap()[0].status, 5);
    assert!(parse_status("port sta spd dev socket local_busid\n").is_err());
    assert_eq!(
        parse_status("hub port sta\nxx 0000 004\n").unwrap_err(),
        "xx 0000 004"
    );
}

#[test]
fn not_loaded_is_one_line_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let e = VhciHcd::at(dir.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "vhci-hcd is not loaded: run `modprobe vhci-hcd`"
    );
}

#[test]
fn attach_takes_the_first_free_port_of_the_speeds_hub() {
    let dir = tempfile::tempdir().unwrap();
    let vhci = fake(dir.path(), &[STATUS0]);
    let (sock, _peer) = UnixStream::pair().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let speed = VhciSpeed::of(Speed::High).unwrap();
    let port = vhci.attach(sock.as_fd(), devid(0, 2), speed).unwrap();
    assert_eq!(port, 2, "0 is used, 1 initializing");
    assert_eq!(read(dir.path(), "attach"), format!("2 {fd} 65538 3"));
    let port = vhci.attach(sock.as_fd(), 7, VhciSpeed::Super).unwrap();
    assert_eq!(port, 4);
    assert_eq!(read(dir.path(), "attach"), format!("4 {fd} 7 5"));
    vhci.detach(2).unwrap();
    assert_eq!(read(dir.path(), "detach"), "2");
    assert_eq!(VhciSpeed::of(Speed::Low), Some(VhciSpeed::Low));
    assert_eq!(VhciSpeed::of(Speed::Full).map(|s| s as u32), Some(2));
    assert_eq!(VhciSpeed::of(Speed::None), None);
}

/// `text` with `ports` marked used.
fn taken(text: &str, ports: &[&str]) -> String {
    ports.iter().fold(text.to_owned(), |t, p| {
        t.replace(&format!("{p} 004"), &format!("{p} 006"))
    })
}

#[test]
fn every_controller_is_searched_and_a_full_hub_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    // Controller 0 with its free hs ports taken too; controller 1's are.
    let hs_full = taken(STATUS0, &["hs  0002", "hs  0003"]);
    let vhci = fake(dir.path(), &[&hs_full, STATUS1]);
    assert_eq!(vhci.ports().unwrap().len(), 16);
    let e = vhci.attach(sock.as_fd(), 1, VhciSpeed::Full).unwrap_err();
    assert!(matches!(e, AttachError::NoFreePort), "{e}");
    assert_eq!(vhci.attach(sock.as_fd(), 1, VhciSpeed::Super).unwrap(), 4);
    // Controller 0's ss ports taken: controller 1's first ss port.
    let ss_full = taken(STATUS0, &["ss  0004", "ss  0005", "ss  0006", "ss  0007"]);
    let vhci = fake(dir.path(), &[&ss_full, STATUS1]);
    assert_eq!(vhci.attach(sock.as_fd(), 1, VhciSpeed::Super).unwrap(), 12);
}
