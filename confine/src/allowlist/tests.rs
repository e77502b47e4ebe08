//! The filter run by a small classic-BPF interpreter (the instructions
//! seccompiler and [`join`] emit), so each verdict is checked without a kernel.

use super::*;
use crate::syscall_names;

/// `struct seccomp_data` as the filter sees it.
struct Call {
    nr: i64,
    arch: u32,
    args: [u64; 6],
}

fn call(nr: i64, args: &[u64]) -> Call {
    let mut a = [0; 6];
    a[..args.len()].copy_from_slice(args);
    let arch = match std::env::consts::ARCH {
        "x86_64" => 0xc000_003e,
        _ => 0xc000_00b7,
    };
    Call { nr, arch, args: a }
}

fn load(c: &Call, offset: u32) -> u32 {
    match offset {
        0 => c.nr as u32,
        4 => c.arch,
        16..=63 => {
            let arg = c.args[(offset as usize - 16) / 8];
            if (offset - 16) % 8 == 4 {
                (arg >> 32) as u32
            } else {
                arg as u32
            }
        }
        _ => panic!("load from offset {offset}"),
    }
}

fn run(program: &[sock_filter], c: &Call) -> u32 {
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let ins = &program[pc];
        pc += 1;
        let jump = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
        match ins.code {
            0x20 => a = load(c, ins.k),         // ld [k]
            0x54 => a &= ins.k,                 // and #k
            BPF_JMP_JA => pc += ins.k as usize, // ja
            0x15 => pc += jump(a == ins.k),     // jeq #k
            0x25 => pc += jump(a > ins.k),      // jgt #k
            0x35 => pc += jump(a >= ins.k),     // jge #k
            0x45 => pc += jump(a & ins.k != 0), // jset #k
            BPF_RET_K => return ins.k,          // ret #k
            code => panic!("unexpected instruction {code:#x} at {}", pc - 1),
        }
    }
}

fn verdict(c: &Call) -> u32 {
    run(&filter().unwrap(), c)
}

const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

#[test]
fn plain_calls_are_allowed_and_unlisted_ones_kill() {
    assert_eq!(verdict(&call(libc::SYS_read, &[])), ALLOW);
    assert_eq!(verdict(&call(libc::SYS_ioctl, &[3, 0xdead_beef])), ALLOW);
    assert_eq!(verdict(&call(libc::SYS_ptrace, &[])), KILL);
    assert_eq!(verdict(&call(libc::SYS_execve, &[])), KILL);
    assert_eq!(verdict(&call(libc::SYS_mount, &[])), KILL);
    assert_eq!(verdict(&call(libc::SYS_kill, &[1, 9])), KILL);
}

#[test]
fn paths_get_eacces_and_clone3_enosys() {
    assert_eq!(verdict(&call(libc::SYS_openat, &[])), errno(libc::EACCES));
    assert_eq!(
        verdict(&call(libc::SYS_readlinkat, &[])),
        errno(libc::EACCES)
    );
    assert_eq!(verdict(&call(libc::SYS_clone3, &[])), errno(libc::ENOSYS));
}

#[test]
fn argument_conditions_decide() {
    let (unix, inet) = (libc::AF_UNIX as u64, libc::AF_INET as u64);
    assert_eq!(verdict(&call(libc::SYS_socket, &[unix, 1])), ALLOW);
    assert_eq!(verdict(&call(libc::SYS_socket, &[inet, 1])), KILL);
    assert_eq!(verdict(&call(libc::SYS_socketpair, &[unix, 1])), ALLOW);
    assert_eq!(verdict(&call(libc::SYS_socketpair, &[inet, 1])), KILL);
    // glibc's pthread_create flags; a fork is SIGCHLD alone.
    let thread = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    assert_eq!(verdict(&call(libc::SYS_clone, &[thread])), ALLOW);
    assert_eq!(
        verdict(&call(libc::SYS_clone, &[libc::SIGCHLD as u64])),
        KILL
    );
    let name = libc::PR_SET_NAME as u64;
    assert_eq!(verdict(&call(libc::SYS_prctl, &[name])), ALLOW);
    let dumpable = libc::PR_SET_DUMPABLE as u64;
    assert_eq!(verdict(&call(libc::SYS_prctl, &[dumpable, 1])), KILL);
    let me = u64::from(std::process::id());
    assert_eq!(verdict(&call(libc::SYS_tgkill, &[me, me, 6])), ALLOW);
    assert_eq!(verdict(&call(libc::SYS_tgkill, &[me + 1, me + 1, 9])), KILL);
}

#[test]
fn another_abi_is_killed() {
    let mut other_arch = call(libc::SYS_read, &[]);
    other_arch.arch = 0x4000_0003; // i386
    assert_eq!(verdict(&other_arch), KILL);
    // x32 numbers carry bit 30 under the x86_64 arch value.
    assert_eq!(verdict(&call(libc::SYS_read | 0x4000_0000, &[])), KILL);
    assert_eq!(verdict(&call(libc::SYS_openat | 0x4000_0000, &[])), KILL);
}

#[test]
fn the_program_is_well_formed() {
    let program = filter().unwrap();
    assert!(program.len() <= BPF_MAXINSNS);
    let undecided = u32::from(UNDECIDED);
    for (pc, ins) in program.iter().enumerate() {
        assert!(
            !(ins.code == BPF_RET_K && ins.k == undecided),
            "undecided return left at {pc}"
        );
        let targets = match ins.code {
            BPF_JMP_JA => vec![ins.k as usize],
            0x15 | 0x25 | 0x35 | 0x45 => vec![ins.jt.into(), ins.jf.into()],
            _ => vec![],
        };
        for t in targets {
            assert!(
                pc + 1 + t < program.len(),
                "jump out of the program at {pc}"
            );
        }
    }
    assert_eq!(program.last().map(|i| i.code), Some(BPF_RET_K));
}

#[test]
fn every_entry_is_named_justified_and_listed_once() {
    let mut seen = std::collections::BTreeSet::new();
    for e in entries() {
        assert!(seen.insert(e.nr), "{} listed twice", e.name());
        assert!(!e.why.is_empty(), "{} has no reason", e.name());
        assert_eq!(
            syscall_names::name(std::env::consts::ARCH, e.nr),
            Some(e.name()),
            "the names table disagrees with libc on {}",
            e.nr
        );
    }
    assert_eq!(
        allowed_count(),
        entries()
            .iter()
            .filter(|e| !matches!(e.rule, Errno(_)))
            .count()
    );
}
